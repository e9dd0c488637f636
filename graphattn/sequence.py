r"""Sequences as path graphs: padded token batches to flat ``ptr`` batches and back.

A batch of ``B`` sequences is a batch of path graphs laid out by ``ptr`` (LongTensor
``[B + 1]``, PyG's CSR offsets): example ``b`` owns the rows ``ptr[b]:ptr[b + 1]`` of a flat
``[N, d]`` tensor, in order. Positional information is a property of that graph: the position
of a row on its path (:func:`local_positions`, :func:`positional_encoding`) and the signed path
distance ``i - j`` of an attention edge (:func:`relative_positions`, :class:`RelativePositionBias`).

Example::

    >>> import torch
    >>> from graphattn.sequence import to_flat, to_padded, local_positions
    >>> x = torch.tensor([[1, 2, 3], [4, 5, 0]])
    >>> x_flat, ptr = to_flat(x, lengths=torch.tensor([3, 2]))
    >>> x_flat, ptr
    (tensor([1, 2, 3, 4, 5]), tensor([0, 3, 5]))
    >>> local_positions(ptr)
    tensor([0, 1, 2, 0, 1])
    >>> to_padded(x_flat, ptr)[1]        # key_padding_mask, True = padding
    tensor([[False, False, False],
            [False, False,  True]])
"""
from __future__ import annotations

from numbers import Real
from typing import Optional, Union

import torch
from torch import Tensor, nn
from torch_geometric.utils import cumsum, to_dense_batch

from graphattn.patterns import PtrLike, _check_edge_index, _check_int, _layouts, check_ptr

__all__ = [
    "lengths_to_ptr",
    "ptr_to_lengths",
    "ptr_to_batch",
    "local_positions",
    "to_flat",
    "to_padded",
    "positional_encoding",
    "relative_positions",
    "relative_position_buckets",
    "RelativePositionBias",
]


def _check_int_tensor(name: str, value, shape: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a LongTensor {shape}, got {type(value).__name__}")
    if value.dtype.is_floating_point or value.dtype.is_complex or value.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (torch.long), got dtype {value.dtype}")
    return value.long()


def lengths_to_ptr(lengths: Tensor) -> Tensor:
    """Offsets ``[B + 1]`` of a batch with the given example lengths ``[B]`` (>= 0)."""
    lengths = _check_int_tensor("lengths", lengths, "[B]")
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D of shape [B], got shape {tuple(lengths.shape)}")
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"lengths must be >= 0, got min {int(lengths.min())}")
    return cumsum(lengths)


def ptr_to_lengths(ptr: PtrLike) -> Tensor:
    """Example lengths ``[B]`` of the offsets ``ptr: [B + 1]``."""
    return check_ptr(ptr).diff()


def ptr_to_batch(ptr: PtrLike) -> Tensor:
    """Example index of each row, ``[N]`` (PyG's ``batch`` vector) of ``ptr: [B + 1]``."""
    ptr = check_ptr(ptr)
    lengths = ptr.diff()
    examples = torch.arange(lengths.numel(), device=ptr.device)
    # output_size avoids a second device sync inside repeat_interleave.
    return torch.repeat_interleave(examples, lengths, output_size=int(ptr[-1]))


def local_positions(ptr: PtrLike) -> Tensor:
    """Position of each row inside its example (``0 .. length - 1``), ``[N]``."""
    ptr = check_ptr(ptr)
    return torch.arange(int(ptr[-1]), device=ptr.device) - ptr[ptr_to_batch(ptr)]


