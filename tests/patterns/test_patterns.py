"""Every pattern against a brute-force Python definition, on ragged batches."""
import math

import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graphattn import patterns as P
from graphattn.patterns import bfs_reach

LENGTHS = [0, 1, 5, 13, 2, 0, 8, 3]


def make_ptr(lengths):
    return torch.tensor([0] + list(torch.tensor(lengths).cumsum(0).tolist()), dtype=torch.long)


def positions(lengths):
    """[(example, local position)] for every node of a batch, in node order."""
    return [(b, t) for b, n in enumerate(lengths) for t in range(n)]


def brute_force(rule, q_lengths, k_lengths=None):
    """Dense bool [Nq, Nk] mask from a per-pair rule(t, s, n_q, n_k) on local positions."""
    k_lengths = q_lengths if k_lengths is None else k_lengths
    qs, ks = positions(q_lengths), positions(k_lengths)
    mask = torch.zeros(len(qs), len(ks), dtype=torch.bool)
    for i, (bq, t) in enumerate(qs):
        for j, (bk, s) in enumerate(ks):
            if bq == bk and rule(t, s, q_lengths[bq], k_lengths[bk]):
                mask[i, j] = True
    return mask


def mask_to_edges(mask):
    dst, src = mask.nonzero(as_tuple=True)  # row-major: sorted by query, then key
    return torch.stack([src, dst])


