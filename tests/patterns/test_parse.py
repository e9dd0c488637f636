"""The grammar keeps its own rule: ``parse(repr(p)) == p`` for every pattern (parse.py)."""
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphattn import patterns as P

small = st.integers(0, 5)
positive = st.integers(1, 5)
seeds = st.integers(0, 2 ** 31)

LEAVES = st.one_of(
    st.just(P.dense()), st.just(P.causal()), small.map(P.window),
    st.tuples(st.none() | small, st.none() | small).map(lambda lr: P.Band(*lr)),
    st.tuples(positive, positive).map(lambda a: P.dilated(*a)), positive.map(P.block),
    st.lists(st.integers(0, 9), min_size=1, max_size=4).map(P.global_tokens),
    st.tuples(positive, seeds).map(lambda a: P.random(*a)),
    st.tuples(positive, st.integers(0, 3), st.integers(0, 3), seeds).map(lambda a: P.bigbird(*a)),
    st.booleans().map(lambda loops: P.graph(self_loops=loops)), positive.map(P.khop),
    st.tuples(st.integers(1, 3).map(lambda d: 2 * d), seeds).map(lambda a: P.expander(*a)),
    positive.map(P.virtual_nodes),
)


def combined(children):
    return st.one_of(st.tuples(children, children).map(lambda ab: ab[0] | ab[1]),
                     st.tuples(children, children).map(lambda ab: ab[0] & ab[1]))


PATTERNS = st.recursive(LEAVES, combined, max_leaves=5)
PTR = torch.tensor([0, 1, 4, 11, 19])
GRAPH = torch.tensor([[0, 1, 2, 2, 3, 5, 6, 7, 11, 12], [0, 2, 1, 3, 2, 6, 7, 9, 12, 13]])


def edges(pattern):
    if isinstance(pattern, P.Cross):
        return pattern.edge_index(PTR, key_ptr=PTR)
    return pattern.edge_index(PTR, graph=GRAPH)


@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # long reprs of failing cases
@settings(max_examples=300, deadline=None)
@given(PATTERNS, st.booleans())
def test_every_pattern_prints_as_the_spec_that_parses_back_to_it(pattern, in_cross):
    if in_cross and pattern.position_based:
        pattern = P.cross(pattern)
    again = P.parse(repr(pattern))
    assert again == pattern, (repr(pattern), repr(again))
    assert repr(again) == repr(pattern)
    try:
        expected = edges(pattern)
    except ValueError:  # a pattern that this layout cannot take (virtual nodes across a cross, ...)
        return
    assert torch.equal(edges(again), expected)


@pytest.mark.parametrize("spec", ["window:0", "band:0:0", "band:0:3", "band:3:0", "global:0", "causal|window:2",
                                  "(causal|window:2)&block:3", "causal&window:0"])
def test_edge_cases_round_trip(spec):
    pattern = P.parse(spec)
    assert P.parse(repr(pattern)) == pattern


def test_window_zero_is_the_self_pairs():
    ptr = torch.tensor([0, 3, 5])
    assert torch.equal(P.parse("window:0").edge_index(ptr), torch.arange(5).repeat(2, 1))


@pytest.mark.parametrize("spec, match", [
    ("window:99999999999999999999", "w must be an int <="), ("random:3:99999999999999999999", "seed"),
    ("global:99999999999999999999", r"indices\[...\]"), ("band:1:99999999999999999999", "right")])
def test_overflowing_arguments_are_refused(spec, match):
    with pytest.raises(ValueError, match=f"pattern '.*': {match}"):
        P.parse(spec)


def test_global_tokens_need_a_position():
    with pytest.raises(ValueError, match="indices must name at least one"):
        P.global_tokens([])
    with pytest.raises(ValueError, match="integers, got 'global:'"):
        P.parse("global:")