def to_flat(
    x: Tensor,
    key_padding_mask: Optional[Tensor] = None,
    lengths: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    r"""Padded batch to a flat batch of path graphs (the real positions, in order).

    Give at most one of ``key_padding_mask`` and ``lengths``; with neither, every position is
    real. With ``lengths``, padding is a suffix of each row. With ``key_padding_mask`` padding
    may sit anywhere (left padding too): the real positions of a row keep their order and
    become consecutive nodes of its path, so ``ptr`` counts real positions only.

    Args:
        x (Tensor): padded features ``[B, n, d]`` or token ids ``[B, n]``.
        key_padding_mask (BoolTensor, optional): ``[B, n]``, True = padding (as in
            ``torch.nn.MultiheadAttention``). (default: :obj:`None`)
        lengths (LongTensor, optional): real positions per row ``[B]``, ``0 <= lengths <= n``.
            (default: :obj:`None`)

    Returns:
        ``(x_flat, ptr)``.

    Shapes:
        - **input:** ``x: (B, n, d)`` or ``(B, n)``
        - **output:** ``x_flat: (N, d)`` or ``(N,)``, ``ptr: (B + 1,)``
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a Tensor [B, n, d] or [B, n], got {type(x).__name__}")
    if x.dim() not in (2, 3):
        raise ValueError(f"x must be [B, n, d] or [B, n] (token ids), got shape {tuple(x.shape)}")
    if key_padding_mask is not None and lengths is not None:
        raise ValueError("give key_padding_mask or lengths, not both")
    B, n = x.shape[:2]
    if key_padding_mask is None and lengths is None:
        return x.flatten(0, 1), torch.arange(B + 1, device=x.device) * n
    if lengths is not None:
        lengths = _check_int_tensor("lengths", lengths, "[B]").to(x.device)
        if tuple(lengths.shape) != (B,):
            raise ValueError(f"lengths must have shape [B] = ({B},), got {tuple(lengths.shape)}")
        if B and (int(lengths.min()) < 0 or int(lengths.max()) > n):
            raise ValueError(
                f"lengths must lie in [0, n = {n}], got min {int(lengths.min())}, "
                f"max {int(lengths.max())}"
            )
        real = torch.arange(n, device=x.device) < lengths.unsqueeze(1)  # (B, n)
    else:
        if not isinstance(key_padding_mask, Tensor):
            raise TypeError(
                f"key_padding_mask must be a BoolTensor [B, n], got {type(key_padding_mask).__name__}"
            )
        if key_padding_mask.dtype != torch.bool:
            raise TypeError(
                f"key_padding_mask must have dtype torch.bool (True = padding), "
                f"got {key_padding_mask.dtype}"
            )
        if key_padding_mask.shape != x.shape[:2]:
            raise ValueError(
                f"key_padding_mask must have x's shape [B, n] = {tuple(x.shape[:2])}, "
                f"got {tuple(key_padding_mask.shape)}"
            )
        real = ~key_padding_mask.to(x.device)
    # Boolean indexing walks the rows in row-major order, so real positions keep their order.
    return x[real], cumsum(real.sum(1))


def to_padded(
    x_flat: Tensor,
    ptr: PtrLike,
    max_len: Optional[int] = None,
    fill_value: float = 0.0,
) -> tuple[Tensor, Tensor]:
    r"""Flat batch of path graphs to a right-padded batch (the inverse of :func:`to_flat`).

    Args:
        x_flat (Tensor): rows of all examples ``[N, *]``.
        ptr (LongTensor): offsets ``[B + 1]`` with ``ptr[-1] == N``.
        max_len (int, optional): padded length ``n``, at least the longest example
            (default: the longest example).
        fill_value (float, optional): value of the padding positions. (default: :obj:`0.0`)

    Returns:
        ``(x, key_padding_mask)``; the mask is True = padding (as in ``nn.MultiheadAttention``).

    Shapes:
        - **input:** ``x_flat: (N, *)``, ``ptr: (B + 1,)``
        - **output:** ``x: (B, n, *)``, ``key_padding_mask: (B, n)``
    """
    if not isinstance(x_flat, Tensor):
        raise TypeError(f"x_flat must be a Tensor [N, *], got {type(x_flat).__name__}")
    if x_flat.dim() < 1:
        raise ValueError(f"x_flat must be [N, *] with at least 1 dim, got shape {tuple(x_flat.shape)}")
    ptr = check_ptr(ptr).to(x_flat.device)
    if int(ptr[-1]) != x_flat.size(0):
        raise ValueError(f"ptr[-1] ({int(ptr[-1])}) must equal x_flat.size(0) ({x_flat.size(0)})")
    lengths = ptr.diff()
    longest = int(lengths.max()) if lengths.numel() else 0
    if max_len is None:
        max_len = longest
    elif _check_int("max_len", max_len, 0) < longest:
        # to_dense_batch would silently drop the rows past max_len.
        raise ValueError(f"max_len ({max_len}) must be >= the longest example ({longest})")
    out, real = to_dense_batch(
        x_flat, ptr_to_batch(ptr), fill_value, max_num_nodes=max_len, batch_size=lengths.numel()
    )
    return out, ~real


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
    d_model = _check_int("d_model", d_model, 1)
    if isinstance(base, bool) or not isinstance(base, Real) or base <= 0:
        raise ValueError(f"base must be a positive number, got {base!r}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if isinstance(length_or_positions, Tensor):
        pos = length_or_positions
        if pos.dtype == torch.bool or pos.dtype.is_complex:
            raise TypeError(f"length_or_positions must hold integer or real positions, got {pos.dtype}")
        pos = pos.to(device if device is not None else pos.device)
    else:
        n = _check_int("length_or_positions", length_or_positions, 0)
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
    edge_index = _check_edge_index(edge_index)
    ptr = check_ptr(ptr).to(edge_index.device)
    if key_ptr is not None:
        key_ptr = check_ptr(key_ptr, "key_ptr").to(edge_index.device)
    q, k = _layouts(ptr, key_ptr)
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
    rel = _check_int_tensor("rel", rel, "[E]")
    # max_distance 0 would give every edge the same bias, which the softmax cancels.
    max_distance = _check_int("max_distance", max_distance, 1)
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
        self.num_heads = _check_int("num_heads", num_heads, 1)
        self.max_distance = _check_int("max_distance", max_distance, 1)
        self.embedding = nn.Embedding(2 * self.max_distance + 1, self.num_heads)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.zeros_(self.embedding.weight)

    def forward(self, edge_index: Tensor, ptr: PtrLike, key_ptr: Optional[PtrLike] = None) -> Tensor:
        rel = relative_positions(edge_index, ptr, key_ptr)
        return self.embedding(relative_position_buckets(rel, self.max_distance))  # (E, H)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(num_heads={self.num_heads}, max_distance={self.max_distance})"
