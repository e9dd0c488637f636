r"""The key/value cache of incremental decoding, for every stack that decodes one token at a time.

One :class:`KVCache` serves a whole stack of layers: :class:`~graphattn.nn.CausalLM` (self-attention
only) and the decoder of :class:`~graphattn.nn.Transformer` (self-attention, and cross-attention to a
memory whose keys and values are projected once). The layers' ``step`` methods write the newest keys
and values into it and attend what it holds.

Self-attention keys and values live in a buffer of ``size`` slots per sequence: slot ``p % size``
holds position ``p``. With ``size`` at least the longest sequence that is the full cache; under
``causal&window:w`` ``size = w + 1`` makes it a ring that overwrites what the window no longer reaches,
so its memory stays O(w) however long decoding runs. The cache holds no parameters (a model's
``state_dict`` is the same with or without one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from graphattn import patterns as P
from graphattn.nn.positional import RelativePositionBias, relative_position_buckets
from graphattn.utils.batch import local_positions, ptr_to_batch
from graphattn.utils.checks import check_int

__all__ = ["KVCache"]


@dataclass
class KVCache:
    """Keys and values that the queries of the next decoding steps may attend, per layer.

    Build one with :meth:`empty` (or a model's ``init_cache`` / ``start_decoding``).
    """

    keys: list  # per layer [M, size, H, D] self-attention keys
    values: list  # per layer [M, size, H, D]
    positions: Tensor  # [M, size] position held by each slot, -1 where empty
    length: Tensor  # [M] positions written so far (the next position of each sequence)
    window: Optional[int] = None  # how far back a query attends (w of causal&window:w), None: all earlier
    memory: Optional[list] = None  # per layer (keys, values) [N_s, H, D] of cross-attention, projected once
    memory_ptr: Optional[Tensor] = None  # [M + 1] layout of the memory rows

    @classmethod
    def empty(cls, num_layers: int, batch_size: int, capacity: int, num_heads: int, head_dim: int,
              window: Optional[int], like: Tensor, rolling: bool = True) -> "KVCache":
        """An empty cache for ``batch_size`` sequences of at most ``capacity`` positions, with the
        dtype and device of ``like``. With ``rolling`` and a ``window`` it keeps ``window + 1`` slots
        (all that the window reaches); otherwise ``capacity``."""
        size = check_int("capacity", capacity, 1)
        if rolling and window is not None:
            size = min(size, window + 1)
        shape = (check_int("batch_size", batch_size, 1), size, num_heads, head_dim)
        buffers = [like.new_zeros(shape) for _ in range(2 * num_layers)]
        positions = torch.full((batch_size, size), -1, dtype=torch.long, device=like.device)
        return cls(buffers[:num_layers], buffers[num_layers:], positions,
                   torch.zeros(batch_size, dtype=torch.long, device=like.device), window)

    @property
    def size(self) -> int:
        """Slots per sequence and layer."""
        return self.positions.size(1)

    def nbytes(self) -> int:
        """Bytes of the self-attention key and value buffers of every layer (what grows with the
        decoded length; the memory's keys and values, :meth:`memory_nbytes`, do not)."""
        return sum(t.numel() * t.element_size() for t in self.keys + self.values)

    def memory_nbytes(self) -> int:
        """Bytes of the cross-attention keys and values of the memory (0 without a memory)."""
        return sum(t.numel() * t.element_size() for kv in (self.memory or []) for t in kv)

    def check_room(self, length: int) -> None:
        """Raise unless sequences of ``length`` positions fit: a ring may overwrite only what the
        window no longer reaches."""
        if length > self.size and (self.window is None or self.size <= self.window):
            reach = "all earlier positions" if self.window is None else f"{self.window + 1} positions"
            raise ValueError(f"the cache holds {self.size} positions, the sequences reach {length} and the "
                             f"pattern attends {reach}: give the cache a larger capacity")

    def write(self, layer: int, rows: Tensor, positions: Tensor, k: Tensor, v: Tensor) -> None:
        """Store ``k, v`` (``[n, H, D]``) of sequences ``rows`` at ``positions`` (both ``[n]``)."""
        slots = positions % self.size
        self.keys[layer][rows, slots] = k
        self.values[layer][rows, slots] = v
        if layer == 0:
            self.positions[rows, slots] = positions

    def prefix_slots(self, ptr: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(keep, rows, positions)`` of a flat batch laid out by ``ptr``: the mask ``[N]`` of the
        positions the cache can hold (the last ``size`` of each sequence), and their sequence and
        position (``[n]`` each)."""
        rows, pos = ptr_to_batch(ptr), local_positions(ptr)
        keep = pos >= ptr.diff()[rows] - self.size
        return keep, rows[keep], pos[keep]

    def attend(self, attn: nn.Module, layer: int, h: Tensor, query_pos: Tensor,
               rel_bias: Optional[RelativePositionBias] = None) -> Tensor:
        """``attn`` (a :class:`~graphattn.nn.GraphMultiheadAttention`) from one query per sequence
        (``h [M, d]`` at ``query_pos [M]``) to the keys and values of ``layer`` that the causal band
        reaches; ``rel_bias`` adds its bias of the distance. Returns ``[M, d]``."""
        num = h.size(0)
        # Slots past the furthest position are empty until a ring wraps: leave them out.
        size = min(self.size, int(query_pos.max()) + 1)
        positions = self.positions[:, :size]
        rel = query_pos.unsqueeze(1) - positions  # [M, size]
        valid = (positions >= 0) & (rel >= 0)
        if self.window is not None:
            valid &= rel <= self.window
        bias = None
        if rel_bias is not None or not bool(valid.all()):
            bias = torch.zeros(num, size, attn.num_heads, dtype=h.dtype, device=h.device)
            if rel_bias is not None:
                buckets = relative_position_buckets(rel.clamp(min=0).flatten(), rel_bias.max_distance)
                bias = rel_bias.embedding(buckets).view_as(bias)
            bias = bias.masked_fill(~valid.unsqueeze(-1), -math.inf).flatten(0, 1)  # [M * size, H]
        one = torch.arange(num + 1, device=h.device)  # one query per sequence
        kv = (self.keys[layer][:, :size].flatten(0, 1), self.values[layer][:, :size].flatten(0, 1))
        return attn(h, key_value=kv, pattern=P.cross(), ptr=one, key_ptr=one * size, attn_bias=bias)

    def attend_memory(self, attn: nn.Module, layer: int, h: Tensor, pattern: P.Pattern) -> Tensor:
        """``attn`` from one query per sequence (``h [M, d]``) to the memory's keys and values of
        ``layer`` along the cross ``pattern``. Returns ``[M, d]``."""
        if self.memory is None:
            raise ValueError("this cache holds no memory: cross-attention needs start_decoding(memory, ...)")
        one = torch.arange(h.size(0) + 1, device=h.device)
        return attn(h, key_value=self.memory[layer], pattern=pattern, ptr=one, key_ptr=self.memory_ptr)

    def reorder(self, index: Tensor) -> None:
        """Keep the sequences ``index`` (beam search): the cached keys follow their hypotheses.

        The memory stays in place, so only sequences with the same memory may be exchanged.
        """
        # Only the slots written so far hold anything: copy those alone.
        used = min(self.size, int(self.length.max())) if self.length.numel() else 0
        for buffer in self.keys + self.values:
            buffer[:, :used] = buffer[index, :used]
        self.positions = self.positions[index]
        self.length = self.length[index]
