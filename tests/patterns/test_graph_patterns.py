"""Graph patterns beyond the adjacency: hop expansion, expanders and virtual nodes, against networkx
and brute-force definitions."""
import networkx as nx
import pytest
import torch

from graphattn import patterns as P
from graphattn.patterns import hops
from graphattn.patterns.expander import expander
from graphattn.patterns.hops import hop_counts, hop_expansion
from graphattn.patterns.virtual import add_virtual_nodes, insert_virtual_keys, split_virtual, virtual_nodes, virtual_pairs

LENGTHS = [7, 1, 0, 12, 5, 30]


def make_ptr(lengths):
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())


def random_digraph(lengths, p=0.2, seed=0):
    """Directed random edges inside each example (global numbering), with a self loop and a duplicate."""
    gen = torch.Generator().manual_seed(seed)
    ptr, edges = make_ptr(lengths), []
    for b, n in enumerate(lengths):
        mask = torch.rand(n, n, generator=gen) < p
        edges.append(mask.nonzero().t() + ptr[b])
    ei = torch.cat(edges, 1)
    return torch.cat([ei, ei[:, :1], torch.tensor([[3], [3]])], 1)


def nx_distances(edge_index, num_nodes):
    g = nx.DiGraph()
    g.add_nodes_from(range(num_nodes))
    g.add_edges_from(edge_index.t().tolist())
    return dict(nx.all_pairs_shortest_path_length(g))  # dist[j][i]: hops from j to i


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_hop_expansion_equals_networkx(depth):
    n = sum(LENGTHS)
    ei = random_digraph(LENGTHS)
    pairs, hop = hop_expansion(ei, n, depth)
    dist = nx_distances(ei, n)
    expected = sorted((i, j, d) for j in range(n) for i, d in dist[j].items() if d <= depth)
    assert [(i, j, d) for (j, i), d in zip(pairs.t().tolist(), hop.tolist())] == expected
    assert hop.dtype == torch.uint8


def test_hop_expansion_in_small_chunks_equals_one_chunk(monkeypatch):
    n = sum(LENGTHS)
    ei = random_digraph(LENGTHS, p=0.3)
    whole = hop_expansion(ei, n, 3)
    monkeypatch.setattr(hops, "HOP_BUDGET", 7)  # chunks of a query or two
    chunked = hop_expansion(ei, n, 3)
    assert torch.equal(whole[0], chunked[0]) and torch.equal(whole[1], chunked[1])
    some = torch.tensor([3, 8, 20, 40])
    part = hop_expansion(ei, n, 2, queries=some)
    full = hop_expansion(ei, n, 2)
    keep = torch.isin(full[0][1], some)
    assert torch.equal(part[0], full[0][:, keep]) and torch.equal(part[1], full[1][keep])


def test_hop_expansion_refuses_too_many_pairs_with_the_memory_it_needs():
    ei = random_digraph([200], p=0.1)
    with pytest.raises(ValueError, match=r"khop:3 has about [\d,]+ pairs .* GiB"):
        hop_expansion(ei, 200, 3, max_pairs=1000)


def test_hop_counts_of_any_pairs_equal_networkx():
    n = sum(LENGTHS)
    ei = random_digraph(LENGTHS, p=0.15, seed=1)
    pairs = P.dense().edge_index(make_ptr(LENGTHS))
    dist = nx_distances(ei, n)
    got = hop_counts(ei, pairs, n, 2)
    expected = [dist[j].get(i, 99) if dist[j].get(i, 99) <= 2 else 3 for j, i in pairs.t().tolist()]
    assert got.tolist() == expected and {0, 1, 2, 3} <= set(expected)
    with pytest.raises(ValueError, match="sorted by query"):
        hop_counts(ei, pairs.flip(1), n, 2)


def test_khop_pattern_is_the_hop_expansion():
    n = sum(LENGTHS)
    ei = random_digraph(LENGTHS)
    assert torch.equal(P.khop(2, ei).edge_index(make_ptr(LENGTHS)), hop_expansion(ei, n, 2)[0])


