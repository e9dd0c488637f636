r"""Sparse sequence patterns: dilated windows, global tokens, random keys and BigBird.

Random keys are drawn by a counter-based hash of ``(seed, example length, position, draw)``
instead of a sequential generator, so an example gets the same keys in any batch and on every
call (batch invariance), and a pattern is a pure function of its arguments.
"""
from __future__ import annotations

from numbers import Integral

import torch
from torch import Tensor

from graphattn.patterns.bands import Band
from graphattn.patterns.base import Pattern
from graphattn.patterns.tiles import run_blocks
from graphattn.utils.checks import check_int
from graphattn.utils.edges import candidates_to_edges, expand_ranges, merge_edges

__all__ = ["Dilated", "GlobalTokens", "RandomKeys", "dilated", "global_tokens", "random", "bigbird", "hash_ints"]


def hash_ints(*values: Tensor) -> Tensor:
    """A counter-based integer hash (splitmix64 finaliser on int64, wrapping), non-negative.

    Written here because torch's generators are sequential: a draw would depend on what was
    drawn before it (the batch), where this depends only on its inputs.
    """
    h = torch.zeros_like(values[0])
    for v in values:
        h = (h ^ v) * -7046029254386353131  # 0x9E3779B97F4A7C15 as int64
        h = h ^ ((h >> 31) & ((1 << 33) - 1))
        h = h * -4658895280553007687  # 0xBF58476D1CE4E5B9
        h = h ^ ((h >> 29) & ((1 << 35) - 1))
    return h & ((1 << 62) - 1)


class Dilated(Pattern):
    """Dilated window; see :func:`dilated`."""

    def __init__(self, w: int, dilation: int):
        self.w = check_int("w", w, 1)
        self.dilation = check_int("dilation", dilation, 1)

    def build_edges(self, query, key):
        offsets = torch.arange(-self.w, self.w + 1, device=query.ptr.device) * self.dilation
        local = query.pos.unsqueeze(1) + offsets  # [Nq, 2w + 1]
        valid = (local >= 0) & (local < key.sizes[query.batch].unsqueeze(1))
        return candidates_to_edges(local + key.ptr[query.batch].unsqueeze(1), valid)

    def allows(self, src, dst, query, key):
        return self.mask_rule(query, key)(dst, src)

    def mask_rule(self, query, key):
        q_batch, k_batch, q_pos, k_pos = query.batch, key.batch, query.pos, key.pos
        span, dilation = self.w * self.dilation, self.dilation

        def rule(i, j):
            diff = k_pos[j] - q_pos[i]
            return (k_batch[j] == q_batch[i]) & (diff.abs() <= span) & (diff % dilation == 0)

        return rule

    def __repr__(self):
        return f"dilated:{self.w}:{self.dilation}"


def dilated(w: int, dilation: int) -> Pattern:
    """Dilated window: query ``t`` attends ``t + m * dilation`` for ``m`` in ``-w..w``."""
    return Dilated(w, dilation)


class GlobalTokens(Pattern):
    """Global positions; see :func:`global_tokens`."""

    def __init__(self, indices):
        if isinstance(indices, Tensor):
            if indices.dtype.is_floating_point or indices.dtype == torch.bool:
                raise TypeError(f"indices must hold integer positions, got dtype {indices.dtype}")
            indices = indices.flatten().tolist()
        if isinstance(indices, Integral):
            indices = [indices]
        if not isinstance(indices, (list, tuple, range)):
            raise TypeError(f"indices must be a list of int positions, got {type(indices).__name__}")
        if len(indices) == 0:
            raise ValueError("indices must name at least one global position, got an empty list")
        for v in indices:
            check_int("indices[...]", v, 0)
        self.indices = sorted(set(int(v) for v in indices))

    def _is_global(self, pos: Tensor) -> Tensor:
        return torch.isin(pos, torch.tensor(self.indices, dtype=torch.long, device=pos.device))

    def build_edges(self, query, key):
        g = torch.tensor(self.indices, dtype=torch.long, device=query.ptr.device)
        base = key.ptr[query.batch]
        # Global queries read their whole example ...
        full = self._is_global(query.pos)
        rows = expand_ranges(base, torch.where(full, base + key.sizes[query.batch], base))
        # ... and every query reads the global keys.
        valid = g.unsqueeze(0) < key.sizes[query.batch].unsqueeze(1)
        cols = candidates_to_edges(base.unsqueeze(1) + g, valid)
        return merge_edges(rows, cols, key.num_nodes)

    def allows(self, src, dst, query, key):
        same = key.batch[src] == query.batch[dst]
        return same & (self._is_global(query.pos[dst]) | self._is_global(key.pos[src]))

    def mask_rule(self, query, key):
        # Per node, not per pair: the rule then gathers instead of searching the indices.
        q_global, k_global = self._is_global(query.pos), self._is_global(key.pos)
        q_batch, k_batch = query.batch, key.batch
        return lambda i, j: (q_batch[i] == k_batch[j]) & (q_global[i] | k_global[j])

    def block_sparsity(self, query, key, block_q, block_k):
        # Global queries read their example's keys; global keys are read by their example's queries.
        q_global, k_global = self._is_global(query.pos), self._is_global(key.pos)
        rows = run_blocks(torch.where(q_global, key.ptr[query.batch], 0),
                          torch.where(q_global, key.ptr[query.batch + 1], 0), key.num_nodes, block_q, block_k)
        cols = run_blocks(torch.where(k_global, query.ptr[key.batch], 0),
                          torch.where(k_global, query.ptr[key.batch + 1], 0), query.num_nodes, block_k, block_q)
        return rows | cols.transpose()

    def has_hub(self, n):
        return bool(self.indices) and self.indices[0] < n

    def __repr__(self):
        return "global:" + ":".join(map(str, self.indices))


