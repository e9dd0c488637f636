"""Attention on one large graph: a layer against PyG TransformerConv from E = 1M to 10M, and the
cost of graph structure (k-hop pairs, hop buckets, positional encodings) on a 1M-node social graph.

Usage: python benchmarks/graph_scale.py [--layer] [--structure] [--edges 1000000,2000000,5000000,10000000]
                                        [--threads 1,2] [--repeats 3] [--memory-cap-gb 8]

--layer: one layer, forward + backward, 64 channels, 4 heads, N = E / 10 nodes and E random edges
(as benchmarks/attention.py): ``GraphMultiheadAttention(backend="edges")`` against
``torch_geometric.nn.TransformerConv(64, 16, heads=4, root_weight=False)``. Every configuration
runs in a fresh process (median of --repeats after a warm-up; fewer at 10M edges, where one step
takes a minute); peak memory is that process's peak RSS growth. A configuration whose memory,
extrapolated linearly in E from the previous size, would pass --memory-cap-gb is not run and
reported as not fitting, so no run ends in an out-of-memory kill. Exponents k of time and memory
~ E^k are fitted over the sizes run.

--train: one epoch of NeighborLoader training around 10,000 seed nodes and layer-wise inference
on the whole graph, at 100k and 1M nodes (``graph`` and ``graph|expander:4:0|virtual:1``): peak
memory beside the memory of the graph itself.

--structure: the time and memory of ``social_graph(1_000_000)`` (avg_degree 20: about 20M edges);
then on ``social_graph(1_000_000, avg_degree=10, max_degree=100)`` (about 10M edges),
each in its own process: ``GraphStructure("khop:2", max_distance=2)`` (pairs and buckets from one
breadth-first expansion), ``GraphStructure("graph|expander:4:0")``, ``LaplacianPE(8)``,
``RandomWalkPE(16)`` (exact: refused with the work it needs) and ``RandomWalkPE(16, method="sampled", num_walks=64)``;
and ``khop:2`` on the default 1M-node graph (avg_degree 20, max_degree 2000), refused with the
pairs and memory it would need.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time


def peak_mib(base: int) -> float:
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024


def run_layer(impl: str, num_edges: int, threads: int, repeats: int) -> dict:
    import torch

    from graphattn import GraphMultiheadAttention
    from graphattn.utils.bench import median_seconds

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    num_nodes, dim, heads = num_edges // 10, 64, 4
    x = torch.randn(num_nodes, dim, requires_grad=True)
    edge_index = torch.randint(0, num_nodes, (2, num_edges))
    if impl == "graphattn":
        layer = GraphMultiheadAttention(dim, heads, backend="edges")
    else:
        from torch_geometric.nn import TransformerConv

        layer = TransformerConv(dim, dim // heads, heads=heads, root_weight=False)

    def step():
        layer(x, edge_index).square().mean().backward()

    seconds = median_seconds(step, repeats)
    return {"seconds": seconds, "peak_mib": peak_mib(base)}


def run_structure(name: str) -> dict:
    import torch

    from graphattn.graphs.social import social_graph
    from graphattn.transforms import GraphStructure, LaplacianPE
    from graphattn.transforms.positional import RandomWalkPE

    torch.set_num_threads(1)
    if name == "generate":  # the default 1M-node graph itself
        base, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
        data = social_graph(1_000_000, seed=0)
        return {"nodes": data.num_nodes, "edges": data.edge_index.size(1), "seconds": time.perf_counter() - start,
                "peak_mib": peak_mib(base)}
    big = name == "khop:2 default graph"
    data = social_graph(1_000_000, avg_degree=20 if big else 10, max_degree=2000 if big else 100, seed=0)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    transform = {
        "khop:2": lambda: GraphStructure("khop:2", max_distance=2, edge_ids=False),
        "graph|expander:4:0": lambda: GraphStructure("graph|expander:4:0", max_distance=8, edge_ids=False),
        "laplacian:8": lambda: LaplacianPE(8),
        "random_walk:16 exact": lambda: RandomWalkPE(16),
        "random_walk:16 sampled": lambda: RandomWalkPE(16, method="sampled", num_walks=64),
        "khop:2 default graph": lambda: GraphStructure("khop:2", max_distance=2, edge_ids=False, max_pairs=400_000_000),
    }[name]()
    start = time.perf_counter()
    out = {"nodes": data.num_nodes, "edges": data.edge_index.size(1)}
    try:
        data = transform(data)
    except ValueError as error:
        return {**out, "seconds": time.perf_counter() - start, "peak_mib": peak_mib(base), "refused": str(error)}
    out.update(seconds=time.perf_counter() - start, peak_mib=peak_mib(base))
    if "pair_index" in data:
        out["pairs"] = data.pair_index.size(1)
        out["bucket_counts"] = torch.bincount(data.pair_bucket.long()).tolist()
    return out


def run_training(num_nodes: int, pattern: str) -> dict:
    """One epoch on NeighborLoader subgraphs around 10,000 seed nodes, then layer-wise inference on
    the whole graph: time and peak memory, to show what grows with the graph."""
    import torch

    from graphattn.graphs import fit_nodes, social_graph
    from graphattn.nn import GraphTransformer

    torch.set_num_threads(1)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data = social_graph(num_nodes, split=(10_000 / num_nodes, 0.0, 1 - 10_000 / num_nodes), seed=0)
    graph_mib = peak_mib(base)
    data.val_mask = data.test_mask  # score the whole remaining graph
    torch.manual_seed(0)
    model = GraphTransformer(32, 64, 10, 2, 4, pattern=pattern, max_distance=2, normalization="softmax",
                             dropout=0.0, max_degree=None)  # as measured
    result = fit_nodes(model, data, [10, 5], epochs=1, lr=3e-3, batch_size=512)
    return {"nodes": num_nodes, "edges": data.edge_index.size(1), "graph_mib": graph_mib,
            "epoch_seconds": result["epoch_seconds"], "inference_seconds": result["eval_seconds"],
            "seconds": result["epoch_seconds"] + result["eval_seconds"], "peak_mib": peak_mib(base),
            "test": result["test"]}


def measure(args: list) -> dict:
    cmd = [sys.executable, __file__, "--one", json.dumps(args)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"seconds": math.nan, "peak_mib": math.nan, "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def slope(xs, ys) -> float:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if y and y > 0 and not math.isnan(y)]
    if len(pts) < 2:
        return math.nan
    mx, my = sum(a for a, _ in pts) / len(pts), sum(b for _, b in pts) / len(pts)
    return sum((a - mx) * (b - my) for a, b in pts) / sum((a - mx) ** 2 for a, _ in pts)


def layer_table(edges: list, threads: list, repeats: int, cap_mib: float) -> None:
    print("| E | N | threads | graphattn (s) | TransformerConv (s) | time ratio | graphattn peak (MiB) | "
          "TransformerConv peak (MiB) | memory ratio |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in threads:
        rows = {"graphattn": {}, "pyg": {}}
        for e in edges:
            for impl in ("graphattn", "pyg"):
                done = {k: v for k, v in rows[impl].items() if not math.isnan(v.get("peak_mib", math.nan))}
                if done:
                    last = max(done)
                    predicted = done[last]["peak_mib"] * e / last
                    if predicted > cap_mib:
                        rows[impl][e] = {"seconds": math.nan, "peak_mib": math.nan,
                                         "error": f"cannot fit: about {predicted / 1024:.1f} GiB > cap {cap_mib / 1024:.0f} GiB"}
                        continue
                reps = repeats if e < 5_000_000 else 1
                rows[impl][e] = measure(["layer", impl, e, t, reps])
            ours, theirs = rows["graphattn"][e], rows["pyg"][e]
            fits = "error" not in theirs

            def cell(r, key, fmt):
                return fmt.format(r[key]) if "error" not in r else "-"

            ratio_t = f"{ours['seconds'] / theirs['seconds']:.2f}" if fits else theirs["error"]
            ratio_m = f"{ours['peak_mib'] / theirs['peak_mib']:.2f}" if fits else ""
            print(f"| {e:,} | {e // 10:,} | {t} | {cell(ours, 'seconds', '{:.2f}')} | {cell(theirs, 'seconds', '{:.2f}')} | "
                  f"{ratio_t} | {cell(ours, 'peak_mib', '{:.0f}')} | {cell(theirs, 'peak_mib', '{:.0f}')} | {ratio_m} |",
                  flush=True)
        for impl, label in (("graphattn", "graphattn"), ("pyg", "TransformerConv")):
            ok = [e for e in edges if "error" not in rows[impl][e]]
            if len(ok) >= 2:
                print(f"\n{label}, {t} thread(s), E = {ok[0]:,} ... {ok[-1]:,}: time ~ E^"
                      f"{slope(ok, [rows[impl][e]['seconds'] for e in ok]):.2f}, memory ~ E^"
                      f"{slope(ok, [rows[impl][e]['peak_mib'] for e in ok]):.2f}", flush=True)
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", action="store_true")
    parser.add_argument("--structure", action="store_true")
    parser.add_argument("--train", action="store_true", help="one sampled epoch and full-graph inference at 100k and 1M nodes")
    parser.add_argument("--edges", default="1000000,2000000,5000000,10000000")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-cap-gb", type=float, default=8.0)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        spec = json.loads(args.one)
        if spec[0] == "layer":
            out = run_layer(*spec[1:])
        elif spec[0] == "train":
            out = run_training(*spec[1:])
        else:
            out = run_structure(spec[1])
        print(json.dumps(out))
        return
    if not (args.layer or args.structure or args.train):
        args.layer = args.structure = args.train = True
    if args.layer:
        layer_table([int(float(e)) for e in args.edges.split(",")], [int(t) for t in args.threads.split(",")],
                    args.repeats, args.memory_cap_gb * 1024)
    if args.structure:
        print("| structure on a 1M-node social graph (1 thread) | edges | pairs | seconds | peak (MiB) | notes |")
        print("|---|---:|---:|---:|---:|---|")
        for name in ("generate", "khop:2", "graph|expander:4:0", "laplacian:8", "random_walk:16 exact", "random_walk:16 sampled",
                     "khop:2 default graph"):
            r = measure(["structure", name])
            note = r.get("refused") or r.get("error") or (f"buckets {r['bucket_counts']}" if "bucket_counts" in r else "")
            print(f"| {name} | {r.get('edges', 0):,} | {r.get('pairs', '')} | {r['seconds']:.1f} | "
                  f"{r['peak_mib']:.0f} | {note} |", flush=True)
    if args.train:
        print("\n| pattern | nodes | edges | graph itself (MiB) | epoch, 10k seeds (s) | layer-wise inference (s) | "
              "peak (MiB) | test accuracy |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for pattern in ("graph", "graph|expander:4:0|virtual:1"):
            for n in (100_000, 1_000_000):
                r = measure(["train", n, pattern])
                if "error" in r:
                    print(f"| {pattern} | {n:,} | | | | | | {r['error']} |", flush=True)
                    continue
                print(f"| {pattern.replace('|', chr(92) + '|')} | {n:,} | {r['edges']:,} | {r['graph_mib']:.0f} | "
                      f"{r['epoch_seconds']:.1f} | {r['inference_seconds']:.1f} | {r['peak_mib']:.0f} | "
                      f"{r['test']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
