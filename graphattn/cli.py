"""The ``graphattn`` command line."""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

import graphattn


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphattn",
        description="Self-attention as message passing: patterns, layers, training and comparison.",
    )
    parser.add_argument("--version", action="version", version=f"graphattn {graphattn.__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return 0  # pragma: no cover - subcommands arrive with later issues


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
