r"""Data-parallel training on ``torch.distributed``, set up from ``torchrun``'s environment.

graphattn does not launch processes itself: ``torchrun`` (or any launcher that sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``) starts one process per
device, :func:`init` joins them into a process group (gloo on CPU, nccl on GPUs), and
``torch.nn.parallel.DistributedDataParallel`` averages the gradients. Without those variables
:func:`init` returns a one-process :class:`Context` and nothing else changes.

Every rank builds the same global batches and takes its share of each (see
:class:`~graphattn.data.LengthBucketSampler`), so a step of ``W`` processes sees exactly the
examples a step of one process with ``W`` times the batch sees. A failed or silent rank ends the
others with a :class:`DistributedError` after ``timeout`` seconds instead of a hang.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Context", "DistributedError", "init", "current", "shutdown", "script", "resolve_device", "guard", "wrap", "no_sync",
           "all_sum", "gather_shards", "gather_tensors", "barrier"]

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """Another rank died or did not answer in time."""


@dataclass(frozen=True)
class Context:
    """Where this process stands: its rank among ``world_size`` and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    timeout: float = 600.0  # seconds a collective waits for the other ranks
    owns_group: bool = False  # init created the process group, so shutdown destroys it

    @property
    def is_main(self) -> bool:
        """Rank 0, the one process that writes logs, plots and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """``"cpu"``, ``"cuda"`` (the ``local_rank``-th GPU) or ``"auto"`` (a GPU if there is one)."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but torch sees no GPU (use --device cpu or auto)")
    if local_rank >= torch.cuda.device_count():
        raise ValueError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs on this machine")
    return torch.device("cuda", local_rank)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init(device: str = "auto", timeout: float = 600.0) -> Context:
    """Join the process group described by torchrun's environment variables (if any).

    ``WORLD_SIZE`` unset or 1: a single process, no group. Otherwise the group is created with
    the nccl backend when computing on GPUs and gloo on CPUs, unless the caller already made one
    (then it is used as it is). ``timeout`` bounds every collective, so a rank that crashed or
    hangs ends the others with an error instead of blocking them forever.
    """
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    world_size, rank, local_rank = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if dist.is_available() and dist.is_initialized():
        world_size, rank = dist.get_world_size(), dist.get_rank()
        return Context(rank, world_size, local_rank, resolve_device(device, local_rank), timeout, owns_group=False)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need WORLD_SIZE >= 1 and 0 <= RANK < WORLD_SIZE, got {world_size} and {rank}")
    torch_device = resolve_device(device, local_rank)
    if world_size == 1:
        return Context(0, 1, local_rank, torch_device, timeout)
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={world_size} but {missing} not set: launch with torchrun")
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    backend = "nccl" if torch_device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=timeout),
                            device_id=torch_device if backend == "nccl" else None)
    return Context(rank, world_size, local_rank, torch_device, timeout, owns_group=True)


def current(device: str = "cpu") -> Context:
    """The :class:`Context` of the process group already made (by :func:`init`), or one process."""
    if dist.is_available() and dist.is_initialized():
        local_rank = _env_int("LOCAL_RANK", 0)
        return Context(dist.get_rank(), dist.get_world_size(), local_rank, resolve_device(device, local_rank))
    return Context(device=resolve_device(device))


def gather_tensors(tensor: Tensor, ctx: Context) -> Tensor:
    """The ranks' ``tensor`` s (any first dimension) concatenated in rank order, on every rank."""
    if not ctx.distributed:
        return tensor
    parts: list = [None] * ctx.world_size
    dist.all_gather_object(parts, tensor.cpu())
    return torch.cat(parts).to(tensor.device)


def shutdown(ctx: Context) -> None:
    """Destroy the process group if :func:`init` created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def script(device: str = "cpu", timeout: float = 600.0) -> Iterator[Context]:
    """A script's body under torchrun: join the group, let only rank 0 print, leave the group.

    ``with distributed.script() as ctx: main(write=ctx.is_main)`` runs a script unchanged in
    one process or in ``W`` (whose :func:`~graphattn.graph_bench.fit` calls then train
    together); the script writes its files only where ``ctx.is_main``.
    """
    ctx = init(device, timeout)
    try:
        with guard(ctx), open(os.devnull, "w") as devnull, \
                contextlib.redirect_stdout(sys.stdout if ctx.is_main else devnull):
            yield ctx
    finally:
        shutdown(ctx)


@contextlib.contextmanager
def guard(ctx: Context) -> Iterator[None]:
    """Turn a failed collective into a :class:`DistributedError` that says what probably happened."""
    try:
        yield
    except DistributedError:
        raise
    except RuntimeError as e:  # gloo/nccl raise RuntimeError (DistBackendError is one) on a lost peer or timeout
        if not ctx.distributed or not _looks_distributed(e):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DistributedError(
            f"rank {ctx.rank} of {ctx.world_size}: lost the other processes (one crashed, was killed, or did "
            f"not answer within the {ctx.timeout:g} s timeout): {first}") from e


def _looks_distributed(e: RuntimeError) -> bool:
    if isinstance(e, getattr(dist, "DistBackendError", ())):
        return True
    text = str(e).lower()
    return any(word in text for word in ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket"))


def all_sum(values: Sequence[float], ctx: Context) -> list[float]:
    """The sums of ``values`` over all ranks (float64, one collective); ``values`` alone in one process."""
    if not ctx.distributed:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device=ctx.device if ctx.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def gather_shards(shard: list, ctx: Context) -> list:
    """Undo ``items[rank::world_size]``: every rank gets the whole list back in its order."""
    if not ctx.distributed:
        return list(shard)
    shards: list = [None] * ctx.world_size
    dist.all_gather_object(shards, shard)
    out = [None] * sum(len(s) for s in shards)
    for rank, s in enumerate(shards):
        out[rank::ctx.world_size] = s
    return out


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()


def wrap(model: nn.Module, ctx: Context) -> nn.Module:
    """``DistributedDataParallel(model)`` across the ranks, or ``model`` itself in one process."""
    if not ctx.distributed:
        return model
    device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def no_sync(model: nn.Module, sync: bool):
    """DDP's ``no_sync()`` when ``sync`` is False (accumulating), else a null context."""
    if sync or not isinstance(model, nn.parallel.DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()
