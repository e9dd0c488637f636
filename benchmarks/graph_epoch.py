"""Training-epoch time of GraphTransformer on small molecules, beside a PyG TransformerConv stack.

Usage: python benchmarks/graph_epoch.py [--molecules 320] [--layers 4] [--hidden 64] [--repeats 7]

One epoch = forward, backward and an AdamW step over every batch of 32 FreeSolv molecules
(needs the ``chem`` extra), one thread. Rows, all measured in this run, median of ``--repeats``
epochs after a warm-up epoch, the models taking turns (interleaved):

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


def epoch_runner(model, data):
    """A function that trains ``model`` for one epoch over ``data`` (batches of 32, AdamW)."""
    loader = DataLoader(data, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=True)

    def epoch():
        model.train()
        for batch in loader:
            optimizer.zero_grad()
            F.mse_loss(model(batch), batch.y).backward()
            optimizer.step()

    return epoch


def interleaved_medians(runners: dict, repeats: int) -> dict:
    """Median seconds of an epoch of each runner, after a warm-up epoch each; the runners take
    turns within each repeat, so that a machine busy for a while slows them all alike."""
    times = {name: [] for name in runners}
    for run in runners.values():
        run()
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", type=int, default=320)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    data = freesolv(seed=0)["train"][: args.molecules]
    common = dict(edge_dim=BOND_DIM, task="graph", pool="add", normalization="softmax", pe=None)  # as measured

    torch.manual_seed(0)
    runners = {("PyG TransformerConv", "-"): epoch_runner(
        GNNBaseline(ATOM_DIM, args.hidden, 1, args.layers, "transformer", **common), data)}
    transform_seconds = {}
    for name, kwargs in MODELS.items():
        torch.manual_seed(0)
        model = GraphTransformer(ATOM_DIM, args.hidden, 1, args.layers, 4, **kwargs, **common)
        runners[(f"graphattn {name}", "in forward")] = epoch_runner(model, data)
        start = time.perf_counter()
        prepared = [model.transform(d.clone()) for d in data]
        transform_seconds[f"graphattn {name}"] = time.perf_counter() - start
        runners[(f"graphattn {name}", "once (model.transform)")] = epoch_runner(model, prepared)
    seconds = interleaved_medians(runners, args.repeats)
    base = seconds[("PyG TransformerConv", "-")]
    print(f"{len(data)} FreeSolv molecules, batch 32, {args.layers} layers, width {args.hidden}, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats} interleaved epochs\n")
    print("| model | structure | epoch (s) | vs TransformerConv | one-time transform (s) |")
    print("|---|---|---:|---:|---:|")
    for (name, structure), t in seconds.items():
        once = f"{transform_seconds[name]:.2f}" if structure.startswith("once") else ""
        print(f"| {name} | {structure} | {t:.3f} | {t / base:.2f} | {once} |")


if __name__ == "__main__":
    main()
