r"""Batches laid out by ``ptr``: offsets, per-node example and position, padded <-> flat.

A batch of ``B`` examples (sequences or graphs) is laid out by ``ptr`` (LongTensor ``[B + 1]``,
PyG's CSR offsets): example ``b`` owns the rows ``ptr[b]:ptr[b + 1]`` of a flat ``[N, d]``
tensor. ``batch`` (``[N]``, PyG's vector) names each row's example, ``local_positions`` its
place inside it. A sequence is a path graph, so a padded ``[B, n, d]`` batch becomes a flat
one with :func:`to_flat` and comes back with :func:`to_padded`.

Example::

    >>> import torch
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

from typing import NamedTuple, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.utils import cumsum, to_dense_batch

from graphattn.utils.checks import PtrLike, check_index_tensor, check_int, check_ptr

__all__ = ["Layout", "layouts", "lengths_to_ptr", "ptr_to_lengths", "ptr_to_batch", "batch_to_ptr",
           "local_positions", "graph_layout", "pack_sequences", "to_flat", "to_padded"]


class Layout(NamedTuple):
    """A batch layout and what every node needs from it, computed once per call.

    ``graph`` is the batch's own graph (``edge_index [2, E]`` in global numbering) when it has
    one: graph patterns (``graph``, ``khop``) read it; sequences have none.
    """

    ptr: Tensor  # [B + 1]
    sizes: Tensor  # [B] nodes of each example
    batch: Tensor  # [N] example of each node
    pos: Tensor  # [N] position of each node inside its example
    graph: Optional[Tensor] = None  # [2, E] the batch's graph edges, if any

    @property
    def num_nodes(self) -> int:
        return int(self.ptr[-1])

    @staticmethod
    def of(ptr: Tensor, graph: Optional[Tensor] = None, num_nodes: Optional[int] = None) -> "Layout":
        """The layout of validated offsets ``ptr`` (and the batch's graph, if any).

        ``num_nodes`` (``ptr[-1]``) may be given when known, so that traced code reads no value.
        """
        sizes = ptr.diff()
        batch = ptr_to_batch(ptr, check=False, num_nodes=num_nodes)
        return Layout(ptr, sizes, batch, torch.arange(batch.numel(), device=ptr.device) - ptr[batch], graph)


def layouts(ptr: PtrLike, key_ptr: Optional[PtrLike] = None, graph: Optional[Tensor] = None,
            num_nodes: Optional[tuple[int, int]] = None) -> tuple[Layout, Layout]:
    """The query and key layouts of a batch; the same object twice for self-attention.

    ``num_nodes``: ``(queries, keys)`` when known (see :meth:`Layout.of`).
    """
    ptr = check_ptr(ptr, "ptr")
    query = Layout.of(ptr, graph, None if num_nodes is None else num_nodes[0])
    if key_ptr is None:
        return query, query
    key_ptr = check_ptr(key_ptr, "key_ptr").to(ptr.device)
    if key_ptr.numel() != ptr.numel():
        raise ValueError(f"key_ptr must describe as many examples as ptr ({ptr.numel() - 1}), "
                         f"got {key_ptr.numel() - 1}")
    return query, Layout.of(key_ptr, None, None if num_nodes is None else num_nodes[1])


def lengths_to_ptr(lengths: Tensor) -> Tensor:
    """Offsets ``[B + 1]`` of a batch with the given example lengths ``[B]`` (>= 0)."""
    lengths = check_index_tensor("lengths", lengths, "[B]")
    if lengths.dim() != 1:
        raise ValueError(f"lengths must be 1-D of shape [B], got shape {tuple(lengths.shape)}")
    if lengths.numel() and int(lengths.min()) < 0:
        raise ValueError(f"lengths must be >= 0, got min {int(lengths.min())}")
    return cumsum(lengths)


def ptr_to_lengths(ptr: PtrLike) -> Tensor:
    """Example lengths ``[B]`` of the offsets ``ptr: [B + 1]``."""
    return check_ptr(ptr).diff()


def ptr_to_batch(ptr: PtrLike, check: bool = True, num_nodes: Optional[int] = None) -> Tensor:
    """Example index of each row, ``[N]`` (PyG's ``batch`` vector) of ``ptr: [B + 1]``.

    ``num_nodes`` (``ptr[-1]``) when known: then no value of ``ptr`` is read on the host, and
    the result's shape does not depend on them (traceable by torch.compile and torch.export).
    """
    ptr = check_ptr(ptr) if check else ptr
    if num_nodes is not None:
        # Row t belongs to the last example that starts at or before t (empty ones start there too).
        return torch.searchsorted(ptr, torch.arange(num_nodes, device=ptr.device), right=True) - 1
    lengths = ptr.diff()
    examples = torch.arange(lengths.numel(), device=ptr.device)
    # output_size avoids a second device sync inside repeat_interleave.
    return torch.repeat_interleave(examples, lengths, output_size=int(ptr[-1]))


def batch_to_ptr(batch: Tensor, num_examples: Optional[int] = None) -> Tensor:
    """Offsets ``[B + 1]`` of a sorted ``batch`` vector ``[N]`` (the inverse of :func:`ptr_to_batch`)."""
    batch = check_index_tensor("batch", batch, "[N]")
    if num_examples is None:
        num_examples = int(batch.max()) + 1 if batch.numel() else 0
    counts = torch.bincount(batch, minlength=num_examples)
    return cumsum(counts)


def local_positions(ptr: PtrLike, num_nodes: Optional[int] = None) -> Tensor:
    """Position of each row inside its example (``0 .. length - 1``), ``[N]``; ``num_nodes``
    (``ptr[-1]``) when known saves reading it from the tensor."""
    ptr = check_ptr(ptr)
    num_nodes = int(ptr[-1]) if num_nodes is None else num_nodes
    return torch.arange(num_nodes, device=ptr.device) - ptr[ptr_to_batch(ptr, check=False, num_nodes=num_nodes)]


def pack_sequences(sequences: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Examples ``[n_b, *]`` as one flat batch: ``(x_flat [N, *], ptr [B + 1])``, no padding."""
    if not sequences:
        raise ValueError("pack_sequences needs at least one sequence")
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    return torch.cat(list(sequences)), cumsum(lengths)


def graph_layout(data) -> tuple[Tensor, Tensor]:
    """``(batch [N], ptr [B + 1])`` of a PyG ``Data`` (one graph) or ``Batch``."""
    num_nodes = data.num_nodes
    batch = getattr(data, "batch", None)
    ptr = getattr(data, "ptr", None)
    if batch is None:
        x = getattr(data, "x", None)
        device = x.device if isinstance(x, Tensor) else data.edge_index.device
        batch = torch.zeros(num_nodes, dtype=torch.long, device=device)
    if ptr is None:
        ptr = batch_to_ptr(batch, 1 if not num_nodes else None)
    return batch, ptr


def to_flat(x: Tensor, key_padding_mask: Optional[Tensor] = None,
            lengths: Optional[Tensor] = None) -> tuple[Tensor, Tensor]:
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
    size, n = x.shape[:2]
    if key_padding_mask is None and lengths is None:
        return x.flatten(0, 1), torch.arange(size + 1, device=x.device) * n
    real = _real_positions(x, key_padding_mask) if lengths is None else _real_prefix(x, lengths)
    # Boolean indexing walks the rows in row-major order, so real positions keep their order.
    return x[real], cumsum(real.sum(1))


def _real_prefix(x: Tensor, lengths: Tensor) -> Tensor:
    size, n = x.shape[:2]
    lengths = check_index_tensor("lengths", lengths, "[B]").to(x.device)
    if tuple(lengths.shape) != (size,):
        raise ValueError(f"lengths must have shape [B] = ({size},), got {tuple(lengths.shape)}")
    if size and (int(lengths.min()) < 0 or int(lengths.max()) > n):
        raise ValueError(f"lengths must lie in [0, n = {n}], got min {int(lengths.min())}, max {int(lengths.max())}")
    return torch.arange(n, device=x.device) < lengths.unsqueeze(1)  # (B, n)


def _real_positions(x: Tensor, key_padding_mask: Tensor) -> Tensor:
    if not isinstance(key_padding_mask, Tensor):
        raise TypeError(f"key_padding_mask must be a BoolTensor [B, n], got {type(key_padding_mask).__name__}")
    if key_padding_mask.dtype != torch.bool:
        raise TypeError(f"key_padding_mask must have dtype torch.bool (True = padding), got {key_padding_mask.dtype}")
    if key_padding_mask.shape != x.shape[:2]:
        raise ValueError(f"key_padding_mask must have x's shape [B, n] = {tuple(x.shape[:2])}, "
                         f"got {tuple(key_padding_mask.shape)}")
    return ~key_padding_mask.to(x.device)


def to_padded(x_flat: Tensor, ptr: PtrLike, max_len: Optional[int] = None,
              fill_value: float = 0.0) -> tuple[Tensor, Tensor]:
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
    elif check_int("max_len", max_len, 0) < longest:
        # to_dense_batch would silently drop the rows past max_len.
        raise ValueError(f"max_len ({max_len}) must be >= the longest example ({longest})")
    out, real = to_dense_batch(x_flat, ptr_to_batch(ptr, check=False), fill_value, max_num_nodes=max_len,
                               batch_size=lengths.numel())
    return out, ~real
