"""Trading time for memory in backward passes."""
from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

from graphattn.utils.checks import eager_only

__all__ = ["recomputed_in_backward"]


def recomputed_in_backward(tensors: Sequence[Tensor], recipes: Sequence[Optional[Callable[[], Tensor]]]):
    """A context in which operations that save any of ``tensors`` for their backward keep its
    recipe instead, and the backward pass calls the recipe (under ``no_grad``) to get it again.

    Selective activation checkpointing through :func:`torch.autograd.graph.saved_tensors_hooks`,
    for tensors cheap to recompute and large to keep (an attention layer's projections). A
    recipe of None keeps its tensor. The caller must not modify the recipes' inputs in place
    before the backward pass (autograd's version check does not see them). Eager only: under
    torch.compile the context does nothing, since the compiler plans its own memory.
    """
    if not (eager_only() and torch.is_grad_enabled()):
        return contextlib.nullcontext()
    by_storage = {(t.data_ptr(), tuple(t.shape)): recipe for t, recipe in zip(tensors, recipes) if recipe is not None}

    def pack(tensor: Tensor):
        recipe = by_storage.get((tensor.data_ptr(), tuple(tensor.shape))) if tensor.numel() else None
        return tensor if recipe is None else recipe

    def unpack(packed):
        if isinstance(packed, Tensor):
            return packed
        with torch.no_grad():
            return packed()

    return torch.autograd.graph.saved_tensors_hooks(pack, unpack)
