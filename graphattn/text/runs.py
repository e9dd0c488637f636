r"""A run's folder belongs to one run: a new run never replaces another by accident, the log is
written only by the run whose checkpoints sit beside it, and a resumed run is the run it says.

* A folder that holds a run (``last.pt``, ``best.pt`` or ``log.csv``) is refused to a new run
  (:func:`check_out`) unless ``overwrite``; even then nothing of the old run is touched until the
  new run has written its first checkpoint.
* Every run draws a run id, stored in each of its checkpoints (``"run_id"``) and in each row of
  its log (column ``run``). Until its first checkpoint a run logs to a hidden file
  (``.log.<id>.csv``), renamed to ``log.csv`` when that checkpoint is written
  (:meth:`RunLog.promote`): a run stopped before then leaves the folder as it found it.
* ``resume`` checks that ``log.csv`` and ``best.pt`` were written by the run of ``last.pt``
  (:func:`check_resume`) and that the settings given now are those of the checkpoint, but for
  :data:`SAFE_ON_RESUME` (:func:`resume_config`).
"""
from __future__ import annotations

import contextlib
import csv
import os
import uuid
from pathlib import Path
from typing import Iterable, Optional

from graphattn.text.checkpoint import load_checkpoint
from graphattn.text.config import FIELD_ROLES, RUN_FIELDS, TrainConfig

__all__ = ["RUN_FILES", "SAFE_ON_RESUME", "LOG_FIELDS", "new_run_id", "check_out", "resume_config", "check_resume",
           "RunLog"]

#: the files that make a folder hold a run
RUN_FILES = ("last.pt", "best.pt", "log.csv")
#: settings that may differ from the checkpoint's on resume: they change how long and where a run
#: goes on, not what it learns (``out``, ``resume``, ``overwrite`` and ``progress`` too)
SAFE_ON_RESUME = RUN_FIELDS + ("eval_every",)
LOG_FIELDS = ("step", "loss", "lr", "tokens_per_s", "valid_bleu", "valid_em", "valid_ppl", "run")


def new_run_id() -> str:
    """A fresh run id: 12 hex digits."""
    return uuid.uuid4().hex[:12]


def flag(name: str) -> str:
    """The ``graphattn train`` flag of a :class:`TrainConfig` field (by its flat name)."""
    return "--" + name.replace("_", "-")


def check_out(config: TrainConfig) -> None:
    """Refuse a new run into a folder that holds one, unless ``config.run.overwrite``."""
    run = config.run
    if run.resume and run.overwrite:
        raise ValueError("--resume continues the run in --out and --overwrite replaces it: give one of them")
    if run.resume or run.overwrite:
        return
    if any((Path(run.out) / name).exists() for name in RUN_FILES):
        raise ValueError(f"{run.out!r} holds a run: pass --resume to continue it, or --overwrite to replace it")


def resume_config(saved: TrainConfig, config: TrainConfig, given: Optional[Iterable[str]] = None) -> TrainConfig:
    """The configuration a resumed run continues with: the checkpoint's (``saved``), with the
    fields of :data:`SAFE_ON_RESUME` taken from ``config``.

    ``given`` names the fields the caller set (the command line's flags); by default the fields
    of ``config`` that differ from :class:`TrainConfig`'s defaults. A given field outside
    :data:`SAFE_ON_RESUME` that differs from the checkpoint's raises ``ValueError`` listing each.
    """
    names = list(FIELD_ROLES)
    now, then = config.to_flat(), saved.to_flat()
    if given is None:
        defaults = TrainConfig().to_flat()
        chosen = {n for n in names if now[n] != defaults[n]}
    else:
        chosen = set(given)
        if chosen - set(names):
            raise ValueError(f"given names fields that TrainConfig lacks: {sorted(chosen - set(names))}")
    differ = [n for n in names if n in chosen and n not in SAFE_ON_RESUME and now[n] != then[n]]
    if differ:
        listed = ", ".join(f"{flag(n)} {now[n]!r} (checkpoint: {then[n]!r})" for n in differ)
        safe = ", ".join(flag(n) for n in SAFE_ON_RESUME if n not in ("out", "resume", "overwrite", "progress"))
        raise ValueError(f"--resume continues the run in {config.run.out!r} as its checkpoint was trained; these settings "
                         f"differ from it: {listed}. Drop them, or start a new run (--overwrite or another --out); "
                         f"safe to change on resume: {safe}, --threads")
    keep = [n for n in SAFE_ON_RESUME if n in RUN_FIELDS or n in chosen]
    return saved.replace(**{n: now[n] for n in keep})


