"""The ``graphattn`` command line: ``train``, ``translate``, ``evaluate``, ``generate`` and ``compare``.

Bad input (an unknown pattern, a missing file, zero steps, a corrupt checkpoint) ends with one
line on stderr and exit status 2, as argparse's own errors do, never with a traceback.

The entry point owns what is process-wide: torch's thread count (``--threads``), glibc's
allocator setting (``compare``), and logging: the library's messages (``graphattn.*`` loggers)
are printed here, one line each. Each subcommand lives in its module (``text.py``,
``compare.py``) and registers itself on the parser.
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from graphattn.cli import compare, text
from graphattn.cli.common import Parser, setup_logging
from graphattn.distributed import DistributedError
from graphattn.version import __version__

__all__ = ["main", "build_parser", "setup_logging"]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="graphattn",
                    description="Self-attention as message passing: patterns, layers, training and comparison.")
    parser.add_argument("--version", action="version", version=f"graphattn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (text, compare):
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ValueError, OSError) as e:  # bad input: flags, files, checkpoints
        args.parser.error(str(e))
    except DistributedError as e:  # another process died or hung
        print(f"{args.parser.prog}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{args.parser.prog}: interrupted", file=sys.stderr)
        return 130