def global_tokens(indices) -> Pattern:
    """Global positions (local indices) attend every key and are attended by every query.

    Positions beyond an example's length are ignored for that example.
    """
    return GlobalTokens(indices)


class RandomKeys(Pattern):
    """Random keys per query; see :func:`random`."""

    def __init__(self, num_keys: int, seed: int):
        self.num_keys = check_int("num_keys", num_keys, 1)
        if seed is None:
            raise ValueError("seed must be an int: random patterns are reproducible by construction "
                             "(the same seed gives the same keys on every call)")
        self.seed = check_int("seed", seed, 0)

    def draws(self, query, key) -> Tensor:
        """The keys of every query, ``[N_q, num_keys]`` in global numbering, sorted, ``-1`` where
        the example has fewer than ``num_keys`` keys."""
        n = key.sizes[query.batch]  # [Nq] keys available to each query
        r = self.num_keys
        device = query.ptr.device
        # Floyd's algorithm, vectorised over queries: r distinct keys from range(n) per query.
        chosen = torch.full((query.num_nodes, r), -1, dtype=torch.long, device=device)
        seed = torch.full_like(n, self.seed)
        for step in range(r):
            top = n - r + step  # Floyd draws from range(top + 1) at this step
            draw = hash_ints(seed, n, query.pos, torch.full_like(n, step)) % (top + 1).clamp(min=1)
            taken = (chosen[:, :step] == draw.unsqueeze(1)).any(1)
            chosen[:, step] = torch.where(taken, top, draw)
        short = n <= r  # examples shorter than r keys: take all of them
        if bool(short.any()):
            every = torch.arange(r, device=device).expand(query.num_nodes, r)
            chosen = torch.where(short.unsqueeze(1), every, chosen)
        chosen, _ = chosen.sort(1)
        valid = chosen < n.unsqueeze(1)
        return torch.where(valid, chosen + key.ptr[query.batch].unsqueeze(1), -1)

    def build_edges(self, query, key):
        keys = self.draws(query, key)
        return candidates_to_edges(keys, keys >= 0)

    def mask_rule(self, query, key):
        # The same hashed draws, as a table of num_keys columns: one gather per column and pair.
        columns = [c.contiguous() for c in self.draws(query, key).unbind(1)]

        def rule(i, j):
            ok = columns[0][i] == j
            for column in columns[1:]:
                ok = ok | (column[i] == j)
            return ok

        return rule

    def __repr__(self):
        return f"random:{self.num_keys}:{self.seed}"


def random(num_keys: int, seed: int) -> Pattern:
    """Each query attends ``num_keys`` distinct keys of its example drawn at random.

    The draw is a deterministic function of ``(seed, example length, query position)``:
    the same example gets the same keys in any batch and on every call. Examples with fewer
    than ``num_keys`` keys are attended entirely.
    """
    return RandomKeys(num_keys, seed)


def bigbird(window: int, num_global: int, num_random: int, seed: int) -> Pattern:
    """BigBird (token level): ``window(window) | global_tokens(range(num_global)) | random(...)``.

    ``num_global`` or ``num_random`` may be 0 to leave that part out.
    """
    pattern: Pattern = Band(check_int("window", window, 1), window)
    if check_int("num_global", num_global, 0):
        pattern = pattern | GlobalTokens(list(range(num_global)))
    if check_int("num_random", num_random, 0):
        pattern = pattern | RandomKeys(num_random, seed)
    return pattern
