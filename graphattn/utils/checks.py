"""Argument checks shared by every layer of the library.

Each raises a ``TypeError`` or ``ValueError`` that names the argument, says what was expected
and what was given, as ``torch.nn`` does (``"embed_dim (10) must be divisible by num_heads (3)"``).
"""
from __future__ import annotations

from numbers import Integral, Real
from typing import Optional, Sequence, Union

import torch
from torch import Tensor
from torch_geometric.data.data import BaseData

__all__ = ["PtrLike", "check_int", "check_float", "check_ptr", "check_edge_index", "check_index_tensor",
           "check_choice", "check_dtype", "check_graph_data"]

#: offsets given as a LongTensor ``[B + 1]`` or a list of ints
PtrLike = Union[Tensor, Sequence[int]]


def check_int(name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def check_float(name: str, value, low: float, high: float, high_open: bool = False) -> float:
    """``value`` as a ``float`` if it is a real number in ``[low, high]`` (``[low, high)``)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    inside = low <= value < high if high_open else low <= value <= high
    if not inside:
        raise ValueError(f"{name} must be in [{low}, {high}{')' if high_open else ']'}, got {value!r}")
    return float(value)


def check_choice(name: str, value, choices: Sequence) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")


def check_index_tensor(name: str, value, shape: str) -> Tensor:
    """An integer tensor as ``torch.long``; ``shape`` is only used in the message."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a LongTensor {shape}, got {type(value).__name__}")
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (torch.long), got dtype {value.dtype}")
    return value.long()


def check_ptr(ptr: PtrLike, name: str = "ptr", num_rows: Optional[int] = None) -> Tensor:
    """Validate CSR offsets and return them as a LongTensor ``[B + 1]``.

    ``ptr`` must be 1-D, start at 0 and be non-decreasing (empty examples are allowed); with
    ``num_rows`` its last entry must equal it. The checks read values, so they synchronise
    with the device; compiled and exported code skips them (see :func:`eager_only`).
    """
    if not isinstance(ptr, Tensor):
        if isinstance(ptr, (list, tuple)) and all(isinstance(v, Integral) and not isinstance(v, bool) for v in ptr):
            ptr = torch.tensor(list(ptr), dtype=torch.long)
        else:
            raise TypeError(f"{name} must be a LongTensor [B + 1] of offsets, got {type(ptr).__name__}")
    if ptr.dtype.is_floating_point or ptr.dtype.is_complex or ptr.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (torch.long), got dtype {ptr.dtype}")
    if ptr.dim() != 1 or ptr.numel() < 1:
        raise ValueError(f"{name} must be 1-D of shape [B + 1] with B >= 0, got shape {tuple(ptr.shape)}")
    ptr = ptr.long()
    if eager_only():
        if int(ptr[0]) != 0:
            raise ValueError(f"{name} must start at 0, got {int(ptr[0])}")
        if ptr.numel() > 1 and bool((ptr[1:] < ptr[:-1]).any()):
            raise ValueError(f"{name} must be non-decreasing, got {ptr.tolist()[:20]}")
        if num_rows is not None and int(ptr[-1]) != num_rows:
            raise ValueError(f"{name}[-1] ({int(ptr[-1])}) must equal the number of rows ({num_rows})")
    return ptr


def check_edge_index(edge_index, name: str = "edge_index", num_keys: Optional[int] = None,
                     num_queries: Optional[int] = None, nodes: str = "") -> Tensor:
    """A LongTensor ``[2, E]`` of node indices; with the node counts, also checks the bounds
    (``nodes`` says where the counts come from, for the message)."""
    if not isinstance(edge_index, Tensor):
        raise TypeError(f"{name} must be a LongTensor [2, E], got {type(edge_index).__name__}")
    if edge_index.dtype != torch.long:
        raise TypeError(f"{name} must have dtype torch.long, got {edge_index.dtype}")
    if edge_index.dim() != 2 or edge_index.size(0) != 2:
        raise ValueError(f"{name} must have shape [2, E], got {tuple(edge_index.shape)}")
    if eager_only() and edge_index.numel():
        if int(edge_index.min()) < 0:
            raise ValueError(f"{name} has negative node indices")
        too_far = (num_keys is not None and int(edge_index[0].max()) >= num_keys) or (
            num_queries is not None and int(edge_index[1].max()) >= num_queries)
        if too_far:
            raise ValueError(f"{name} points outside the nodes: keys (row 0) must be < {num_keys}, "
                             f"queries (row 1) < {num_queries}{nodes}")
    return edge_index


def check_dtype(name: str, value: Tensor, expected: torch.dtype, owner: str = "the layer's parameters") -> None:
    """Raise a ``TypeError`` naming ``name`` and both dtypes unless ``value`` has dtype ``expected``
    (what a matrix product with ``owner`` needs); under autocast on its device, which casts both
    sides of a product from the 16- and 32-bit float types (not float64), those mixes are allowed."""
    autocast = value.dtype in (torch.float32, torch.float16, torch.bfloat16) and expected in (
        torch.float32, torch.float16, torch.bfloat16) and torch.is_autocast_enabled(value.device.type)
    if value.dtype != expected and not autocast:
        other = f" or module.to({value.dtype})" if value.is_floating_point() else ""
        raise TypeError(f"{name} has dtype {value.dtype} but {owner} have dtype {expected}: convert it "
                        f"({name}.to({expected})){other}, or run under torch.autocast")


def check_graph_data(data, name: str = "data"):
    """``data`` if it is a PyG ``Data``/``Batch`` with an ``edge_index`` [2, E] of its nodes; a
    ``TypeError``/``ValueError`` naming what is wrong otherwise."""
    if not isinstance(data, BaseData):
        raise TypeError(f"{name} must be a torch_geometric Data or Batch, got {type(data).__name__}")
    if getattr(data, "edge_index", None) is None:
        raise ValueError(f"{name} has no edge_index: a graph transform needs {name}.edge_index [2, E]")
    num_nodes = data.num_nodes
    check_edge_index(data.edge_index, f"{name}.edge_index", num_nodes, num_nodes,
                     f" ({name}.num_nodes, or the rows of {name}.x)")
    return data


def eager_only() -> bool:
    """Whether checks that read tensor values may run: not while torch.compile or torch.export
    trace, where such a read is a graph break or a data-dependent guard."""
    return not torch.compiler.is_compiling()