RULES = {
    "dense": (P.dense(), lambda t, s, n, m: True),
    "causal": (P.causal(), lambda t, s, n, m: s <= t),
    "window1": (P.window(1), lambda t, s, n, m: abs(t - s) <= 1),
    "window3": (P.window(3), lambda t, s, n, m: abs(t - s) <= 3),
    "window_long": (P.window(50), lambda t, s, n, m: True),
    "causal_window": (P.causal() & P.window(2), lambda t, s, n, m: 0 <= t - s <= 2),
    "window_causal": (P.window(2) & P.causal(), lambda t, s, n, m: 0 <= t - s <= 2),
    "band": (P.Band(1, 3), lambda t, s, n, m: -3 <= t - s <= 1),
    "dilated": (P.dilated(2, 3), lambda t, s, n, m: abs(t - s) <= 6 and (t - s) % 3 == 0),
    "block": (P.block(3), lambda t, s, n, m: t // 3 == s // 3),
    "global": (P.global_tokens([0, 4]), lambda t, s, n, m: t in (0, 4) or s in (0, 4)),
    "block_or_global": (
        P.block(2) | P.global_tokens([1]),
        lambda t, s, n, m: t // 2 == s // 2 or t == 1 or s == 1,
    ),
    "block_and_causal": (P.block(4) & P.causal(), lambda t, s, n, m: t // 4 == s // 4 and s <= t),
    "dilated_and_window": (
        P.dilated(3, 2) & P.window(4),
        lambda t, s, n, m: abs(t - s) <= 4 and (t - s) % 2 == 0,
    ),
    "window_or_dilated": (
        P.window(1) | P.dilated(1, 4),
        lambda t, s, n, m: abs(t - s) <= 1 or abs(t - s) == 4,
    ),
    "window_or_causal": (P.window(1) | P.causal(), lambda t, s, n, m: s <= t + 1),
    "global_and_block": (
        P.global_tokens([2]) & P.block(4),
        lambda t, s, n, m: (t == 2 or s == 2) and t // 4 == s // 4,
    ),
    "last_tokens": (P.global_tokens([7]), lambda t, s, n, m: t == 7 or s == 7),
}


@pytest.mark.parametrize("name", list(RULES))
def test_pattern_equals_brute_force(name):
    pattern, rule = RULES[name]
    ptr = make_ptr(LENGTHS)
    expected = brute_force(rule, LENGTHS)
    assert torch.equal(pattern.to_dense(ptr), expected)
    assert torch.equal(pattern.edge_index(ptr), mask_to_edges(expected))


@pytest.mark.parametrize("name", ["dense", "causal", "window3", "band", "dilated", "block", "global"])
def test_cross_layout_equals_brute_force(name):
    pattern, rule = RULES[name]
    k_lengths = [3, 0, 9, 1, 6, 2, 8, 5]
    ptr, key_ptr = make_ptr(LENGTHS), make_ptr(k_lengths)
    expected = brute_force(rule, LENGTHS, k_lengths)
    assert torch.equal(pattern.edge_index(ptr, key_ptr), mask_to_edges(expected))
    assert torch.equal(P.cross(pattern).to_dense(ptr, key_ptr), expected)


def test_cross_default_is_dense_and_needs_key_ptr():
    ptr, key_ptr = make_ptr([2, 3]), make_ptr([4, 0])
    expected = brute_force(lambda t, s, n, m: True, [2, 3], [4, 0])
    assert torch.equal(P.cross().to_dense(ptr, key_ptr), expected)
    with pytest.raises(ValueError, match="key_ptr"):
        P.cross().edge_index(ptr)
    with pytest.raises(ValueError, match="key_ptr"):
        P.dense().edge_index(ptr, make_ptr([1]))


@pytest.mark.parametrize("name", list(RULES) + ["random", "bigbird", "graph", "khop"])
def test_edges_sorted_unique_within_examples(name):
    ptr = make_ptr(LENGTHS)
    if name in RULES:
        pattern = RULES[name][0]
    elif name == "random":
        pattern = P.random(3, seed=1)
    elif name == "bigbird":
        pattern = P.bigbird(2, num_global=1, num_random=2, seed=0)
    else:
        ei = random_graph(LENGTHS, seed=3)
        pattern = P.graph(ei) if name == "graph" else P.khop(2, ei)
    ei = pattern.edge_index(ptr)
    key = ei[1] * 1000 + ei[0]
    assert torch.all(key[1:] > key[:-1]), "sorted by target then source, no duplicates"
    batch = torch.repeat_interleave(torch.arange(len(LENGTHS)), torch.tensor(LENGTHS))
    assert torch.equal(batch[ei[0]], batch[ei[1]])
    assert pattern.contains(ei, ptr).all()


def test_contains_matches_dense_mask():
    ptr = make_ptr(LENGTHS)
    n = int(ptr[-1])
    all_pairs = torch.cartesian_prod(torch.arange(n), torch.arange(n)).t()  # [2, n*n] (key, query)
    for pattern, _ in RULES.values():
        mask = pattern.to_dense(ptr)
        assert torch.equal(pattern.contains(all_pairs, ptr), mask[all_pairs[1], all_pairs[0]])


def test_band_algebra():
    assert P.causal() & P.window(8) == P.Band(8, 0)
    assert P.window(2) | P.window(5) == P.window(5)
    assert P.dense() & P.causal() == P.causal()
    assert repr(P.causal() & P.window(8)) == "causal&window:8"
    assert repr(P.window(3)) == "window:3"


# --------------------------------------------------------------------------- random, bigbird


def test_random_pattern_properties():
    lengths = [1, 2, 3, 10, 40, 0, 7]
    ptr = make_ptr(lengths)
    ei = P.random(4, seed=7).edge_index(ptr)
    counts = torch.bincount(ei[1], minlength=int(ptr[-1]))
    sizes = torch.repeat_interleave(torch.tensor(lengths), torch.tensor(lengths))
    assert torch.equal(counts, sizes.clamp(max=4))  # exactly min(num_keys, n) distinct keys
    assert torch.equal(ei, P.random(4, seed=7).edge_index(ptr))  # reproducible
    assert not torch.equal(ei, P.random(4, seed=8).edge_index(ptr))


def test_random_pattern_is_batch_invariant():
    # The same example gets the same keys alone and inside a batch.
    alone = P.random(3, seed=5).edge_index(make_ptr([9]))
    batched = P.random(3, seed=5).edge_index(make_ptr([4, 9, 2]))
    in_batch = batched[:, (batched[1] >= 4) & (batched[1] < 13)] - 4
    assert torch.equal(alone, in_batch)


def test_random_pattern_is_roughly_uniform():
    n, r, bins = 1000, 10, 20
    ei = P.random(r, seed=0).edge_index(make_ptr([n]))
    freq = torch.bincount(ei[0] // (n // bins), minlength=bins).double()
    expected = n * r / bins
    # chi-square with 19 degrees of freedom: the 99.9% quantile is about 43.8
    assert float(((freq - expected) ** 2 / expected).sum()) < 43.8


def test_bigbird_is_union_of_parts():
    ptr = make_ptr(LENGTHS)
    bb = P.bigbird(2, num_global=2, num_random=2, seed=3).to_dense(ptr)
    parts = P.window(2).to_dense(ptr) | P.global_tokens([0, 1]).to_dense(ptr)
    parts |= P.random(2, seed=3).to_dense(ptr)
    assert torch.equal(bb, parts)
    assert torch.equal(P.bigbird(2, 0, 0, seed=0).to_dense(ptr), P.window(2).to_dense(ptr))


# --------------------------------------------------------------------------- graphs


def random_graph(lengths, seed, p=0.3):
    """Random directed edges inside each example, in global numbering."""
    gen = torch.Generator().manual_seed(seed)
    edges, start = [], 0
    for n in lengths:
        if n:
            m = torch.rand(n, n, generator=gen) < p
            m.fill_diagonal_(False)
            src, dst = m.nonzero(as_tuple=True)
            edges.append(torch.stack([src, dst]) + start)
        start += n
    return torch.cat(edges, 1)


@pytest.mark.parametrize("self_loops", [True, False])
def test_graph_pattern(self_loops):
    ptr = make_ptr(LENGTHS)
    ei = random_graph(LENGTHS, seed=0)
    n = int(ptr[-1])
    expected = torch.zeros(n, n, dtype=torch.bool)
    expected[ei[1], ei[0]] = True
    if self_loops:
        expected.fill_diagonal_(True)
    pattern = P.graph(torch.cat([ei, ei[:, :3]], 1), self_loops=self_loops)  # duplicates merge
    assert torch.equal(pattern.to_dense(ptr), expected)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_khop_against_networkx(k):
    ptr = make_ptr(LENGTHS)
    ei = random_graph(LENGTHS, seed=1, p=0.15)
    n = int(ptr[-1])
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from(ei.t().tolist())
    expected = torch.zeros(n, n, dtype=torch.bool)
    for j in range(n):
        for i in nx.single_source_shortest_path_length(g, j, cutoff=k):
            expected[i, j] = True  # a path j -> ... -> i of at most k edges
    assert torch.equal(P.khop(k, ei).to_dense(ptr), expected)


@pytest.mark.parametrize("w", [1, 2, 5])
def test_khop_on_path_graph_is_window(w):
    lengths = [7, 1, 12]
    ptr = make_ptr(lengths)
    path = torch.cat(
        [torch.stack([torch.arange(a, b - 1), torch.arange(a + 1, b)]) for a, b in zip(ptr[:-1], ptr[1:]) if b - a > 1],
        1,
    )
    path = torch.cat([path, path.flip(0)], 1)
    assert torch.equal(P.khop(w, path).edge_index(ptr), P.window(w).edge_index(ptr))


# --------------------------------------------------------------------------- stats


@pytest.mark.parametrize("n", [1, 2, 7, 64, 100])
@pytest.mark.parametrize("w", [1, 3, 16])
def test_window_path_length_closed_form(n, w):
    stats = P.window(w).stats(make_ptr([n]))
    assert stats["max_path_length"] == (math.ceil((n - 1) / w) if n > 1 else 0)


def test_stats_known_values():
    ptr = make_ptr([10, 4])
    d = P.dense().stats(ptr)
    assert d["max_path_length"] == 1 and d["num_edges"] == 116 and d["density"] == 1.0
    assert d["keys_per_query_min"] == 4 and d["keys_per_query_max"] == 10
    c = P.causal().stats(ptr)
    assert c["max_path_length"] == math.inf  # position 0 never sees position 1
    assert c["num_edges"] == 55 + 10
    w = P.window(2).stats(make_ptr([20]), num_layers=3)
    assert w["receptive_field_max"] == 13 and w["receptive_field_min"] == 7
    assert w["keys_per_query_mean"] == pytest.approx((20 * 5 - 2 * 3) / 20)
    assert P.block(4).stats(ptr)["max_path_length"] == math.inf
    assert P.bigbird(1, num_global=1, num_random=0, seed=0).stats(ptr)["max_path_length"] == 2
    assert P.cross().stats(ptr, key_ptr=make_ptr([3, 3]))["max_path_length"] is None


@pytest.mark.parametrize(
    "pattern",
    [P.window(3), P.causal() & P.window(2), P.Band(1, 4), P.dense(), P.causal(), P.Band(0, 2)],
    ids=repr,
)
@pytest.mark.parametrize("num_layers", [1, 2, 5])
def test_band_closed_form_equals_bfs(pattern, num_layers):
    for n in [1, 2, 9, 30]:
        ei = pattern.edge_index(make_ptr([n]))
        path, rf = bfs_reach(ei, n, num_layers)
        closed_path, closed_rf = pattern.closed_form_reach(n, num_layers)
        assert path == closed_path
        assert torch.equal(rf, closed_rf)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_hub_shortcut_equals_bfs(num_layers):
    for pattern in [P.global_tokens([0]), P.bigbird(1, 1, 1, seed=0), P.window(30) | P.global_tokens([2])]:
        ptr = make_ptr([1, 6, 17])
        stats = pattern.stats(ptr, num_layers=num_layers)
        worst, rfs = 0, []
        for a, b in zip(ptr[:-1].tolist(), ptr[1:].tolist()):
            ei = pattern.edge_index(make_ptr([b - a]))
            path, rf = bfs_reach(ei, b - a, num_layers)
            worst, rfs = max(worst, path), rfs + rf.tolist()
        assert stats["max_path_length"] == worst
        assert stats["receptive_field_mean"] == pytest.approx(sum(rfs) / len(rfs))


def test_stats_of_graph_pattern_uses_bfs():
    # Two paths of 5 nodes (undirected): diameter 4, so 4 layers.
    ei = torch.tensor([[0, 1, 2, 3, 5, 6, 7, 8], [1, 2, 3, 4, 6, 7, 8, 9]])
    ei = torch.cat([ei, ei.flip(0)], 1)
    assert P.graph(ei).stats(make_ptr([5, 5]))["max_path_length"] == 4
    assert P.khop(2, ei).stats(make_ptr([5, 5]))["max_path_length"] == 2


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: P.global_tokens([]), ValueError, "indices"),
        (lambda: P.window(-3), ValueError, "w"),
        (lambda: P.window(2.5), TypeError, "w"),
        (lambda: P.window(True), TypeError, "w"),
        (lambda: P.dilated(2, 0), ValueError, "dilation"),
        (lambda: P.block(0), ValueError, "size"),
        (lambda: P.global_tokens([-1]), ValueError, "indices"),
        (lambda: P.global_tokens("0"), TypeError, "indices"),
        (lambda: P.random(3, seed=None), ValueError, "seed"),
        (lambda: P.random(0, seed=1), ValueError, "num_keys"),
        (lambda: P.bigbird(0, 1, 1, seed=0), ValueError, "window"),
        (lambda: P.graph(torch.tensor([[0, 1], [1, 0]], dtype=torch.int32)), TypeError, "edge_index"),
        (lambda: P.graph(torch.zeros(3, 4, dtype=torch.long)), ValueError, "edge_index"),
        (lambda: P.graph([[0, 1], [1, 0]]), TypeError, "edge_index"),
        (lambda: P.khop(0, torch.zeros(2, 1, dtype=torch.long)), ValueError, "k"),
        (lambda: P.khop(torch.zeros(2, 1, dtype=torch.long), 2), TypeError, "k must be an int"),
        (lambda: P.window(2) | "dense", TypeError, "Pattern"),
        (lambda: P.cross(P.graph(torch.zeros(2, 0, dtype=torch.long))), ValueError, "position-based"),
    ],
)
def test_bad_construction(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize(
    "ptr, exc, match",
    [
        (torch.tensor([[0, 2]]), ValueError, "1-D"),
        (torch.tensor([1, 3]), ValueError, "start at 0"),
        (torch.tensor([0, 3, 2]), ValueError, "non-decreasing"),
        (torch.tensor([0.0, 2.0]), TypeError, "integer"),
        ("0,2", TypeError, "ptr"),
        (torch.tensor([], dtype=torch.long), ValueError, "1-D"),
    ],
)
def test_bad_ptr(ptr, exc, match):
    with pytest.raises(exc, match=match):
        P.window(2).edge_index(ptr)


def test_bad_graph_against_ptr():
    ei = torch.tensor([[0, 5], [1, 2]])
    with pytest.raises(ValueError, match="outside"):
        P.graph(ei).edge_index(make_ptr([3]))
    with pytest.raises(ValueError, match="different examples"):
        P.graph(ei).edge_index(make_ptr([3, 3]))
    with pytest.raises(ValueError, match="key_ptr"):
        P.graph(ei).edge_index(make_ptr([6]), make_ptr([6]))
    with pytest.raises(ValueError, match="outside"):
        P.dense().contains(torch.tensor([[9], [0]]), make_ptr([3]))


def test_list_ptr_accepted():
    assert torch.equal(P.window(1).edge_index([0, 2, 3]), P.window(1).edge_index(torch.tensor([0, 2, 3])))


# --------------------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 12), min_size=1, max_size=5),
    left=st.one_of(st.none(), st.integers(0, 6)),
    right=st.one_of(st.none(), st.integers(0, 6)),
)
def test_band_property(lengths, left, right):
    def rule(t, s, n, m):
        return (left is None or t - s <= left) and (right is None or s - t <= right)

    assert torch.equal(P.Band(left, right).to_dense(make_ptr(lengths)), brute_force(rule, lengths))


