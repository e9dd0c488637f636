"""Platonov et al.'s own protocol on their heterophilous graphs, for a GPU.

``docs/real_graphs.md`` runs their baselines at width 64, 3 layers, 300 steps at lr 1e-3 on 2 CPU cores,
where width 512 takes 7-10 s a step. This script runs the published protocol itself (Platonov et al.,
ICLR 2023, "A critical look at the evaluation of GNNs under heterophily"): ``ResidualGNN`` at width 512,
dropout 0.2, 1,000 full-batch Adam steps at lr 3e-5, the test metric at the best validation step, every
number of layers from 1 to 5 on every split, the reported figure the layer count of the best mean
validation metric. graphattn's defaults (``GraphTransformer(in, 512, out, task="node")``) run in the same loop
at their own depth.

    python benchmarks/heterophilous_protocol.py --data ../shared/data --results docs/heterophilous_protocol.json

Each job (a model, a split, a layer count) runs in a worker process (``--workers``: several share one GPU,
whose kernels these small graphs leave mostly idle); the JSON is rewritten after every job, the splits
run in order (the first two of every model before the third of any), and ``--budget-s`` stops starting
jobs after that many seconds, so a run cut short keeps whole splits. ``--render`` rewrites the markdown
from the JSON alone.
"""

import argparse
import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import statistics
import time
from pathlib import Path

import torch

from graphattn.graphs import public_data
from graphattn.graphs.baselines import ResidualGNN
from graphattn.graphs.fit import accuracy, fit_full_graph, roc_auc

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = {  # Platonov et al. 2023, Table 2 (mean over their 10 splits)
    "minesweeper": {"gcn": 89.75, "sage": 93.51, "gat": 92.01, "gat-sep": 93.91, "gt": 91.85, "gt-sep": 92.29},
}
PROTOCOL = {"width": 512, "dropout": 0.2, "steps": 1000, "lr": 3e-5, "layers": (1, 2, 3, 4, 5), "splits": 10}
BASELINES = ("gcn", "sage", "gat", "gat-sep", "gt-sep")
LABELS = {"gcn": "GCN", "sage": "SAGE", "gat": "GAT", "gat-sep": "GAT-sep", "gt": "GT", "gt-sep": "GT-sep",
          "graphattn": "graphattn GraphTransformer (defaults)"}
ROC_AUC_SETS = ("minesweeper", "tolokers", "questions")
_DATA: dict = {}  # a worker's graphs, read once by the parent (PyG's cache is not safe to fill from several)


def _init_worker(graphs: dict) -> None:
    torch.set_num_threads(1)
    _DATA.update(graphs)


def run_job(name: str, row: str, split: int, layers: int | None, proto: dict, device: str) -> dict:
    """One model on one split: ``fit_full_graph``'s result, with the layer count."""
    data = _DATA[name]
    out = 1 if name in ROC_AUC_SETS else int(data.y.max()) + 1
    torch.manual_seed(split)
    if row == "graphattn":
        from graphattn.nn import GraphTransformer

        model = GraphTransformer(data.num_features, proto["width"], out, task="node")
        data, layers = model.transform(data.clone()), model.num_layers
    else:
        model = ResidualGNN(data.num_features, proto["width"], out, layers, row, dropout=proto["dropout"])
    metric = roc_auc if name in ROC_AUC_SETS else accuracy
    result = fit_full_graph(model.to(device), data.to(device), split, metric, steps=proto["steps"], lr=proto["lr"])
    return {**result, "layers": layers, "split": split}


def jobs(names, rows, splits: int, layer_counts) -> list[tuple]:
    """Split by split, so that a run cut short holds whole splits of every model."""
    return [(name, row, split, None if row == "graphattn" else n)
            for split in range(splits) for name in names for row in rows
            for n in ((None,) if row == "graphattn" else layer_counts)]


def summarise(runs: list[dict]) -> dict | None:
    """The published rule: the layer count of the best mean validation metric over the splits done at every
    count, and its test metric's mean and std over those splits."""
    by_layers: dict = {}
    for r in runs:
        by_layers.setdefault(r["layers"], {})[r["split"]] = r
    counts = sorted(by_layers)
    if not counts:
        return None
    splits = sorted(set.intersection(*(set(by_layers[n]) for n in counts)))
    if not splits:
        return None
    best = max(counts, key=lambda n: statistics.mean(by_layers[n][s]["val"] for s in splits))
    tests = [100 * by_layers[best][s]["test"] for s in splits]
    return {"layers": best, "n": len(splits), "mean": statistics.mean(tests),
            "std": statistics.stdev(tests) if len(tests) > 1 else 0.0,
            "by_layers": {n: statistics.mean(100 * by_layers[n][s]["test"] for s in splits) for n in counts},
            "step_seconds": statistics.median(by_layers[best][s]["step_seconds"] for s in splits),
            "best_steps": [by_layers[best][s]["step"] for s in splits]}