# --------------------------------------------------------------------------- expander


@pytest.mark.parametrize("degree", [2, 4, 6])
def test_expander_is_a_union_of_hamiltonian_cycles(degree):
    ptr = make_ptr(LENGTHS)
    pattern = expander(degree, seed=3)
    table = pattern.neighbours(P.Pattern().layouts(ptr)[0])
    for b, n in enumerate(LENGTHS):
        lo = int(ptr[b])
        for c in range(degree // 2):
            succ = table[lo:lo + n, 2 * c + 1] - lo
            prev = table[lo:lo + n, 2 * c] - lo
            assert torch.equal(prev[succ], torch.arange(n))  # prev undoes succ: one permutation
            node, seen = 0, set()
            for _ in range(n):  # following succ visits every node once: a Hamiltonian cycle
                seen.add(node)
                node = int(succ[node])
            assert node == 0 and len(seen) == n


def test_expander_is_regular_symmetric_and_connected():
    n, degree = 300, 6
    ei = expander(degree, seed=1).edge_index(torch.tensor([0, n]))
    g = nx.Graph(ei.t().tolist())
    assert set(map(tuple, ei.t().tolist())) == set(map(tuple, ei.flip(0).t().tolist()))  # symmetric
    degrees = torch.bincount(ei[1], minlength=n)
    assert int(degrees.max()) == degree and int((degrees < degree).sum()) <= degree ** 2  # rare coincidences
    assert nx.is_connected(g) and nx.diameter(g) <= 8 and not any(u == v for u, v in g.edges)
    # An expander: the second eigenvalue of the walk matrix is well below 1 (spectral gap).
    import numpy as np

    walk = nx.to_numpy_array(g) / degrees.numpy()[:, None]
    assert sorted(abs(np.linalg.eigvals(walk)))[-2] < 0.95


def test_expander_is_batch_invariant_and_seeded():
    ptr = make_ptr(LENGTHS)
    pattern = expander(4, seed=0)
    batched = pattern.edge_index(ptr)
    for b, n in enumerate(LENGTHS):
        alone = pattern.edge_index(torch.tensor([0, n])) + int(ptr[b])
        mine = batched[:, (batched[1] >= ptr[b]) & (batched[1] < ptr[b + 1])]
        assert torch.equal(mine, alone)
    assert torch.equal(pattern.edge_index(ptr), batched)
    assert not torch.equal(expander(4, seed=1).edge_index(ptr), batched)
    # Small examples (n <= degree) are attended densely, self excluded.
    small = pattern.edge_index(torch.tensor([0, 3]))
    assert small.t().tolist() == [[1, 0], [2, 0], [0, 1], [2, 1], [0, 2], [1, 2]]


def test_expander_refuses_bad_arguments():
    for args, error, match in [((3, 0), ValueError, "even"), ((0, 0), ValueError, "degree"),
                               ((4, None), ValueError, "seed"), ((4.0, 0), TypeError, "degree"),
                               ((4, -1), ValueError, "seed")]:
        with pytest.raises(error, match=match):
            expander(*args)
    with pytest.raises(ValueError, match="key_ptr"):
        expander(4, 0).edge_index(torch.tensor([0, 4]), key_ptr=torch.tensor([0, 4]))


# --------------------------------------------------------------------------- virtual nodes


def test_virtual_nodes_attend_and_are_attended_by_exactly_their_example():
    ptr = make_ptr(LENGTHS)
    n, k = sum(LENGTHS), 2
    real = P.graph().edge_index(ptr, graph=random_digraph(LENGTHS))
    pairs, position = virtual_pairs(ptr, k, real)
    assert torch.equal(pairs[:, position], real)
    keys = pairs[1] * (n + 2 * len(LENGTHS)) + pairs[0]
    assert bool((keys[1:] > keys[:-1]).all())  # sorted by query, then key, no duplicates
    batch = torch.repeat_interleave(torch.arange(len(LENGTHS)), torch.tensor(LENGTHS))
    example = torch.cat([batch, torch.arange(len(LENGTHS)).repeat_interleave(k)])  # of every node
    virtual = pairs[:, ~torch.isin(torch.arange(pairs.size(1)), position)]
    for v in range(n, n + k * len(LENGTHS)):
        b = int(example[v])
        members = set((example == b).nonzero().squeeze(1).tolist())
        assert set(virtual[0, virtual[1] == v].tolist()) == members  # reads its whole example
        assert set(virtual[1, virtual[0] == v].tolist()) == members  # and is read by it
    assert bool((example[virtual[0]] == example[virtual[1]]).all())


@pytest.mark.parametrize("lo, hi, k", [(0, 11, 1), (3, 9, 2), (5, 5, 3)])
def test_insert_virtual_keys_puts_each_querys_virtual_keys_after_its_real_ones(lo, hi, k):
    # A chunk of queries lo .. hi - 1, as layer-wise inference takes them; first_virtual differs per query.
    real = P.graph().edge_index(make_ptr([11]), graph=random_digraph([11]))
    chunk = real[:, (real[1] >= lo) & (real[1] < hi)]
    first_virtual = 20 + 7 * torch.arange(hi - lo)
    pairs, position = insert_virtual_keys(chunk, first_virtual, k, first_query=lo)
    expected = []  # query by query: its real keys in order, then its k virtual keys
    for q in range(lo, hi):
        expected += [(int(j), q) for j in chunk[0, chunk[1] == q]]
        expected += [(int(first_virtual[q - lo]) + r, q) for r in range(k)]
    assert pairs.t().tolist() == [list(pair) for pair in expected]
    assert torch.equal(pairs[:, position], chunk)


def test_virtual_pattern_on_a_layout_equals_global_tokens_at_the_end():
    ptr = make_ptr(LENGTHS)
    rule = P.Pattern()  # brute force: t or s among the last k positions of the example
    query, _ = rule.layouts(ptr)
    for k in (1, 3):
        virtual = (query.pos >= query.sizes[query.batch] - k)
        same = query.batch.unsqueeze(1) == query.batch.unsqueeze(0)
        expected = same & (virtual.unsqueeze(1) | virtual.unsqueeze(0))
        assert torch.equal(virtual_nodes(k).to_dense(ptr), expected)
    assert P.parse("virtual:2") == virtual_nodes(2) and repr(virtual_nodes(2)) == "virtual:2"


def test_bigbird_of_graphs_is_named_in_the_grammar_and_splits():
    pattern = P.parse("graph|expander:4:0|virtual:1")
    assert repr(pattern) == "graph|expander:4:0|virtual:1" and P.parse(repr(pattern)) == pattern
    rest, k = split_virtual(pattern)
    assert k == 1 and rest == P.parse("graph|expander:4:0")
    assert split_virtual(P.parse("virtual:2")) == (None, 2)
    assert split_virtual(P.parse("khop:2")) == (P.khop(2), 0)
    with pytest.raises(ValueError, match="union"):
        split_virtual(P.parse("dense&virtual:1"))
    for bad in ("expander:4", "virtual", "virtual:0", "expander:3:0"):
        with pytest.raises(ValueError):
            P.parse(bad)


def test_stats_report_the_reach_of_graph_patterns_on_a_real_graph():
    karate = nx.karate_club_graph()
    ei = torch.tensor(list(karate.edges)).t()
    ei = torch.cat([ei, ei.flip(0)], 1)
    ptr = torch.tensor([0, 34])
    graph = P.graph().stats(ptr, graph=ei)
    assert graph["max_path_length"] == nx.diameter(karate) == 5
    wide = P.parse("graph|expander:4:0").stats(ptr, graph=ei)
    assert wide["max_path_length"] < graph["max_path_length"]
    full = P.parse("graph|expander:4:0|virtual:1").stats(*add_virtual_nodes(ptr, 1, ei)[:1],
                                                          graph=add_virtual_nodes(ptr, 1, ei)[1])
    assert full["max_path_length"] == 2 and full["num_nodes"] == 35