@settings(max_examples=30, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 10), min_size=1, max_size=4),
    w=st.integers(1, 4),
    size=st.integers(1, 5),
)
def test_union_and_intersection_property(lengths, w, size):
    ptr = make_ptr(lengths)
    a, b = P.window(w), P.block(size) | P.global_tokens([1])
    ma, mb = a.to_dense(ptr), b.to_dense(ptr)
    assert torch.equal((a | b).to_dense(ptr), ma | mb)
    assert torch.equal((a & b).to_dense(ptr), ma & mb)
    assert torch.equal((b & P.dilated(2, 2)).to_dense(ptr), mb & P.dilated(2, 2).to_dense(ptr))


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("dense", P.dense()),
        ("causal&window:16", P.causal() & P.window(16)),
        ("window:2|global:0", P.window(2) | P.global_tokens([0])),
        ("bigbird:2:1:2:7", P.bigbird(2, 1, 2, seed=7)),
        ("dilated:2:3", P.dilated(2, 3)),
        ("block:4&causal", P.block(4) & P.causal()),
        ("random:3:1", P.random(3, seed=1)),
        ("global:0:5", P.global_tokens([0, 5])),
    ],
)
def test_parse(spec, expected):
    ptr = make_ptr(LENGTHS)
    assert torch.equal(P.parse(spec).edge_index(ptr), expected.edge_index(ptr))


