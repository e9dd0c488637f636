"""A ListOps-style long-range classification task, generated (after the Long Range Arena).

An example is a nested expression over the digits 0-9 with four operators::

    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]   ->   5

``MAX``, ``MIN``, ``MED`` (median; the lower middle of an even count, as ``int(np.median)``
rounds down for these integers) and ``SM`` (sum modulo 10). The label is the value of the
expression (10 classes). The answer depends on tokens spread over the whole sequence, so a
pattern whose reach is too short cannot see it.

Tokens: ``<pad>`` 0, ``<cls>`` 1, digits ``0``-``9``, ``[MAX``, ``[MIN``, ``[MED``, ``[SM``, ``]``.
"""
from __future__ import annotations

import random as _random
from typing import Sequence

import torch
from torch import Tensor

__all__ = ["VOCAB", "OPERATORS", "generate", "evaluate", "encode", "listops_dataset"]

OPERATORS = ("[MAX", "[MIN", "[MED", "[SM")
VOCAB = ["<pad>", "<cls>"] + [str(d) for d in range(10)] + list(OPERATORS) + ["]"]
_INDEX = {t: i for i, t in enumerate(VOCAB)}


def _apply(op: str, args: Sequence[int]) -> int:
    if op == "[MAX":
        return max(args)
    if op == "[MIN":
        return min(args)
    if op == "[MED":
        s = sorted(args)
        mid = len(s) // 2
        return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) // 2
    return sum(args) % 10


def evaluate(tokens: Sequence[str]) -> int:
    """The value of an expression given as tokens (a stack machine; raises on malformed input)."""
    stack: list = []
    for tok in tokens:
        if tok in OPERATORS:
            stack.append([tok])
        elif tok == "]":
            frame = stack.pop()
            if len(frame) < 2:
                raise ValueError("an operator needs at least one argument")
            value = _apply(frame[0], frame[1:])
            if not stack:
                return value
            stack[-1].append(value)
        else:
            digit = int(tok)
            if not stack:
                return digit
            stack[-1].append(digit)
    raise ValueError("unbalanced expression")


def _tree(rng: _random.Random, budget: int, depth: int, max_depth: int, max_args: int) -> list:
    """An expression of at most ``budget`` tokens: the budget is split among the arguments,
    so lengths follow the requested range instead of being found by rejection."""
    if budget < 4 or depth >= max_depth:
        return [str(rng.randint(0, 9))]
    inner = budget - 2  # the operator and "]"
    k = rng.randint(2, min(max_args, inner))
    cuts = sorted(rng.sample(range(1, inner), k - 1))
    parts = [b - a for a, b in zip([0] + cuts, cuts + [inner])]
    args = [_tree(rng, part, depth + 1, max_depth, max_args) for part in parts]
    return [rng.choice(OPERATORS)] + [t for a in args for t in a] + ["]"]


def generate(num: int, min_len: int = 32, max_len: int = 512, max_depth: int = 10, max_args: int = 10, seed: int = 0) -> list:
    """``num`` expressions (token lists) whose lengths lie in ``[min_len, max_len]``, by seed."""
    if not 4 <= min_len <= max_len:
        raise ValueError(f"need 4 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    rng = _random.Random(seed)
    out = []
    while len(out) < num:
        tokens = _tree(rng, rng.randint(min_len, max_len), 0, max_depth, max_args)
        if len(tokens) >= min_len:
            out.append(tokens)
    return out


def encode(tokens: Sequence[str]) -> Tensor:
    """Token ids ``[L + 1]``: ``<cls>`` then the expression."""
    return torch.tensor([_INDEX["<cls>"]] + [_INDEX[t] for t in tokens], dtype=torch.long)


def listops_dataset(num: int, min_len: int = 32, max_len: int = 512, seed: int = 0) -> list:
    """``[(ids [L + 1], label)]`` pairs of generated expressions."""
    return [(encode(t), evaluate(t)) for t in generate(num, min_len, max_len, seed=seed)]
