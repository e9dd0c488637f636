r"""Positional information as a property of the path graph a sequence is.

The position of a node on its path (:func:`positional_encoding` of
:func:`~graphattn.utils.local_positions`) and the signed path distance ``i - j`` of an
attention edge (:func:`relative_positions`, :class:`RelativePositionBias`). On a general graph
the same relative bias is the shortest-path distance (see :mod:`graphattn.transforms`).

Example::

    >>> import torch
    >>> from graphattn.utils import local_positions
    >>> ptr = torch.tensor([0, 3, 5])
    >>> positional_encoding(local_positions(ptr), 4).shape
    torch.Size([5, 4])
    >>> relative_positions(torch.tensor([[0, 1, 3], [2, 2, 4]]), ptr)
    tensor([2, 1, 1])
"""
from __future__ import annotations

from numbers import Real
from typing import Optional, Union

import torch
from torch import Tensor, nn

from graphattn.utils.batch import layouts
from graphattn.utils.checks import PtrLike, check_edge_index, check_index_tensor, check_int, check_ptr

__all__ = ["positional_encoding", "relative_positions", "relative_position_buckets", "RelativePositionBias"]


def positional_encoding(
    length_or_positions: Union[int, Tensor],
    d_model: int,
    base: float = 10000.0,
    dtype: Optional[torch.dtype] = None,
    device: Optional[torch.device] = None,
) -> Tensor:
    r"""Sinusoidal positional encoding of "Attention Is All You Need".

    .. math::
        PE_{p, 2k} = \sin(p / \mathrm{base}^{2k / d}), \qquad
        PE_{p, 2k + 1} = \cos(p / \mathrm{base}^{2k / d})

    With an odd ``d_model`` the last column is a sine. For a flat batch use
    ``positional_encoding(local_positions(ptr), d_model)``.

    Args:
        length_or_positions (int or Tensor): ``n`` (positions ``0 .. n - 1``) or a tensor of
            positions ``[N]`` (any shape ``[*]``; integer or real).
        d_model (int): encoding size ``d >= 1``.
        base (float, optional): wavelength base. (default: :obj:`10000.0`)
        dtype (torch.dtype, optional): output dtype (default: torch's default dtype).
        device (torch.device, optional): output device (default: that of the positions).

    Shapes:
        - **output:** ``(n, d)`` or ``(*, d)``
    """
    d_model = check_int("d_model", d_model, 1)
    if isinstance(base, bool) or not isinstance(base, Real) or base <= 0:
        raise ValueError(f"base must be a positive number, got {base!r}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if isinstance(length_or_positions, Tensor):
        pos = length_or_positions
        if pos.dtype == torch.bool or pos.dtype.is_complex:
            raise TypeError(f"length_or_positions must hold integer or real positions, got {pos.dtype}")
        pos = pos.to(device if device is not None else pos.device)
    else:
        n = check_int("length_or_positions", length_or_positions, 0)
        pos = torch.arange(n, device=device)
    # float32 angles unless float64 is asked for (MPS has no float64).
    work = torch.float64 if dtype == torch.float64 else torch.float32
    two_k = torch.arange(0, d_model, 2, dtype=work, device=pos.device)  # (ceil(d / 2),)
    angle = pos.to(work).unsqueeze(-1) * base ** (-two_k / d_model)  # (*, ceil(d / 2))
    pe = torch.empty(*pos.shape, d_model, dtype=work, device=pos.device)
    pe[..., 0::2] = angle.sin()
    pe[..., 1::2] = angle[..., : d_model // 2].cos()
    return pe.to(dtype)


def relative_positions(edge_index: Tensor, ptr: PtrLike, key_ptr: Optional[PtrLike] = None) -> Tensor:
    r"""Signed path distance ``i - j`` (local query position minus local key position) per edge.

    Args:
        edge_index (LongTensor): ``[2, E]``, row 0 key ``j``, row 1 query ``i``.
        ptr (LongTensor): offsets of the queries ``[B + 1]``.
        key_ptr (LongTensor, optional): offsets of the keys ``[B + 1]`` for cross-attention
            (default: ``ptr``).

    Shapes:
        - **output:** ``(E,)``, LongTensor
    """
    edge_index = check_edge_index(edge_index)
    ptr = check_ptr(ptr).to(edge_index.device)
    if key_ptr is not None:
        key_ptr = check_ptr(key_ptr, "key_ptr").to(edge_index.device)
    q, k = layouts(ptr, key_ptr)
    src, dst = edge_index
    if edge_index.numel() and (int(src.max()) >= k.num_nodes or int(dst.max()) >= q.num_nodes):
        raise ValueError(
            f"edge_index points outside the batch: keys must be < {k.num_nodes} "
            f"and queries < {q.num_nodes}, got max {int(src.max())} and {int(dst.max())}"
        )
    # A distance between positions of different examples means nothing: catch it here.
    if bool((k.batch[src] != q.batch[dst]).any()):
        raise ValueError("edge_index has edges between different examples of ptr / key_ptr")
    return q.pos[dst] - k.pos[src]


def relative_position_buckets(rel: Tensor, max_distance: int) -> Tensor:
    r"""Clip signed distances to ``[-max_distance, max_distance]`` and shift them to
    ``[0, 2 * max_distance]``, ready to index an ``nn.Embedding(2 * max_distance + 1, H)``.

    Shapes:
        - **input:** ``rel: (E,)``
        - **output:** ``(E,)``, LongTensor
    """
    rel = check_index_tensor("rel", rel, "[E]")
    # max_distance 0 would give every edge the same bias, which the softmax cancels.
    max_distance = check_int("max_distance", max_distance, 1)
    return rel.clamp(-max_distance, max_distance) + max_distance


class RelativePositionBias(nn.Module):
    r"""A learned per-head attention bias for each clipped signed path distance ``i - j``
    (Shaw et al., "Self-Attention with Relative Position Representations", as a scalar bias).

    .. math::
        b_{ij}^{(h)} = E[\mathrm{clip}(i - j, -m, m) + m, h]

    Initialised to zero, so a layer starts out as if it had no bias.

    Args:
        num_heads (int): number of heads ``H``.
        max_distance (int): largest distance ``m`` told apart; farther ones share a bucket.

    Shapes:
        - **input:** ``edge_index: (2, E)``, ``ptr: (B + 1,)``, ``key_ptr: (B + 1,)``
        - **output:** ``(E, H)``
    """

    def __init__(self, num_heads: int, max_distance: int):
        super().__init__()
        self.num_heads = check_int("num_heads", num_heads, 1)
        self.max_distance = check_int("max_distance", max_distance, 1)
        self.embedding = nn.Embedding(2 * self.max_distance + 1, self.num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.embedding.weight)

    def forward(self, edge_index: Tensor, ptr: PtrLike, key_ptr: Optional[PtrLike] = None) -> Tensor:
        rel = relative_positions(edge_index, ptr, key_ptr)
        return self.embedding(relative_position_buckets(rel, self.max_distance))  # (E, H)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_heads={self.num_heads}, max_distance={self.max_distance})"