@pytest.mark.parametrize("spec, match", [("windo:3", "valid names"), ("window", "takes 1"), ("window:x", "integers"), ("", "non-empty"), ("window:-1", "integers|w must"), ("(window:2", "expected"), ("window:2|", "expected a pattern"), ("window:2)", "unexpected"), ("graph:2", "graph takes 0")])
def test_parse_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        P.parse(spec)


# --------------------------------------------------------------------------- one grammar, value equality


ROUND_TRIP = [
    P.dense(), P.causal(), P.window(3), P.causal() & P.window(5), P.Band(1, 3), P.Band(None, 2), P.block(4),
    P.dilated(2, 3), P.global_tokens([0, 5]), P.random(3, seed=1), P.bigbird(2, 1, 2, seed=7),
    P.block(4) & P.causal(), P.dilated(3, 2) & P.window(4), (P.window(1) | P.global_tokens([2])) & P.causal(),
    P.graph(), P.graph(self_loops=False), P.khop(3), P.graph() | P.window(2), P.cross(), P.cross(P.window(2)),
]


@pytest.mark.parametrize("pattern", ROUND_TRIP, ids=repr)
def test_repr_is_the_grammar_and_parses_back_to_an_equal_pattern(pattern):
    again = P.parse(repr(pattern))
    assert again == pattern and hash(again) == hash(pattern)
    if pattern.position_based and not pattern.bipartite:
        assert torch.equal(again.edge_index(make_ptr(LENGTHS)), pattern.edge_index(make_ptr(LENGTHS)))


