"""A ListOps-style long-range classification task, generated (after the Long Range Arena).

An example is a nested expression over the digits 0-9 with four operators::

    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]   ->   5

``MAX``, ``MIN``, ``MED`` (median; the lower middle of an even count, as ``int(np.median)``
rounds down for these integers) and ``SM`` (sum modulo 10). The label is the value of the
expression (10 classes). The answer depends on tokens spread over the whole sequence, so a
pattern whose reach is too short cannot see it.

:func:`generate` defaults to the Long Range Arena's distribution (depth up to 10, up to 10
arguments, all four operators, uniform digits), which small models learn only after long
training. Its knobs give easier tasks of the same kind: ``max_depth``, ``operators`` and
``root_operators`` restrict the shape, and ``informative`` makes all but a few digits the
operator's identity, so that the value rests on a few digits anywhere in the expression.
``graphattn compare`` trains on ``max_depth=1``, ``[MAX``/``[MIN``, ``informative=3``::

    [MIN 9 9 9 4 9 9 9 9 ... 9 7 9 9 ]   ->   4

Tokens: ``<pad>`` 0, ``<cls>`` 1, digits ``0``-``9``, ``[MAX``, ``[MIN``, ``[MED``, ``[SM``, ``]``.
"""
from __future__ import annotations

import random as _random
from typing import Optional, Sequence

import torch
from torch import Tensor

__all__ = ["VOCAB", "OPERATORS", "IDENTITY", "generate", "expression_value", "encode", "listops_dataset"]

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


def expression_value(tokens: Sequence[str]) -> int:
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


# The digit that leaves an operator's value unchanged: max(0, x) = x, min(9, x) = x and
# (0 + x) mod 10 = x for digits; the median has none.
IDENTITY = {"[MAX": 0, "[MIN": 9, "[SM": 0}


def _tree(rng: _random.Random, budget: int, depth: int, cfg: dict, operators: Sequence[str]) -> list:
    """An expression of at most ``budget`` tokens: the budget is split among the arguments,
    so lengths follow the requested range instead of being found by rejection."""
    if budget < 4 or depth >= cfg["max_depth"]:
        return [str(rng.randint(0, 9))]
    op = rng.choice(operators)
    inner = budget - 2  # the operator and "]"
    if depth + 1 >= cfg["max_depth"]:
        # Arguments can only be digits: take as many as the budget allows, so that a shallow
        # expression is as long as asked for.
        k = min(cfg["max_args"], inner)
    else:
        k = rng.randint(2, min(cfg["max_args"], inner))
    cuts = sorted(rng.sample(range(1, inner), k - 1))
    parts = [b - a for a, b in zip([0] + cuts, cuts + [inner])]
    informative = cfg["informative"]
    args = []
    for part in parts:
        if informative is not None and (part < 4 or depth + 1 >= cfg["max_depth"]) \
                and rng.random() >= informative / k:
            args.append([str(IDENTITY[op])])  # a digit that cannot change the value
        else:
            args.append(_tree(rng, part, depth + 1, cfg, cfg["operators"]))
    return [op] + [t for a in args for t in a] + ["]"]


def generate(num: int, min_len: int = 32, max_len: int = 512, max_depth: int = 10, max_args: int = 10,
             seed: int = 0, operators: Sequence[str] = OPERATORS, root_operators: Optional[Sequence[str]] = None,
             informative: Optional[float] = None) -> list:
    r"""``num`` expressions (token lists) whose lengths lie in ``[min_len, max_len]``, by seed.

    The defaults are the Long Range Arena's distribution: nesting up to depth 10, up to 10
    arguments per operator, the four operators everywhere, every digit uniform.

    Args:
        max_depth (int): deepest nesting; 1 is a flat list ``[OP d d ... d ]``, whose operator
            takes as many digits as its length allows (up to ``max_args``).
        max_args (int): most arguments of one operator.
        operators (sequence of str): operators below the root.
        root_operators (sequence of str, optional): operators at the root (default: ``operators``).
        informative (float, optional): expected number of digit arguments per operator drawn
            uniformly; every other digit argument is the operator's identity (``IDENTITY``: 0
            for ``[MAX`` and ``[SM``, 9 for ``[MIN``), which cannot change its value. With
            :math:`k` arguments each digit is uniform with probability
            :math:`\min(1, \text{informative} / k)`, so the value rests on a few digits
            anywhere in the expression, however long. ``None``: every digit uniform.
    """
    if not 4 <= min_len <= max_len:
        raise ValueError(f"need 4 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}")
    max_depth = _check_positive("max_depth", max_depth)
    max_args = _check_positive("max_args", max_args, 2)
    operators = _check_operators("operators", operators)
    root_operators = operators if root_operators is None else _check_operators("root_operators", root_operators)
    if informative is not None:
        if not informative > 0:
            raise ValueError(f"informative must be > 0 or None, got {informative}")
        no_identity = [op for op in set(operators) | set(root_operators) if op not in IDENTITY]
        if no_identity:
            raise ValueError(f"informative needs operators with an identity digit {sorted(IDENTITY)}, "
                             f"got {sorted(no_identity)}")
    longest = 1
    for _ in range(max_depth):
        longest = 2 + max_args * longest
    if longest < min_len:
        raise ValueError(f"max_depth={max_depth} and max_args={max_args} allow at most {longest} tokens, "
                         f"shorter than min_len={min_len}")
    cfg = {"max_depth": max_depth, "max_args": max_args, "operators": operators, "informative": informative}
    rng = _random.Random(seed)
    out: list = []
    while len(out) < num:
        tokens = _tree(rng, rng.randint(min_len, max_len), 0, cfg, root_operators)
        if len(tokens) >= min_len:
            out.append(tokens)
    return out


def _check_positive(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _check_operators(name: str, ops) -> tuple:
    ops = tuple(ops)
    bad = [op for op in ops if op not in OPERATORS]
    if not ops or bad:
        raise ValueError(f"{name} must be a non-empty subset of {OPERATORS}, got {ops!r}")
    return ops


def encode(tokens: Sequence[str]) -> Tensor:
    """Token ids ``[L + 1]``: ``<cls>`` then the expression."""
    return torch.tensor([_INDEX["<cls>"]] + [_INDEX[t] for t in tokens], dtype=torch.long)


def listops_dataset(num: int, min_len: int = 32, max_len: int = 512, seed: int = 0, **kwargs) -> list:
    """``[(ids [L + 1], label)]`` pairs of generated expressions; ``kwargs`` go to :func:`generate`."""
    return [(encode(t), expression_value(t)) for t in generate(num, min_len, max_len, seed=seed, **kwargs)]
