r"""The same GraphTransformer trained under each attention pattern on graph tasks.

Two tasks where reach and scale pull apart: tree NeighborsMatch (the answer lies ``depth`` hops
from the root, a long-range task; small graphs in batches) and node classification on a
generated social graph (:func:`~graphattn.graphs.social.social_graph`, one graph, trained on
``NeighborLoader`` subgraphs and scored layer by layer on the whole graph). Every pattern gets the
same data, seeds, model and epochs; a run reports test accuracy, training speed (graphs or seed
nodes a second), the peak memory of one training step, the pairs a node attends and the
pattern's maximum path length on the task's graph. ``dense`` runs only where its pairs fit
(``dense_max_pairs``); elsewhere its row says why not. :mod:`graphattn.compare.graphs` writes
the tables and the chart (``graphattn compare --graphs``).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch_geometric.data import Batch
from tqdm.auto import tqdm

from graphattn import patterns as P
from graphattn.graphs.datasets import neighbors_match
from graphattn.graphs.fit import Task, accuracy, fit
from graphattn.graphs.node_training import fit_nodes
from graphattn.graphs.sampling import neighbor_loader
from graphattn.graphs.social import social_graph
from graphattn.nn import GraphTransformer
from graphattn.patterns.virtual import add_virtual_nodes, split_virtual
from graphattn.utils.bench import peak_memory_mib

__all__ = ["GRAPH_PATTERNS", "GraphCompareSettings", "compare_graph_patterns", "summarise_graph_runs", "GRAPH_TASKS"]

#: the patterns compared by default: adjacency, 2 hops, an expander, BigBird of graphs, dense
GRAPH_PATTERNS = ["graph", "khop:2", "expander:4:0", "graph|expander:4:0|virtual:1", "dense"]
GRAPH_TASKS = ("neighbors_match", "social")
# Pattern comparisons hold the rest of the model fixed: the node-task defaults' dropout and degree
# embedding (TASK_DEFAULTS) came after the comparison tables were measured; the tool keeps measuring as then.
AS_MEASURED = {"dropout": 0.0, "max_degree": None}
ROOT_TASK = Task(select=lambda out, batch: (out[batch.root_mask], batch.y), loss=F.cross_entropy, metric=accuracy)


@dataclass
class GraphCompareSettings:
    """The recipe every pattern is trained with."""

    depth: int = 3  # NeighborsMatch tree depth: the answer is `depth` hops from the root
    num_trees: int = 1200  # NeighborsMatch trees: 2/3 training, 1/6 validation, 1/6 test
    tree_epochs: int = 25  # epochs on NeighborsMatch
    social_nodes: int = 4000  # nodes of the social graph
    social_variant: str = "heterophilous"  # social_graph variant
    social_epochs: int = 8  # epochs on the social graph
    num_neighbors: tuple = (10, 5)  # NeighborLoader fan-out per layer
    hidden: int = 64  # width
    heads: int = 4  # attention heads
    layers: int = 2  # blocks: the reach of a local pattern is `layers` times its hops
    lr: float = 3e-3  # AdamW rate
    max_distance: int = 2  # hop buckets told apart
    dense_max_pairs: int = 10_000_000  # dense runs where one graph's pairs stay below this
    # one normalization for every pattern, so that the rows differ by the pattern only
    normalization: str = "softmax"


def _pairs_per_node(pattern: P.Pattern, data, ptr) -> float:
    rest, k = split_virtual(pattern)
    real = rest.edge_index(ptr, graph=None if rest.position_based else data.edge_index).size(1) if rest else 0
    n = int(ptr[-1])
    return (real + 2 * k * n + (k * k) * (ptr.numel() - 1)) / max(n, 1)


def _max_path(pattern: P.Pattern, data) -> float:
    """Maximum path length of ``pattern`` on one graph (virtual nodes added as the model does)."""
    ptr = torch.tensor([0, data.num_nodes])
    _, k = split_virtual(pattern)
    if k:
        ptr, graph = add_virtual_nodes(ptr, k, data.edge_index)
        return pattern.stats(ptr, graph=graph)["max_path_length"]
    return pattern.stats(ptr, graph=data.edge_index)["max_path_length"]


def _fits(pattern: P.Pattern, num_nodes: int, settings: GraphCompareSettings) -> Optional[str]:
    if pattern == P.dense() and num_nodes ** 2 > settings.dense_max_pairs:
        return f"does not fit: {num_nodes ** 2:,} pairs on one graph > {settings.dense_max_pairs:,}"
    return None


def _tree_run(spec: str, seed: int, cfg: GraphCompareSettings, data: list) -> dict:
    torch.manual_seed(seed)  # model init; the caller scopes the global generator (compare_graph_patterns forks it)
    classes = 2 ** cfg.depth
    model = GraphTransformer(2 * (classes + 1), cfg.hidden, classes, cfg.layers, cfg.heads, pattern=spec,
                             max_distance=cfg.max_distance, normalization=cfg.normalization, **AS_MEASURED)
    data = [model.transform(d.clone()) for d in data]
    sixth = len(data) // 6
    train, val, test = data[: 4 * sixth], data[4 * sixth: 5 * sixth], data[5 * sixth:]
    batch = Batch.from_data_list(train[:64])

    def step():
        F.cross_entropy(*ROOT_TASK.select(model(batch), batch)).backward()

    step()  # warm-up: the first call's one-time allocations are no cost of the pattern
    peak = peak_memory_mib(step)
    model.zero_grad()
    start = time.perf_counter()
    result = fit(model, train, val, test, ROOT_TASK, epochs=cfg.tree_epochs, lr=cfg.lr, batch_size=64, seed=seed)
    seconds = time.perf_counter() - start
    return {"accuracy": 100 * result["test"], "per_second": cfg.tree_epochs * len(train) / seconds, "peak_mib": peak}


def _social_run(spec: str, seed: int, cfg: GraphCompareSettings, data) -> dict:
    torch.manual_seed(seed)  # as in _tree_run: compare_graph_patterns forks the generator
    model = GraphTransformer(data.num_features, cfg.hidden, int(data.y.max()) + 1, cfg.layers, cfg.heads,
                             pattern=spec, max_distance=cfg.max_distance, normalization=cfg.normalization,
                             **AS_MEASURED)
    loader = neighbor_loader(data, cfg.num_neighbors, input_nodes=data.train_mask.nonzero().squeeze(1),
                             batch_size=512, transform=model.transform, seed=seed)
    batch = next(iter(loader))

    def step():
        F.cross_entropy(model(batch)[: batch.batch_size], batch.y[: batch.batch_size]).backward()

    step()  # warm-up, as for the trees
    peak = peak_memory_mib(step)
    model.zero_grad()
    result = fit_nodes(model, data, cfg.num_neighbors, epochs=cfg.social_epochs, lr=cfg.lr, batch_size=512, seed=seed)
    return {"accuracy": 100 * result["test"], "per_second": int(data.train_mask.sum()) / result["epoch_seconds"],
            "peak_mib": peak}


def compare_graph_patterns(patterns: Sequence[str], settings: GraphCompareSettings, seeds: Sequence[int],
                           tasks: Sequence[str] = GRAPH_TASKS, progress: bool = True) -> list[dict]:
    """One row a (task, pattern, seed): accuracy (%), speed (graphs or seed nodes a second),
    peak MiB of a training step, pairs a node attends, max path length; or ``note`` why not run."""
    cfg = settings
    data = {}
    if "neighbors_match" in tasks:
        data["neighbors_match"] = neighbors_match(cfg.depth, cfg.num_trees, seed=0)
    if "social" in tasks:
        data["social"] = social_graph(cfg.social_nodes, cfg.social_variant, seed=0)
    rows = []
    jobs = [(task, spec, seed) for task in tasks for spec in patterns for seed in seeds]
    for task, spec, seed in tqdm(jobs, disable=not progress, desc="graph patterns"):
        pattern = P.as_pattern(spec)
        sample = data[task][0] if task == "neighbors_match" else data[task]
        row = {"task": task, "pattern": spec, "seed": seed, "pairs_per_node": _pairs_per_node(
            pattern, sample, torch.tensor([0, sample.num_nodes])), "max_path_length": _max_path(pattern, sample)}
        note = _fits(pattern, sample.num_nodes, cfg)
        if note:
            rows.append({**row, "note": note})
            continue
        run = _tree_run if task == "neighbors_match" else _social_run
        with torch.random.fork_rng():  # every run seeds the generator; the caller's comes back afterwards
            rows.append({**row, **run(spec, seed, cfg, data[task])})
    return rows


def summarise_graph_runs(rows: Sequence[dict]) -> list[dict]:
    """Per (task, pattern): accuracy mean and std over seeds, speed relative to ``graph`` (or the
    first pattern run), peak memory, pairs per node, max path length."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        ran = [r for r in mine if "accuracy" in r]
        speeds = {p: statistics.mean(r["per_second"] for r in ran if r["pattern"] == p)
                  for p in dict.fromkeys(r["pattern"] for r in ran)}
        reference = speeds.get("graph", next(iter(speeds.values()), math.nan))
        for spec in dict.fromkeys(r["pattern"] for r in mine):
            runs = [r for r in mine if r["pattern"] == spec]
            row = {"task": task, "pattern": spec, "seeds": len(runs), "pairs_per_node": runs[0]["pairs_per_node"],
                   "max_path_length": runs[0]["max_path_length"]}
            if "accuracy" not in runs[0]:
                out.append({**row, "note": runs[0]["note"], "accuracy_text": runs[0]["note"]})
                continue
            acc = [r["accuracy"] for r in runs]
            std = statistics.stdev(acc) if len(acc) > 1 else 0.0
            out.append({**row, "accuracy": statistics.mean(acc), "accuracy_std": std,
                        "accuracy_text": f"{statistics.mean(acc):.1f} ± {std:.1f}",
                        "per_second": speeds[spec], "relative_speed": speeds[spec] / reference,
                        "peak_mib": statistics.mean(r["peak_mib"] or 0 for r in runs)})
    return out