def test_patterns_compare_by_value_not_by_repr():
    a, b = torch.tensor([[0, 1], [1, 0]]), torch.tensor([[0, 2], [2, 0]])
    assert repr(P.graph(a)) == repr(P.graph(b))  # both print as graph(<2 edges>) ...
    assert P.graph(a) != P.graph(b)  # ... yet they are different patterns
    assert P.graph(a) == P.graph(a.clone())
    assert P.window(2) != P.window(3) and P.window(2) == P.window(2)
    assert P.random(3, seed=1) != P.random(3, seed=2)
    assert P.window(2) != "window:2"
    assert len({P.window(2), P.parse("window:2"), P.causal()}) == 2


def test_as_pattern_takes_specs_and_objects():
    assert P.as_pattern("window:4") == P.window(4)
    assert P.as_pattern(P.causal()) == P.causal()
    assert P.as_pattern(None, default=P.dense()) == P.dense()
    with pytest.raises(TypeError, match="encoder_pattern must be a graphattn Pattern or a pattern spec"):
        P.as_pattern(3, "encoder_pattern")
    with pytest.raises(ValueError, match="encoder_pattern: unknown pattern 'gps'"):
        P.as_pattern("gps", "encoder_pattern")


def test_unbound_graph_pattern_reads_the_batch_graph():
    ptr = make_ptr(LENGTHS)
    ei = random_graph(LENGTHS, seed=4)
    for k in (1, 2):
        bound = P.khop(k, ei) if k > 1 else P.graph(ei)
        unbound = P.parse("graph" if k == 1 else f"khop:{k}")
        assert torch.equal(unbound.edge_index(ptr, graph=ei), bound.edge_index(ptr))
    union = P.parse("graph|window:1")
    expected = P.graph(ei).to_dense(ptr) | P.window(1).to_dense(ptr)
    assert torch.equal(union.to_dense(ptr, graph=ei), expected)
    with pytest.raises(ValueError, match="reads the batch's graph"):
        P.graph().edge_index(ptr)


