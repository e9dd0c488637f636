"""Result tables: one markdown writer, and CSV + JSON files of the same rows."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Optional, Sequence

__all__ = ["markdown_table", "write_rows"]


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            return str(value)
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def markdown_table(rows: Sequence[dict], columns: Sequence[str], headers: Optional[Sequence[str]] = None) -> str:
    """A markdown table of ``rows`` (dicts), one column per key; ``None`` prints empty, floats
    with 3 significant digits.

    >>> print(markdown_table([{"a": 1, "b": 0.12345}], ["a", "b"]))
    | a | b |
    |---|---|
    | 1 | 0.123 |
    """
    lines = ["| " + " | ".join(headers or columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_rows(rows: Sequence[dict], out_dir, stem: str) -> tuple[Path, Path]:
    """``rows`` as ``out_dir/stem.json`` and ``out_dir/stem.csv`` (columns: every key, in order)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out_dir / f"{stem}.json", out_dir / f"{stem}.csv"
    json_path.write_text(json.dumps(list(rows), indent=1, default=str))
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return json_path, csv_path
