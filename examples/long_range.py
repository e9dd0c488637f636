"""Tree-NeighborsMatch (Alon & Yahav): accuracy over tree depth, by attention pattern, against GCN.

Usage: python examples/long_range.py [--depths 2 3 4] [--layers 2] [--epochs 20] [--seed 0]
                                     [--baselines gcn gatv2 transformer gps]

The root of a binary tree of depth d must read the label of the one leaf (of 2^d) whose key
equals its own: the answer lies d hops away. Every model has the same number of layers
(default 2), so adjacency-only attention and GCN reach d <= 2 hops, while "khop:d" and "dense"
let the root attend every leaf in one layer. Writes docs/long_range.md and docs/long_range.png.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from graphattn import distributed  # noqa: E402
from graphattn.graphs import BASELINES, GNNBaseline, Task, accuracy, fit  # noqa: E402
from graphattn.graphs.datasets import neighbors_match  # noqa: E402
from graphattn.nn import GraphTransformer  # noqa: E402
from graphattn.utils.tables import markdown_table  # noqa: E402

ROOT_TASK = Task(select=lambda out, batch: (out[batch.root_mask], batch.y), loss=F.cross_entropy, metric=accuracy)


def prepared(model, graphs: list) -> list:
    """The graphs with what a graphattn model attends computed once (``model.structure``; the
    positional encoding, if any, is already there), so that no training step searches a graph."""
    return [model.structure(g.clone()) for g in graphs] if isinstance(model, GraphTransformer) else graphs


def make_model(name: str, depth: int, args) -> torch.nn.Module:
    classes = 2**depth
    in_channels = 2 * (classes + 1)
    if name.startswith("pyg:"):
        return GNNBaseline(in_channels, args.hidden, classes, args.layers, name[4:], num_heads=args.heads)
    pattern = f"khop:{depth}" if name == "khop" else name
    # softmax, no dropout and no degree embedding on every pattern, as docs/long_range.md measured:
    # the rows differ by the pattern only
    return GraphTransformer(in_channels, args.hidden, classes, args.layers, args.heads, pattern=pattern,
                            normalization="softmax", dropout=0.0, max_degree=None)


def label(name: str) -> str:
    if name.startswith("pyg:"):
        return f"PyG {BASELINES[name[4:]]}"
    return "graphattn khop:d" if name == "khop" else f"graphattn {name}"


def main(write: bool = True) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--layers", type=int, default=2, help="layers of every model")
    parser.add_argument("--train", type=int, default=2000, help="training trees per depth")
    parser.add_argument("--test", type=int, default=500, help="validation and test trees per depth (each)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--patterns", nargs="+", default=["graph", "khop", "dense"],
                        help="graphattn patterns; 'khop' means khop:d at depth d")
    parser.add_argument("--baselines", nargs="*", default=["gcn"], choices=list(BASELINES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (small graphs: 1 is fastest)")
    parser.add_argument("--out", default="docs/long_range.md")
    parser.add_argument("--plot", default="docs/long_range.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    names = args.patterns + [f"pyg:{conv}" for conv in args.baselines]
    results: dict[str, dict[int, dict]] = {name: {} for name in names}
    for depth in args.depths:
        data = neighbors_match(depth, args.train + 2 * args.test, seed=args.seed)
        train, val, test = data[: args.train], data[args.train : args.train + args.test], data[args.train + args.test :]
        for name in names:
            torch.manual_seed(args.seed)
            model = make_model(name, depth, args)
            r = fit(model, *(prepared(model, part) for part in (train, val, test)), ROOT_TASK, epochs=args.epochs, lr=args.lr, batch_size=64, seed=args.seed)
            results[name][depth] = r
            print(f"depth {depth}  {label(name):28s} test acc {r['test']:.3f}  ({r['seconds']:.0f} s)", flush=True)

    columns = ["model"] + [f"depth {d} ({2**d} leaves)" for d in args.depths] + ["seconds"]
    rows = [{"model": "chance", **{c: 1 / 2**d for c, d in zip(columns[1:], args.depths)}}]
    for name in names:
        row = {"model": label(name), "seconds": f"{sum(r['seconds'] for r in results[name].values()):.0f}"}
        row.update({c: results[name][d]["test"] for c, d in zip(columns[1:], args.depths)})
        rows.append(row)
    table = markdown_table(rows, columns)
    header = (
        f"Tree-NeighborsMatch, test accuracy at the best validation epoch; {args.layers} layers, width "
        f"{args.hidden}, {args.epochs} epochs, {args.train}/{args.test}/{args.test} trees, seed {args.seed}.\n\n"
    )
    print("\n" + header + table)
    if not write:  # under torchrun only rank 0 writes
        return
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(header + table + "\n")

    fig, ax = plt.subplots(figsize=(6, 4))
    for i, name in enumerate(names):  # distinct markers and sizes: equal curves stay visible
        ax.plot(args.depths, [results[name][d]["test"] for d in args.depths], marker="osD^vP*X"[i % 8],
                markersize=11 - 2 * (i % 4), linestyle=("-", "--", ":", "-.")[i % 4], label=label(name))
    ax.plot(args.depths, [1 / 2**d for d in args.depths], "k--", label="chance")
    ax.set(xlabel="tree depth d (hops from the answer to the root)", ylabel="test accuracy",
           title=f"Tree-NeighborsMatch, {args.layers} layers", xticks=args.depths, ylim=(0, 1.05))
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.plot, dpi=120)
    print(f"wrote {args.out} and {args.plot}")


if __name__ == "__main__":
    with distributed.script() as ctx:  # under torchrun the processes train together
        main(write=ctx.is_main)