class EveryOther(P.Pattern):
    """The custom pattern of the patterns.base docstring: s % 2 == t % 2 within an example."""

    def build_edges(self, query, key):
        dense = P.Band(None, None).build_edges(query, key)
        keep = query.pos[dense[1]] % 2 == key.pos[dense[0]] % 2
        return dense[:, keep]

    def __repr__(self):
        return "every_other"


def test_a_custom_pattern_through_the_public_hooks():
    ptr = make_ptr(LENGTHS)
    pattern = EveryOther()
    expected = brute_force(lambda t, s, n, m: t % 2 == s % 2, LENGTHS)
    assert torch.equal(pattern.to_dense(ptr), expected)
    combined = pattern & P.window(2)  # combines with the built-in ones
    assert torch.equal(combined.to_dense(ptr), expected & P.window(2).to_dense(ptr))
    stats = pattern.stats(make_ptr([6]))
    assert stats["max_path_length"] == math.inf  # odd and even positions never mix
    all_pairs = torch.cartesian_prod(torch.arange(int(ptr[-1])), torch.arange(int(ptr[-1]))).t()
    assert torch.equal(pattern.contains(all_pairs, ptr), expected[all_pairs[1], all_pairs[0]])


@pytest.mark.parametrize("spec", ["dense", "causal", "window:2", "block:4", "random:3:0", "global:0", "graph", "khop:2",
                                  "graph|expander:4:0", "graph|dense", "graph|causal", "dense&graph", "graph|global:0"])
def test_keys_grow_with_size_agrees_with_the_pattern_s_own_pairs(spec):
    """The most keys of a query, counted on the pattern's edges of a path of 16 and of 64 nodes,
    grow with the length exactly where the pattern says so."""
    pattern = P.parse(spec)

    def most_keys(n):
        path = torch.stack([torch.arange(n - 1), torch.arange(1, n)])
        edges = pattern.edge_index(torch.tensor([0, n]), graph=torch.cat([path, path.flip(0)], 1))
        return int(torch.bincount(edges[1], minlength=n).max())

    assert pattern.keys_grow_with_size() == (most_keys(64) > most_keys(16))
