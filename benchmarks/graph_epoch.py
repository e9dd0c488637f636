"""Training-epoch time of GraphTransformer on small molecules, beside a PyG TransformerConv stack.

Usage: python benchmarks/graph_epoch.py [--molecules 320] [--layers 4] [--hidden 64] [--repeats 5]

One epoch = forward, backward and an AdamW step over every batch of 32 FreeSolv molecules
(needs the ``chem`` extra), one thread. Rows, all measured in this run, median of ``--repeats``
epochs after a warm-up epoch:

* ``graph``, ``khop:2`` and ``gps`` (``pattern="dense", local_mpnn=True``) GraphTransformers, each
  once on the raw graphs ("structure in forward": the model computes its attention pairs,
  pair features and shortest-path buckets at every step, with a one-time warning) and once on
  graphs that went through ``model.transform`` before training ("structure once"; its one-time
  cost is printed beside);
* PyG's ``TransformerConv`` in the same blocks (``GNNBaseline(conv="transformer")``), the stack a
  user would otherwise train. Ratios are against it.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import time

import torch
import torch.nn.functional as F
from torch_geometric.loader import DataLoader

from graphattn.graphs import GNNBaseline
from graphattn.graphs.datasets import ATOM_DIM, BOND_DIM, freesolv
from graphattn.nn import GraphTransformer

MODELS = {"graph": {"pattern": "graph"}, "khop:2": {"pattern": "khop:2"},
          "gps": {"pattern": "dense", "local_mpnn": True}}


def epoch_seconds(model, data, repeats: int) -> float:
    loader = DataLoader(data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)

    def epoch():
        model.train()
        for batch in loader:
            optimizer.zero_grad()
            F.mse_loss(model(batch), batch.y).backward()
            optimizer.step()

    epoch()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        epoch()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", type=int, default=320)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    data = freesolv(seed=0)["train"][: args.molecules]
    common = dict(edge_dim=BOND_DIM, task="graph", pool="add")

    torch.manual_seed(0)
    base = epoch_seconds(GNNBaseline(ATOM_DIM, args.hidden, 1, args.layers, "transformer", **common), data, args.repeats)
    print(f"{len(data)} FreeSolv molecules, batch 32, {args.layers} layers, width {args.hidden}, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats} epochs\n")
    print("| model | structure | epoch (s) | vs TransformerConv | one-time transform (s) |")
    print("|---|---|---:|---:|---:|")
    print(f"| PyG TransformerConv | - | {base:.3f} | 1.00 | |")
    for name, kwargs in MODELS.items():
        torch.manual_seed(0)
        model = GraphTransformer(ATOM_DIM, args.hidden, 1, args.layers, 4, **kwargs, **common)
        seconds = epoch_seconds(model, data, args.repeats)
        print(f"| graphattn {name} | in forward | {seconds:.3f} | {seconds / base:.2f} | |", flush=True)
        transform = getattr(model, "transform", None)
        if transform is None:  # code from before graph structure was computed once
            continue
        start = time.perf_counter()
        prepared = [transform(d.clone()) for d in data]
        once = time.perf_counter() - start
        seconds = epoch_seconds(model, prepared, args.repeats)
        print(f"| graphattn {name} | once (model.transform) | {seconds:.3f} | {seconds / base:.2f} | {once:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
