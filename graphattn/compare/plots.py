"""Plots of the comparison: scaling of one layer, and accuracy against speed and memory.

Drawn with ``matplotlib.figure.Figure`` rather than ``pyplot``, so the library never touches
matplotlib's global backend state.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

__all__ = ["plot_scaling", "plot_lra"]


def plot_scaling(rows: list, path) -> Path:
    """Time and peak memory of one layer against n, log-log."""
    from matplotlib.figure import Figure  # imported here: only plotting needs matplotlib

    fig = Figure(figsize=(11, 4.2), layout="constrained")
    axes = fig.subplots(1, 2)
    for name in dict.fromkeys(r["pattern"] for r in rows):
        mine = [r for r in rows if r["pattern"] == name]
        style = "--" if name in ("lstm", "conv1d") else "-"
        for ax, key in zip(axes, ("seconds", "peak_mib")):
            pts = [(r["n"], r[key]) for r in mine if r[key]]
            if pts:
                ax.loglog(*zip(*pts), style, marker="o", label=name)
    axes[0].set(xlabel="n (positions)", ylabel="forward + backward (s)", title="time of one layer")
    axes[1].set(xlabel="n (positions)", ylabel="peak memory (MiB)", title="memory of one layer")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_accuracy_speed(summary: Sequence[dict], path, title: str, xlabel: str,
                        label: Callable[[dict], str] = lambda r: r["pattern"],
                        baseline: Optional[float] = None) -> Path:
    """Accuracy against relative speed, one mark per row of ``summary`` (keys ``relative_speed``,
    ``accuracy``, ``accuracy_std``, ``peak_mib``), the area of a mark its peak memory (as the Long
    Range Arena draws it); ``baseline`` (e.g. the majority class's accuracy) is a dashed line."""
    from matplotlib.figure import Figure  # imported here: only plotting needs matplotlib

    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    biggest = max((r["peak_mib"] or 1) for r in summary)
    for r in summary:
        size = 60 + 1500 * (r["peak_mib"] or 1) / biggest
        ax.scatter(r["relative_speed"], r["accuracy"], s=size, alpha=0.5)
        ax.errorbar(r["relative_speed"], r["accuracy"], yerr=r["accuracy_std"], fmt="none", ecolor="gray")
        ax.annotate(label(r), (r["relative_speed"], r["accuracy"]), fontsize=8, ha="center", va="bottom")
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle="--", linewidth=1, label="majority class")
        ax.legend(fontsize=8, loc="best")  # away from the marks
    ax.set(xlabel=xlabel, ylabel="test accuracy (%)", title=f"{title}\naccuracy vs speed (mark area = peak memory)")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return Path(path)


def plot_lra(summary: list, path, baseline: Optional[float] = None, title: str = "ListOps") -> Path:
    """Accuracy against speed relative to dense, for the sequence comparison."""
    return plot_accuracy_speed(summary, path, title, "tokens/s relative to dense", baseline=baseline)
