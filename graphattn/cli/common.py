"""What every ``graphattn`` subcommand shares: one-line errors, threads, lists of integers, logging."""
from __future__ import annotations

import argparse
import logging
from typing import Optional

import torch

__all__ = ["Parser", "set_threads", "int_list", "setup_logging"]


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are a single line: ``graphattn train: error: ...``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def set_threads(threads: Optional[int]) -> None:
    """torch's intra-op threads for this process (a process-wide setting: entry points only)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def int_list(text: str, name: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be positive integers, got {text!r}")
    return values


def setup_logging(level: int = logging.INFO) -> None:
    """Print the library's messages (``graphattn.*`` loggers) on stderr, one line each, unless the
    application configured logging already. For entry points: the CLI and the examples."""
    logger = logging.getLogger("graphattn")
    if not logger.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
