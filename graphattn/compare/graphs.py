"""The graph pattern comparison as files: tables (markdown, CSV, JSON) and one chart per task.

The measurements come from :func:`graphattn.graphs.comparison.compare_graph_patterns` (the
``graphattn compare --graphs`` command runs both); this module only writes what they found, so
that the comparison package stays apart from the graph application it reports on.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from graphattn.compare.plots import plot_accuracy_speed
from graphattn.utils.tables import markdown_table, write_rows

__all__ = ["GRAPH_COLUMNS", "GRAPH_HEADERS", "graph_report", "plot_graph_patterns"]

GRAPH_COLUMNS = ["task", "pattern", "accuracy_text", "seeds", "relative_speed", "per_second", "peak_mib",
                 "pairs_per_node", "max_path_length"]
GRAPH_HEADERS = ["task", "pattern", "test accuracy % (mean ± std)", "seeds", "speed vs graph",
                 "graphs or seed nodes / s", "peak MiB", "pairs per node", "max path length"]
TITLES = {"neighbors_match": "Tree NeighborsMatch", "social": "Social graph (node classification)"}


def graph_report(summary: Sequence[dict], runs: Sequence[dict], settings: dict, out_dir) -> str:
    """``graphs.{md,csv,json}``, ``graph_runs.{csv,json}``, ``graph_settings.json`` and
    ``graphs_<task>.png`` (accuracy against speed, mark area = peak memory) under ``out_dir``;
    returns the markdown table."""
    out_dir = Path(out_dir)
    write_rows(list(runs), out_dir, "graph_runs")
    write_rows(list(summary), out_dir, "graphs")
    (out_dir / "graph_settings.json").write_text(json.dumps(settings, indent=1, default=str))
    for task in dict.fromkeys(r["task"] for r in summary):
        ran = [r for r in summary if r["task"] == task and "accuracy" in r]
        if ran:
            plot_graph_patterns(ran, out_dir / f"graphs_{task}.png", title=TITLES.get(task, task))
    escaped = [{**r, "pattern": r["pattern"].replace("|", "\\|")} for r in summary]  # a pipe would end the cell
    table = markdown_table(escaped, GRAPH_COLUMNS, GRAPH_HEADERS)
    (out_dir / "graphs.md").write_text(table + "\n")
    return table


def plot_graph_patterns(summary: Sequence[dict], path, title: str) -> Path:
    """Test accuracy against training speed relative to ``graph``; the area of a mark is the peak
    memory of a training step, its label the pattern and its maximum path length."""
    return plot_accuracy_speed(summary, path, title, "training speed relative to graph",
                               label=lambda r: f"{r['pattern']} (path {r['max_path_length']})")