def _log_rows(path: Path) -> list:
    """The rows of a run's CSV log; ``ValueError`` naming it if it is not one."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            int(row["step"])
    except (KeyError, ValueError, TypeError, csv.Error, UnicodeDecodeError):
        raise ValueError(f"{os.fspath(path)!r} is not a training log (a CSV with a step column): move it away "
                         f"to resume") from None
    return rows


def _log_runs(path: Path) -> set:
    return {row.get("run") or None for row in _log_rows(path)} - {None}


def check_resume(ckpt: dict, paths: dict) -> None:
    """Refuse to resume ``ckpt`` (the run's ``last.pt``) when its log or ``best.pt`` belong to
    another run. Checkpoints and logs of earlier releases have no run id and are not checked."""
    run_id = ckpt.get("run_id")
    if run_id is None:
        return
    if paths["log"].exists():
        others = _log_runs(paths["log"]) - {run_id}
        if others:
            raise ValueError(f"{os.fspath(paths['log'])!r} holds rows of another run ({', '.join(sorted(others))}) "
                             f"than {os.fspath(paths['last'])!r} (run {run_id}): resuming would splice two runs. "
                             f"Move the log away to resume, or start a new run")
    if paths["best"].exists():
        best = load_checkpoint(paths["best"]).get("run_id")
        if best is not None and best != run_id:
            raise ValueError(f"{os.fspath(paths['best'])!r} belongs to run {best}, {os.fspath(paths['last'])!r} to run "
                             f"{run_id}: move one away to resume, or start a new run")


class RunLog:
    """The CSV log of one run (:data:`LOG_FIELDS`, one row a step).

    A new run writes a hidden file until :meth:`promote` (its first checkpoint); a resumed run
    keeps its rows up to the checkpoint's step (later ones were written after it) and goes on.
    """

    def __init__(self, paths: dict, run_id: str, resume_step: Optional[int] = None):
        self.paths, self.run_id, self.path = paths, run_id, Path(paths["log"])
        self.promoted = resume_step is not None
        rows = []
        if self.promoted and self.path.exists():
            rows = [r for r in _log_rows(self.path) if int(r["step"]) <= resume_step]
        self.current = self.path if self.promoted else self.path.with_name(f".{self.path.stem}.{run_id}.csv")
        # Rewritten whole beside the log and renamed over it: a crash leaves the old log.
        tmp = self.current.with_name(self.current.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, LOG_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, self.current)
        self._open()

    def _open(self) -> None:
        self.file = open(self.current, "a", newline="")
        self.writer = csv.DictWriter(self.file, LOG_FIELDS, extrasaction="ignore")

    def write(self, row: dict) -> None:
        self.writer.writerow({**row, "run": self.run_id})
        self.file.flush()

    def promote(self) -> None:
        """The run's first checkpoint is written: its log becomes ``log.csv``, and what is left
        of a run it replaces (``--overwrite``: that run's best checkpoint and plots) goes."""
        if self.promoted:
            return
        self.file.close()
        os.replace(self.current, self.path)
        self.current, self.promoted = self.path, True
        self._open()
        best = Path(self.paths["best"])
        if best.exists() and load_checkpoint(best).get("run_id") != self.run_id:
            best.unlink()
        for key in ("curves", "attention"):
            with contextlib.suppress(FileNotFoundError, KeyError):
                Path(self.paths[key]).unlink()

    def close(self) -> None:
        """Close the file; a log never promoted (no checkpoint) is removed with nothing to resume."""
        self.file.close()
        if not self.promoted:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.current)
