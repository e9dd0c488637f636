"""Draw the attention masks of every pattern side by side (one example of 32 positions).

Usage: python examples/patterns.py [--out docs/patterns.png] [--n 32]

Each panel is ``pattern.to_dense(ptr)``: row = query i, column = key j, dark = may attend.
The title gives the edges and the max path length (layers until every position can reach
every other one) from ``pattern.stats``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import networkx as nx  # noqa: E402
import torch  # noqa: E402
from torch_geometric.utils import from_networkx  # noqa: E402

from graphattn import patterns  # noqa: E402


def gallery(n: int) -> dict:
    # A social graph for the graph-restricted patterns: the karate club has 34 members.
    karate = from_networkx(nx.karate_club_graph()).edge_index
    specs = ["dense", "causal", "window:3", "causal&window:4", "dilated:3:3", "block:8", "global:0:16", "random:3:0",
             "bigbird:2:2:2:0", "window:2|global:0"]
    items = {spec: (patterns.parse(spec), n, None) for spec in specs}  # names in the one grammar
    items["graph (karate club)"] = (patterns.graph(), 34, karate)  # graph patterns read the graph
    items["khop:2 (karate club)"] = (patterns.khop(2), 34, karate)
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/patterns.png")
    parser.add_argument("--n", type=int, default=32, help="positions of the sequence example")
    args = parser.parse_args()

    items = gallery(args.n)
    cols = 4
    rows = -(-len(items) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows))
    for ax, (name, (pattern, n, graph)) in zip(axes.flat, items.items()):
        ptr = torch.tensor([0, n])
        mask = pattern.to_dense(ptr, graph=graph)
        stats = pattern.stats(ptr, graph=graph)
        ax.imshow(mask.numpy(), cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
        path = stats["max_path_length"]
        ax.set_title(f"{name}\n{stats['num_edges']} edges, path {path}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        print(f"{name:34s} edges {stats['num_edges']:5d}  density {stats['density']:.3f}  "
              f"max path length {path}")
    for ax in list(axes.flat)[len(items):]:
        ax.axis("off")
    fig.suptitle("graphattn attention patterns (rows: query i, columns: key j)")
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
