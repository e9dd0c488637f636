r"""The one grammar that names patterns: command lines, configs, tables and ``repr`` all use it.

::

    spec   := term ("|" term)*                 union
    term   := factor ("&" factor)*             intersection (binds tighter than |)
    factor := "(" spec ")" | "cross(" spec ")" | name (":" int)*

Names: ``dense``, ``causal``, ``window:W``, ``band:LEFT:RIGHT`` (a side may be ``inf``), ``dilated:W:DILATION``,
``block:SIZE``, ``global:I[:J...]``, ``random:KEYS:SEED``, ``bigbird:WINDOW:GLOBAL:RANDOM:SEED``,
``graph`` (the batch's graph, self loops included; ``graph:0`` without them), ``khop:K``,
``expander:DEGREE:SEED`` (random regular expander), ``virtual:K`` (K virtual nodes per example),
``cross`` (dense cross-attention) and ``cross(spec)``. ``graph|expander:4:0|virtual:1`` is
BigBird on graphs. Every pattern prints as the spec
that parses back to it: ``parse(repr(p)) == p`` (patterns bound to one graph print its size).
"""
from __future__ import annotations

import re
from typing import Optional

from graphattn.patterns.bands import Band, block, causal, dense, window
from graphattn.patterns.base import Pattern
from graphattn.patterns.cross import cross
from graphattn.patterns.expander import expander
from graphattn.patterns.graph import graph, khop
from graphattn.patterns.sparse import bigbird, dilated, global_tokens, random
from graphattn.patterns.virtual import virtual_nodes

__all__ = ["parse", "as_pattern", "NAMES"]


def _band(left: int, right: int) -> Pattern:
    return Band(left, right)


def _graph(self_loops: int = 1) -> Pattern:
    if self_loops not in (0, 1):
        raise ValueError(f"graph takes 0 (no self loops) or 1, got {self_loops}")
    return graph(self_loops=bool(self_loops))


#: name -> (constructor, number of integer arguments; None: one or more; a tuple: allowed counts)
NAMES = {
    "dense": (dense, 0),
    "causal": (causal, 0),
    "window": (window, 1),
    "band": (_band, 2),
    "dilated": (dilated, 2),
    "block": (block, 1),
    "global": (lambda *i: global_tokens(list(i)), None),
    "random": (random, 2),
    "bigbird": (bigbird, 4),
    "graph": (_graph, (0, 1)),
    "khop": (khop, 1),
    "expander": (expander, 2),
    "virtual": (virtual_nodes, 1),
    "cross": (cross, 0),
}
_FORMS = ("dense, causal, window:W, band:LEFT:RIGHT (or inf), dilated:W:DILATION, block:SIZE, global:I[:J...], "
          "random:KEYS:SEED, bigbird:WINDOW:GLOBAL:RANDOM:SEED, graph[:0], khop:K, expander:DEGREE:SEED, "
          "virtual:K, cross, cross(SPEC)")
_TOKEN = re.compile(r"\s*(?:([A-Za-z_]\w*(?::[^\s&|()]*)*)|([&|()]))")


def _tokens(spec: str) -> list[str]:
    out, pos = [], 0
    while pos < len(spec):
        if spec[pos:].strip() == "":
            break
        match = _TOKEN.match(spec, pos)
        if match is None:
            raise ValueError(f"cannot read pattern {spec!r} at {spec[pos:]!r}; forms: {_FORMS}")
        out.append(match.group(1) or match.group(2))
        pos = match.end()
    return out


def _atom(text: str, spec: str) -> Pattern:
    name, *args = text.split(":")
    if name not in NAMES:
        raise ValueError(f"unknown pattern {name!r} in {spec!r}; valid names: {', '.join(NAMES)}")
    make, arity = NAMES[name]
    allowed = (arity,) if isinstance(arity, int) else arity
    if (allowed is None and not args) or (allowed is not None and len(args) not in allowed):
        takes = "one or more" if allowed is None else " or ".join(map(str, allowed))
        raise ValueError(f"pattern {text!r} takes {takes} integer argument(s); forms: {_FORMS}")
    try:
        # A band's side may be unbounded ("inf"): band:2:inf is what Band(2, None) prints.
        values = [None if name == "band" and a == "inf" else int(a) for a in args]
    except ValueError:
        raise ValueError(f"pattern arguments must be integers, got {text!r}") from None
    try:
        return make(*values)
    except (TypeError, ValueError) as error:  # the constructor names the argument; say which pattern
        raise ValueError(f"pattern {text!r} in {spec!r}: {error}") from None


class _Parser:
    def __init__(self, spec: str):
        self.spec, self.tokens, self.i = spec, _tokens(spec), 0

    def peek(self):
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, expected=None) -> str:
        token = self.peek()
        if token is None or (expected is not None and token != expected):
            want = f"{expected!r}" if expected else "a pattern"
            raise ValueError(f"pattern {self.spec!r}: expected {want}, got {token or 'the end'!r}")
        self.i += 1
        return token

    def spec_(self) -> Pattern:
        out = self.term()
        while self.peek() == "|":
            self.take()
            out = out | self.term()
        return out

    def term(self) -> Pattern:
        out = self.factor()
        while self.peek() == "&":
            self.take()
            out = out & self.factor()
        return out

    def factor(self) -> Pattern:
        token = self.take()
        if token == "(":
            out = self.spec_()
            self.take(")")
            return out
        if token in "&|)":
            raise ValueError(f"pattern {self.spec!r}: unexpected {token!r}")
        if token == "cross" and self.peek() == "(":
            self.take("(")
            out = cross(self.spec_())
            self.take(")")
            return out
        return _atom(token, self.spec)


def parse(spec: str) -> Pattern:
    """A pattern from its name in the grammar above.

    >>> parse("causal&window:16")
    causal&window:16
    >>> parse("window:64|global:0")
    window:64|global:0
    """
    if isinstance(spec, Pattern):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"pattern spec must be a non-empty string, got {spec!r}")
    parser = _Parser(spec)
    out = parser.spec_()
    if parser.peek() is not None:
        raise ValueError(f"pattern {spec!r}: unexpected {parser.peek()!r}")
    return out


def as_pattern(pattern, name: str = "pattern", default: Optional[Pattern] = None) -> Pattern:
    """A :class:`Pattern` from a Pattern, a spec string (:func:`parse`) or None (``default``).

    What every layer and application that takes a pattern calls, so that they all take the same
    strings and objects.
    """
    if pattern is None and default is not None:
        return default
    if isinstance(pattern, Pattern):
        return pattern
    if isinstance(pattern, str):
        try:
            return parse(pattern)
        except ValueError as error:
            raise ValueError(f"{name}: {error}") from None
    raise TypeError(f"{name} must be a graphattn Pattern or a pattern spec such as 'window:16', "
                    f"got {type(pattern).__name__}")
