"""Attention patterns compared on real translation (Multi30k): the table and the chart.

The runs come from :func:`graphattn.text.multi30k.compare_patterns` (one row per pattern pair);
this module only reports them, so that the comparison room need not import the text room.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

__all__ = ["translation_table", "plot_bleu_speed", "translation_report"]

COLUMNS = ("encoder", "decoder", "test_bleu", "valid_bleu", "steps", "tokens_per_s", "relative_speed", "peak_mib",
           "max_path_length")


def translation_table(rows: Sequence[dict]) -> str:
    """A markdown table of ``rows``; ``relative_speed`` is tokens/s over the dense/causal run's."""
    base = next((r["tokens_per_s"] for r in rows if (r["encoder"], r["decoder"]) == ("dense", "causal")), None)
    lines = ["| encoder | decoder | test BLEU | valid BLEU (subset) | steps | tokens/s | vs dense | peak MiB | "
             "encoder max path (layers) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        speed = f"{r['tokens_per_s'] / base:.2f}x" if base else "-"
        peak = "-" if r["peak_mib"] is None else f"{r['peak_mib']:.0f}"
        lines.append(f"| `{r['encoder']}` | `{r['decoder']}` | {r['test_bleu']:.2f} | {r['valid_bleu']:.2f} | "
                     f"{r['steps']} | {r['tokens_per_s']:,.0f} | {speed} | {peak} | {r['max_path_length']} |")
    return "\n".join(lines)


def plot_bleu_speed(rows: Sequence[dict], path) -> Path:
    """Test BLEU against tokens/s, one mark per run, labelled by its patterns."""
    from matplotlib.figure import Figure  # imported here: only plotting needs matplotlib

    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for r in rows:
        ax.scatter(r["tokens_per_s"], r["test_bleu"], s=60, alpha=0.6)
        label = r["encoder"] if r["decoder"] == "causal" else f"dec {r['decoder']}"
        ax.annotate(label, (r["tokens_per_s"], r["test_bleu"]), fontsize=8, ha="center", va="bottom")
    ax.set(xlabel="training tokens/s", ylabel="test 2016 sacreBLEU (greedy)", title="Multi30k EN->DE: BLEU vs speed")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    return Path(path)


def translation_report(rows: Sequence[dict], out_dir, settings: dict) -> str:
    """Write ``multi30k.md`` (settings, table), ``multi30k.json`` and ``multi30k.png`` to
    ``out_dir``; return the markdown."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "multi30k.json").write_text(json.dumps({"settings": settings, "runs": list(rows)}, indent=1))
    plot_bleu_speed(rows, out_dir / "multi30k.png")
    text = (f"Settings: {json.dumps(settings)}\n\n" + translation_table(rows) + "\n\n![BLEU vs speed](multi30k.png)\n")
    (out_dir / "multi30k.md").write_text(text)
    return text
