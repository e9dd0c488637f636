"""Attention patterns side by side: the default ``graphattn compare`` run, timed.

Usage: python examples/compare_patterns.py [--quick] [--out DIR] [--threads 1] [--no-progress]

Runs both parts of the comparison (``--stats``: pattern statistics and the measured cost of one
layer for n = 512 ... 16384 with fitted scaling exponents; ``--train``: the same classifier trained
under each pattern on the generated ListOps task, two seeds), prints the markdown tables and writes
them with CSV, JSON, ``lra.png`` and ``scaling.png`` to ``--out`` (default ``docs/compare``;
``docs/compare/quick`` with ``--quick``). The wall time of the whole run, with the thread count,
goes to ``run.json`` beside them. One thread by default, so that runs on different machines compare.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from graphattn import cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole run in under 2 minutes")
    parser.add_argument("--out", help="output directory (default: docs/compare, or docs/compare/quick with --quick)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()
    out = Path(args.out or ("docs/compare/quick" if args.quick else "docs/compare"))

    # The command's own default run, so that the example is exactly `graphattn compare`.
    argv = ["compare", "--out", str(out), "--threads", str(args.threads)] + ["--quick"] * args.quick \
        + ["--no-progress"] * args.no_progress
    start = time.perf_counter()
    cli.main(argv)
    wall = time.perf_counter() - start
    record = {"command": "graphattn " + " ".join(argv), "wall_seconds": round(wall, 1),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
              "processor": platform.processor() or None}
    (out / "run.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"whole run: {wall / 60:.1f} min on {torch.get_num_threads()} thread(s); recorded in {out / 'run.json'}")


if __name__ == "__main__":
    main()
