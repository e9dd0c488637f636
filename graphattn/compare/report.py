"""The comparison as files: tables (markdown, CSV, JSON) and plots under one directory.

:func:`stats_report` and :func:`train_report` run the measurements, write their outputs and
return the markdown table; the command line (``graphattn compare``) prints it.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from graphattn.compare import listops
from graphattn.compare.plots import plot_lra, plot_scaling
from graphattn.compare.stats import STATS_COLUMNS, stats_table
from graphattn.compare.training import TRAIN_COLUMNS, TRAIN_HEADERS, TrainSettings, summarise, train_table
from graphattn.utils.tables import markdown_table, write_rows

__all__ = ["stats_report", "train_report"]


def stats_report(patterns: dict, lengths: Sequence[int], out_dir, progress: bool = True) -> str:
    """Statistics and one layer's cost per pattern and length: ``stats.{md,csv,json}``,
    ``exponents.json`` and ``scaling.png`` under ``out_dir``; returns the markdown."""
    out_dir = Path(out_dir)
    rows, exponents = stats_table(patterns, lengths, progress=progress)
    write_rows(rows, out_dir, "stats")
    (out_dir / "exponents.json").write_text(json.dumps(exponents, indent=1))
    plot_scaling(rows, out_dir / "scaling.png")
    fits = [{"pattern": name, "time": e["time"], "memory": e["memory"], "n": f"{e['lengths'][0]}-{e['lengths'][1]}"}
            for name, e in exponents.items()]
    table = (markdown_table(rows, STATS_COLUMNS) + "\n\nExponents k of time and memory ~ n^k, fitted over n:\n\n"
             + markdown_table(fits, ["pattern", "time", "memory", "n"]))
    (out_dir / "stats.md").write_text(table + "\n")
    return table


def train_report(patterns: dict, seeds: Sequence[int], settings: TrainSettings, out_dir, task_name: str = "sparse",
                 learned_spans: Sequence[int] = (), progress: bool = True) -> str:
    """The classifier trained under each pattern: ``train.{md,csv,json}``, ``train_runs.{csv,json}``,
    ``train_settings.json`` and ``lra.png`` under ``out_dir``; returns the markdown."""
    out_dir = Path(out_dir)
    cfg = settings
    rows = train_table(patterns, seeds, cfg, progress=progress, learned_spans=learned_spans)
    summary = summarise(rows)
    write_rows(rows, out_dir, "train_runs")
    write_rows(summary, out_dir, "train")
    test = listops.listops_dataset(cfg.num_test, cfg.min_len, cfg.max_len, seed=2000, **cfg.task)
    majority = 100.0 * max(Counter(y for _, y in test).values()) / len(test)
    plot_lra(summary, out_dir / "lra.png", baseline=majority)
    settings_out = {**asdict(cfg), "seeds": list(seeds), "learned_spans": list(learned_spans),
                    "majority_class_accuracy": majority}
    (out_dir / "train_settings.json").write_text(json.dumps(settings_out, indent=1))
    table = (markdown_table(summary, TRAIN_COLUMNS, TRAIN_HEADERS)
             + f"\n\nListOps ({task_name}), lengths {cfg.min_len}-{cfg.max_len}, {cfg.steps} steps of "
             f"{cfg.batch_size}, seeds {list(seeds)}, {cfg.num_layers} layers of width {cfg.d_model}; "
             f"majority class {majority:.1f}%.")
    (out_dir / "train.md").write_text(table + "\n")
    return table