def render(store: dict) -> str:
    proto, lines = store["protocol"], []
    lines.append(f"Width {proto['width']}, dropout {proto['dropout']}, {proto['steps']} full-batch steps at lr "
                 f"{proto['lr']:g}, the best of {min(proto['layers'])}-{max(proto['layers'])} layers by mean "
                 f"validation ({store.get('device', '?')}).\n")
    for name, rows in store["runs"].items():
        lines += [f"### {name} ({'ROC-AUC' if name in ROC_AUC_SETS else 'accuracy'} %)", "",
                  "| model | published | this run: mean ± std | n | layers (best) | test by layers | "
                  "best step | step time (s) |", "|---|---|---|---|---|---|---|---|"]
        for row, runs in rows.items():
            s = summarise(runs)
            if s is None:
                continue
            published = PUBLISHED.get(name, {}).get(row, "")
            by = ", ".join(f"{n}: {v:.2f}" for n, v in s["by_layers"].items())
            searched = row == "graphattn" or set(s["by_layers"]) >= set(proto["layers"])
            best = s["layers"] if searched else f"{s['layers']} (of {', '.join(map(str, s['by_layers']))} only)"
            lines.append(f"| {LABELS.get(row, row)} | {published} | {s['mean']:.2f} ± {s['std']:.2f} | {s['n']} | "
                         f"{best} | {by} | {min(s['best_steps'])}-{max(s['best_steps'])} | "
                         f"{s['step_seconds']:.4f} |")
        lines.append("")
    return "\n".join(lines)


def save(store: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")  # atomically: a run cut short keeps every finished job
    tmp.write_text(json.dumps(store, indent=1))
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("GRAPHATTN_DATA", str(ROOT.parent / "shared" / "data")),
                        help="data folder (default: $GRAPHATTN_DATA, else ../shared/data)")
    parser.add_argument("--sets", nargs="*", default=["minesweeper"], choices=public_data.HETEROPHILOUS)
    parser.add_argument("--rows", nargs="*", default=list(BASELINES) + ["graphattn"],
                        choices=tuple(LABELS), help="models (default: the baselines of docs/real_graphs.md and graphattn)")
    parser.add_argument("--splits", type=int, default=PROTOCOL["splits"], help="the first N of the 10 splits")
    parser.add_argument("--layers", type=int, nargs="*", default=PROTOCOL["layers"], help="layer counts to search")
    parser.add_argument("--steps", type=int, default=PROTOCOL["steps"])
    parser.add_argument("--width", type=int, default=PROTOCOL["width"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (several can share a GPU)")
    parser.add_argument("--budget-s", type=float, default=None, help="start no job after this many seconds")
    parser.add_argument("--results", required=True, help="JSON of every job (rewritten after each)")
    parser.add_argument("--out", default=None, help="markdown of the tables (default: stdout only)")
    parser.add_argument("--render", action="store_true", help="only rewrite --out from --results")
    parser.add_argument("--resume", action="store_true", help="keep the jobs in --results and run only the others")
    args = parser.parse_args()
    if not 1 <= args.splits <= 10:
        parser.error("--splits must be 1 to 10 (the files hold 10)")
    if not args.layers or min(args.layers) < 1:
        parser.error("--layers takes positive layer counts")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    path = Path(args.results)
    if args.render:
        store = json.loads(path.read_text())
    else:
        if path.is_file() and not args.resume:  # a run never overwrites another
            raise SystemExit(f"{path} holds a run: --resume continues it, or name another --results")
        try:
            graphs = {n: public_data.heterophilous(n, args.data) for n in args.sets}
        except FileNotFoundError as error:  # it says where the files come from
            raise SystemExit(str(error))
        proto = {**PROTOCOL, "width": args.width, "steps": args.steps, "layers": list(args.layers)}
        device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        store = {"protocol": proto, "device": device, "runs": {}}
        if args.resume and path.is_file():
            store = json.loads(path.read_text())
            kept = {k: v for k, v in store["protocol"].items() if k != "layers"}
            if kept != {k: v for k, v in proto.items() if k != "layers"} or store["device"] != device:
                raise SystemExit(f"{path} holds another protocol or device ({store['protocol']}, {store['device']})")
            store["protocol"]["layers"] = sorted(set(store["protocol"]["layers"]) | set(args.layers))
        for n in args.sets:
            for r in args.rows:
                store["runs"].setdefault(n, {}).setdefault(r, [])
        done = {(n, r, run["split"], None if r == "graphattn" else run["layers"])
                for n, rows in store["runs"].items() for r, runs in rows.items() for run in runs}
        todo = [job for job in jobs(args.sets, args.rows, args.splits, args.layers) if job not in done]
        start = time.perf_counter()
        context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
        with cf.ProcessPoolExecutor(args.workers, mp_context=context, initializer=_init_worker,
                                    initargs=(graphs,)) as pool:
            pending = {pool.submit(run_job, *job, proto, args.device): job for job in todo}
            for finished in cf.as_completed(pending):
                name, row, split, layers = pending[finished]
                if args.budget_s is not None and time.perf_counter() - start > args.budget_s:
                    for f in pending:
                        f.cancel()
                if finished.cancelled():
                    continue
                result = finished.result()
                store["runs"][name][row].append(result)
                save(store, path)
                logging.info("%s %s split %d, %s layers: val %.4f test %.4f at step %d (%.0f s)", name, row, split,
                             result["layers"], result["val"], result["test"], result["step"], result["seconds"])
    text = render(store)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
