r"""Training checkpoints that save atomically, load safely and restore every random state.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so it loads with
``torch.load(path, weights_only=True)`` (no pickled code runs on load)::

    {"format": "graphattn-checkpoint", "version": 2, "step": int, "model": state_dict,
     "optimizer": state_dict, "scheduler": state_dict, "rng": rng_state() of rank 0,
     "rng_ranks": [rng_state() of each rank], "data": {"epoch": int, "batch": int,
     "global_batch": {"batch_size", "max_tokens"}, "world_size": int}, "config": dict,
     "vocab": {"src": tokenizer, "tgt": tokenizer} or, for a language model, {"text": tokenizer},
     "best": {"metric": "bleu" or "perplexity", "value": float}, "valid": dict}

where a tokenizer is ``{"kind": str, "json": str}``, its Hugging Face JSON
(:meth:`~graphattn.text.tokenizer.Tokenizer.to_dict`). Version 1 (before subword tokenizers and
language models) stored word vocabularies ``{"tokens": [...]}`` and ``"best_bleu"``; it still
loads, and tokenizes as it did.

:func:`save_checkpoint` writes a temporary file in the target's directory and renames it over
the target with ``os.replace`` (atomic on POSIX and Windows), so a crash while saving leaves the
previous checkpoint as it was. :func:`load_checkpoint` turns every way a file can be wrong
(truncated, random bytes, another program's torch file) into a ``ValueError`` naming the path.
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Union

import torch

__all__ = ["FORMAT", "VERSION", "READABLE_VERSIONS", "REQUIRED_KEYS", "save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state"]

FORMAT, VERSION = "graphattn-checkpoint", 2
#: versions this release reads
READABLE_VERSIONS = (1, 2)
REQUIRED_KEYS = ("format", "version", "step", "model", "optimizer", "scheduler", "rng", "data", "config", "vocab")
PathLike = Union[str, os.PathLike]


def save_checkpoint(payload: dict, path: PathLike) -> Path:
    """Write ``payload`` to ``path`` atomically: all of it or, after a crash, the old file untouched.

    The temporary file lives in the same directory, because ``os.replace`` is only atomic within
    one file system, and is created with the permissions the umask gives (mode ``0o666 & ~umask``); it is fsynced before the rename so a power cut cannot leave a renamed but
    empty file. On any error the temporary file is removed and the error re-raised.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: it creates files of mode 0600 whatever the umask, and a checkpoint
    # in a shared folder must be readable as the umask allows, as any file the user writes.
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def load_checkpoint(path: PathLike) -> dict:
    """The checkpoint dict at ``path``, loaded with ``weights_only=True`` and checked.

    Raises ``FileNotFoundError`` if there is no file, and ``ValueError`` naming the path and the
    problem if the file is unreadable (truncated, corrupt, not a torch file, holds objects other
    than tensors and plain containers) or is not a graphattn checkpoint of a version it reads.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{os.fspath(path)!r} is a directory, not a checkpoint file (a run's folder holds "
                                f"best.pt and last.pt)")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {os.fspath(path)!r}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError... for bad files
        raise ValueError(f"{os.fspath(path)!r} is not a readable checkpoint: {_why_unreadable(path, e)}") from None
    if not isinstance(ckpt, dict):
        raise ValueError(f"{os.fspath(path)!r} is not a graphattn checkpoint: it holds a {type(ckpt).__name__}, not a dict")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise ValueError(f"{os.fspath(path)!r} is not a graphattn checkpoint: missing keys {missing}")
    if ckpt["format"] != FORMAT or ckpt["version"] not in READABLE_VERSIONS:
        raise ValueError(f"{os.fspath(path)!r} has format {ckpt['format']!r} version {ckpt['version']!r}, "
                         f"expected {FORMAT!r} version {' or '.join(map(str, READABLE_VERSIONS))} "
                         f"(a newer graphattn wrote it?)")
    return ckpt


def _why_unreadable(path: Path, error: Exception) -> str:
    """A short reason ``torch.load`` failed: its own messages run to hundreds of characters, and
    for any file that is not a torch pickle they advise ``weights_only=False``, which would run
    whatever code the file holds."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # torch's zip archive, or its legacy pickle
        return "not a torch file (random bytes or another format)"
    text = str(error)
    if "WeightsUnpickler error:" in text:  # the reason sits between torch's advice and its link
        reason = " ".join(text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0].split())
        if reason.startswith("Unsupported global"):
            return f"it holds objects that a safe load refuses ({reason.split('. ')[0][:160]})"
        return f"truncated or corrupt ({reason[:120]})"
    lines = [line.strip() for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return f"truncated or corrupt ({(lines[0] if lines else type(error).__name__)[:120]})"


def rng_state() -> dict:
    """The states of torch's generators (CPU, and each GPU once CUDA is initialised), as tensors.

    Training draws only from torch (dropout, scheduled sampling, batch order through its own
    generator), so this is all a resumed run needs to continue exactly.
    """
    # Dropout on a GPU draws from the GPU's generator: without its state a resumed run differs.
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned (the Python and numpy states that version-1
    checkpoints of earlier releases also hold are not needed, and not touched)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available():
        for device, cuda_state in enumerate(cuda[:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device)
