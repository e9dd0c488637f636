"""Where the edges backend should stop gathering per-edge messages and take the sparse kernels.

Usage: python benchmarks/edges_crossover.py [--quick] [--degree 8 3] [--sizes 2000 4000 ...]
       [--sddmm-edges 64000 1000000]

One thread. Every row is one GraphMultiheadAttention layer (4 heads x 16 channels, projections
included) on a random graph of E edges and E / degree nodes, run by each path of
:func:`graphattn.ops.edge_attention` in the same process: gathering ``[E, H, D]`` messages (PyG's
gather/scatter) and the CSR kernels (SDDMM / softmax / SpMM). Each figure is the fastest of
repeated calls (``fastest_seconds``), the two paths interleaved over rounds so that load from
other processes falls on both; the ratio is sparse / gather (below 1: the sparse path is faster).
``train`` is a forward and backward pass, ``infer`` a forward pass without autograd.

The last lines time the SDDMM alone at ``--sddmm-edges`` edges: head by head (what
``graphattn.ops.edges`` does) against one batched ``torch.sparse.sampled_addmm`` over the heads,
whose CSR indices are copied once per head.

The element threshold ``graphattn.ops.edges.GATHER_AT_MOST`` (edges x heads x channels) comes
from the first table: the largest message count at which gathering still wins a training step.
"""
from __future__ import annotations

import argparse
import warnings

import torch

import graphattn.ops.edges as edges
from graphattn import GraphMultiheadAttention
from graphattn.utils.bench import fastest_seconds

HEADS, CHANNELS = 4, 16


def random_graph(num_edges: int, degree: int, seed: int = 0) -> tuple[int, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    num_nodes = max(2, num_edges // degree)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=gen)
    keys = torch.unique(edge_index[1] * num_nodes + edge_index[0])  # sorted by query, then key; no repeats
    return num_nodes, torch.stack([keys % num_nodes, keys // num_nodes])


def layer_seconds(num_edges: int, degree: int, rounds: int) -> dict:
    num_nodes, edge_index = random_graph(num_edges, degree)
    torch.manual_seed(0)
    layer = GraphMultiheadAttention(HEADS * CHANNELS, HEADS)
    x = torch.randn(num_nodes, HEADS * CHANNELS, requires_grad=True)

    def train():
        layer(x, edge_index).sum().backward()

    def infer():
        with torch.no_grad():
            layer(x, edge_index)

    thresholds = {"gather": 1 << 62, "sparse": -1}
    best = {(path, kind): float("inf") for path in thresholds for kind in ("train", "infer")}
    saved = edges.GATHER_AT_MOST
    try:
        for _ in range(rounds):
            for path, threshold in thresholds.items():
                edges.GATHER_AT_MOST = threshold
                for kind, fn in (("train", train), ("infer", infer)):
                    fn()  # warm-up of this path
                    best[path, kind] = min(best[path, kind], fastest_seconds(fn, repeats=3, min_seconds=0.2))
    finally:
        edges.GATHER_AT_MOST = saved
    return {"edges": edge_index.size(1), "nodes": num_nodes, **{f"{p}_{k}": v for (p, k), v in best.items()}}


def sddmm_seconds(num_edges: int, degree: int, rounds: int) -> dict:
    num_nodes, edge_index = random_graph(num_edges, degree)
    layout = edges.CSRLayout.build(edge_index, num_nodes, num_nodes)
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(num_nodes, HEADS, CHANNELS, generator=gen)
    k = torch.randn(num_nodes, HEADS, CHANNELS, generator=gen)
    expected = edges.edge_scores(*layout, q, k, 1.0)

    def batched():
        # [H, N, N] batched CSR: the indices once per head, the products in one call.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pattern = torch.sparse_csr_tensor(layout.rowptr.expand(HEADS, -1).contiguous(),
                                              layout.col.expand(HEADS, -1).contiguous(),
                                              q.new_zeros(HEADS, layout.col.numel()),
                                              (HEADS, num_nodes, num_nodes))
        out = torch.sparse.sampled_addmm(pattern, q.transpose(0, 1), k.permute(1, 2, 0))
        return out.values().t()

    def by_head():
        return edges.edge_scores(*layout, q, k, 1.0)

    torch.testing.assert_close(batched(), expected, atol=1e-4, rtol=1e-4)
    best = {"by_head": float("inf"), "batched": float("inf")}
    for _ in range(rounds):
        for name, fn in (("by_head", by_head), ("batched", batched)):
            fn()
            best[name] = min(best[name], fastest_seconds(fn, repeats=3, min_seconds=0.5))
    return {"edges": edge_index.size(1), **best}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="E = 2k .. 16k, fewer rounds, SDDMM at 64k edges")
    parser.add_argument("--degree", type=int, nargs="+", default=[8, 3], help="average in-degrees of the graphs")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="edge counts (default 2k .. 64k)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 5, quick 2)")
    parser.add_argument("--sddmm-edges", type=int, nargs="*", default=None, help="(default 64k and 1M)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rounds = args.rounds or (2 if args.quick else 5)
    sizes = args.sizes or [2_000, 4_000, 8_000, 16_000] + ([] if args.quick else [32_000, 64_000])
    sddmm = args.sddmm_edges if args.sddmm_edges is not None else [64_000] + ([] if args.quick else [1_000_000])
    print(f"one thread, {HEADS} heads x {CHANNELS} channels, {rounds} rounds, "
          f"current GATHER_AT_MOST = {edges.GATHER_AT_MOST} elements")
    print("| degree | E | messages (E x H x D) | gather train ms | sparse train ms | sparse / gather train | "
          "gather infer ms | sparse infer ms | sparse / gather infer |")
    print("|---|---|---|---|---|---|---|---|---|")
    for degree in args.degree:
        for size in sizes:
            r = layer_seconds(size, degree, rounds)
            print(f"| {degree} | {r['edges']} | {r['edges'] * HEADS * CHANNELS} | {1e3 * r['gather_train']:.2f} | "
                  f"{1e3 * r['sparse_train']:.2f} | {r['sparse_train'] / r['gather_train']:.2f} | "
                  f"{1e3 * r['gather_infer']:.2f} | {1e3 * r['sparse_infer']:.2f} | "
                  f"{r['sparse_infer'] / r['gather_infer']:.2f} |", flush=True)
    for size in sddmm:
        for degree in args.degree:
            r = sddmm_seconds(size, degree, max(1, rounds // 2))
            print(f"SDDMM alone, degree {degree}, E = {r['edges']}: head by head {1e3 * r['by_head']:.1f} ms, "
                  f"one batched sampled_addmm {1e3 * r['batched']:.1f} ms "
                  f"(batched / by head = {r['batched'] / r['by_head']:.2f})", flush=True)


if __name__ == "__main__":
    main()
