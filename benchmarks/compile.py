"""torch.compile on graphattn: graph breaks per call, and compiled (inductor) against eager time.

Usage: python benchmarks/compile.py [--repeats 5] [--threads 1] [--out docs/compile.md]

For each case: the graph breaks of one call (``torch._dynamo.explain``), whether the compiled
outputs and gradients equal eager ones (max abs difference), and the median time of a forward +
backward step after warm-up, eager and compiled, measured in the same process. One thread by
default, so that runs on different machines compare.
"""
from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
import torch.nn.functional as F
from torch_geometric.data import Batch, Data

from graphattn import GraphMultiheadAttention, GraphTransformer, Transformer
from graphattn import patterns as P
from graphattn.text.model import Seq2Seq
from graphattn.utils.bench import median_seconds
from graphattn.utils.tables import markdown_table


def layer_case(pattern=None, n=10_000, num_edges=100_000, ptr=None, dim=64, heads=4):
    torch.manual_seed(0)
    layer = GraphMultiheadAttention(dim, heads)
    x = torch.randn(n, dim, requires_grad=True)
    edge_index = torch.randint(0, n, (2, num_edges))
    if pattern is None:
        return layer, lambda m: m(x, edge_index)
    return layer, lambda m: m(x, pattern=pattern, ptr=ptr)


def transformer_case():
    torch.manual_seed(0)
    model = Transformer(128, 4, 2, 2, 256, dropout=0.0, encoder_pattern="window:16", decoder_pattern="causal&window:16")
    src, tgt = torch.randn(8, 256, 128), torch.randn(8, 128, 128)
    return model, lambda m: m(src, tgt)


def seq2seq_case():
    torch.manual_seed(0)
    model = Seq2Seq(1000, 1000, d_model=128, num_heads=4, num_encoder_layers=3, num_decoder_layers=3, dropout=0.0)
    lengths_src, lengths_tgt = torch.randint(8, 40, (64,)), torch.randint(8, 40, (64,))
    src, tgt = torch.randint(3, 1000, (int(lengths_src.sum()),)), torch.randint(3, 1000, (int(lengths_tgt.sum()),))
    ptr_src = torch.cat([torch.zeros(1, dtype=torch.long), lengths_src.cumsum(0)])
    ptr_tgt = torch.cat([torch.zeros(1, dtype=torch.long), lengths_tgt.cumsum(0)])
    return model, lambda m: F.nll_loss(m.forward_flat(src, ptr_src, tgt, ptr_tgt), tgt)


def graph_transformer_case(pattern, local_mpnn=False):
    torch.manual_seed(0)
    model = GraphTransformer(16, 64, 1, num_layers=4, num_heads=4, edge_dim=4, pattern=pattern, local_mpnn=local_mpnn,
                             task="graph", normalization="softmax", pe=None)  # as docs/compile.md measured
    graphs = []
    for _ in range(32):  # molecule-sized graphs
        n = int(torch.randint(8, 30, ()))
        ring = torch.stack([torch.arange(n), (torch.arange(n) + 1) % n])
        ei = torch.cat([ring, ring.flip(0)], 1)
        graphs.append(model.transform(Data(x=torch.randn(n, 16), edge_index=ei, edge_attr=torch.randn(ei.size(1), 4))))
    batch = Batch.from_data_list(graphs)
    return model, lambda m: m(batch)


CASES = {
    "layer, edges (N=10k, E=100k)": lambda: layer_case(),
    "layer, dense (B=16, n=128)": lambda: layer_case(P.dense(), n=2048, ptr=torch.arange(17) * 128),
    "layer, dense ragged (16 lengths 64-192)": lambda: layer_case(P.dense(), n=2048, ptr=torch.tensor(
        [0, 64, 256, 320, 512, 576, 768, 832, 1024, 1088, 1280, 1344, 1536, 1600, 1792, 1856, 2048])),
    "layer, window:64 (n=8192)": lambda: layer_case(P.window(64), n=8192),
    "layer, causal&window:64 ragged": lambda: layer_case(P.causal() & P.window(64), n=8192,
                                                         ptr=torch.tensor([0, 1000, 5000, 8192])),
    "Transformer, window:16 (B=8, 256/128)": transformer_case,
    "Seq2Seq loss (64 pairs)": seq2seq_case,
    "GraphTransformer graph (32 molecules)": lambda: graph_transformer_case("graph"),
    "GraphTransformer khop:2": lambda: graph_transformer_case("khop:2"),
    "GraphTransformer GPS (dense + GINE)": lambda: graph_transformer_case("dense", local_mpnn=True),
}


def step_of(model, call):
    def step():
        model.zero_grad(set_to_none=True)
        out = call(model)
        out.square().mean().backward() if out.dim() else out.backward()
        return out.detach()
    return step


def measure(name: str, repeats: int) -> dict:
    torch._dynamo.reset()
    model, call = CASES[name]()
    explanation = torch._dynamo.explain(lambda: call(model))()
    eager_step = step_of(model, call)
    eager_out = eager_step()
    eager_grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    compiled_model = torch.compile(model)
    compiled_step = step_of(model, lambda m: call(compiled_model))
    compiled_out = compiled_step()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    diff = max([float((compiled_out - eager_out).abs().max())] + [float((a - b).abs().max()) for a, b in zip(grads, eager_grads)])
    eager_s, compiled_s = median_seconds(eager_step, repeats), median_seconds(compiled_step, repeats)
    return {"case": name, "graph breaks": explanation.graph_break_count, "max abs diff vs eager": f"{diff:.1e}",
            "eager (s)": round(eager_s, 4), "compiled (s)": round(compiled_s, 4),
            "compiled / eager": round(compiled_s / eager_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES), metavar="CASE")
    parser.add_argument("--out", default="docs/compile.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.cases:
        rows.append(measure(name, args.repeats))
        print(rows[-1], flush=True)
    header = (f"torch.compile (inductor) against eager, forward + backward, median of {args.repeats} after warm-up, "
              f"{args.threads} thread(s), torch {torch.__version__}, {platform.machine()}; "
              f"`python benchmarks/compile.py`.\n\n")
    table = markdown_table(rows, list(rows[0]))
    print("\n" + header + table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(header + table + "\n")


if __name__ == "__main__":
    main()
