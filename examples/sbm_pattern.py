"""SBM PATTERN (after "Benchmarking Graph Neural Networks"): find the planted pattern's nodes.

Usage: python examples/sbm_pattern.py [--train 300] [--epochs 6] [--seed 0] [--pe laplacian]

Graphs of five stochastic-block-model communities (p = 0.5, q = 0.35, about 120 nodes and
5000 edges each) hide a 20-node pattern; each node must say whether it belongs to it. The
metric is the benchmark's class-balanced ("weighted") accuracy. Softmax attention averages its
neighbours and so cannot count them, while pattern nodes differ from the rest by degree; the
"sigmoid" normalisation of GraphMultiheadAttention sums instead of averaging. All models get
the same positional encoding and training. Writes docs/sbm_pattern.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from graphattn import distributed
from graphattn.graphs import BASELINES, GNNBaseline, Task, balanced_accuracy, fit
from graphattn.graphs.datasets import sbm_pattern
from graphattn.nn import GraphTransformer
from graphattn.transforms import positional_encoding_transform
from graphattn.utils.tables import markdown_table

# graphattn models: a pattern (the one grammar) and architecture options as keyword arguments.
GRAPHATTN = {
    # the normalization named: "graph" is the softmax row of docs/sbm_pattern.md (GraphTransformer's default is sigmoid)
    "graph": {"pattern": "graph", "normalization": "softmax"},
    "graph, sigmoid": {"pattern": "graph", "normalization": "sigmoid"},
    "gps": {"pattern": "dense", "local_mpnn": True},  # GraphGPS: dense attention beside GINE
}
# PyG baselines as "pyg:<conv>"
MODELS = list(GRAPHATTN) + [f"pyg:{conv}" for conv in BASELINES]


def prepared(model, graphs: list) -> list:
    """The graphs with what a graphattn model attends computed once (``model.structure``; the
    positional encoding, if any, is already there), so that no training step searches a graph."""
    return [model.structure(g.clone()) for g in graphs] if isinstance(model, GraphTransformer) else graphs


def make_model(name: str, args) -> torch.nn.Module:
    common = dict(pe=args.pe, pe_dim=args.pe_dim, dropout=args.dropout)
    if name.startswith("pyg:"):
        return GNNBaseline(3, args.hidden, 2, args.layers, name[4:], num_heads=args.heads, **common)
    return GraphTransformer(3, args.hidden, 2, args.layers, args.heads, **GRAPHATTN[name], **common,
                            max_degree=None)  # no degree embedding, as docs/sbm_pattern.md measured


def label(name: str) -> str:
    return f"PyG {BASELINES[name[4:]]}" if name.startswith("pyg:") else f"graphattn {name}"


def main(write: bool = True) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=300, help="training graphs")
    parser.add_argument("--test", type=int, default=150, help="validation and test graphs (each)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--pe", default="random_walk", choices=["laplacian", "random_walk", "none"])
    parser.add_argument("--pe-dim", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS, metavar="MODEL")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/sbm_pattern.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.pe = None if args.pe == "none" else args.pe

    data = sbm_pattern(args.train + 2 * args.test, seed=args.seed)
    if args.pe:
        transform = positional_encoding_transform(args.pe, args.pe_dim)
        data = [transform(d) for d in data]
    train, val, test = data[: args.train], data[args.train : args.train + args.test], data[args.train + args.test :]
    # The benchmark's loss weights: each class by the other's share of the nodes.
    positive = float(torch.cat([d.y for d in train]).float().mean())
    weight = torch.tensor([positive, 1 - positive])
    task = Task(select=lambda out, batch: (out, batch.y), loss=lambda p, t: F.cross_entropy(p, t, weight=weight),
                metric=balanced_accuracy)

    rows = []
    for name in args.models:
        torch.manual_seed(args.seed)
        model = make_model(name, args)
        r = fit(model, *(prepared(model, part) for part in (train, val, test)), task, epochs=args.epochs, lr=args.lr,
                batch_size=32, seed=args.seed)
        rows.append({"model": label(name), "test balanced acc": r["test"], "val": r["val"], "best epoch": r["epoch"],
                     "params": r["params"], "seconds": f"{r['seconds']:.0f}"})
        print(f"{label(name):26s} test {r['test']:.4f}  val {r['val']:.4f}  ({r['seconds']:.0f} s)", flush=True)
    header = (
        f"SBM PATTERN: class-balanced test accuracy at the best validation epoch; {args.train}/{args.test}/{args.test} "
        f"graphs, {args.layers} layers, width {args.hidden}, {args.epochs} epochs, pe={args.pe}, seed {args.seed}.\n\n"
    )
    table = markdown_table(rows, ["model", "test balanced acc", "val", "best epoch", "params", "seconds"])
    print("\n" + header + table)
    if not write:  # under torchrun only rank 0 writes
        return
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(header + table + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    with distributed.script() as ctx:  # under torchrun the processes train together
        main(write=ctx.is_main)
