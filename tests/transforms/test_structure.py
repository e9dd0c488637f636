"""GraphStructure: pairs, hop buckets and edge ids computed once per graph, batched by PyG."""
import networkx as nx
import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.utils import coalesce, to_undirected

from graphattn import patterns as P
from graphattn.transforms import GraphStructure, pair_edge_ids, pattern_pairs
from graphattn.transforms.structure import check_fingerprint, edge_fingerprint, pair_edge_ids_of_batch

PATTERNS = ["graph", "graph:0", "khop:2", "khop:3", "dense", "graph|expander:2:0", "window:1", "graph|virtual:1"]


def random_graph(n, gen, p=0.3):
    mask = torch.rand(n, n, generator=gen) < p
    ei = coalesce(to_undirected(mask.triu(1).nonzero().t(), num_nodes=n), num_nodes=n)
    return Data(x=torch.randn(n, 2, generator=gen), edge_index=ei, num_nodes=n)


@pytest.fixture
def graphs():
    gen = torch.Generator().manual_seed(0)
    return [random_graph(n, gen) for n in (9, 1, 6, 12)]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_batched_fields_equal_the_fields_of_the_batch(graphs, pattern):
    transform = GraphStructure(pattern, max_distance=2)
    batch = Batch.from_data_list([transform(g.clone()) for g in graphs])
    direct = transform.structure(Batch.from_data_list(graphs))
    assert torch.equal(batch.pair_index, direct["pair_index"])  # PyG shifted pair_index per graph
    assert torch.equal(batch.pair_bucket, direct["pair_bucket"])
    ids = pair_edge_ids_of_batch(batch.pair_edge, batch.pair_index, batch.edge_index, batch.ptr)
    assert torch.equal(ids, pair_edge_ids(batch.edge_index, batch.pair_index, batch.num_nodes))
    assert batch.pair_spec == [transform.spec] * len(graphs)


def test_fields_against_networkx(graphs):
    data = graphs[3]
    out = GraphStructure("dense", max_distance=2)(data.clone())
    g = nx.Graph(data.edge_index.t().tolist())
    g.add_nodes_from(range(data.num_nodes))
    dist = dict(nx.all_pairs_shortest_path_length(g))
    for (j, i), bucket, edge in zip(out.pair_index.t().tolist(), out.pair_bucket.tolist(), out.pair_edge.tolist()):
        d = dist[j].get(i, 99)
        assert bucket == (d if d <= 2 else 3)
        assert (edge >= 0) == (d == 1) and (edge < 0 or data.edge_index[:, edge].tolist() == [j, i])


def test_khop_buckets_come_from_the_expansion_and_are_clipped():
    path = Data(edge_index=to_undirected(torch.tensor([[0, 1, 2, 3], [1, 2, 3, 4]])), num_nodes=5)
    out = GraphStructure("khop:3", max_distance=2)(path)
    got = {(j, i): b for (j, i), b in zip(out.pair_index.t().tolist(), out.pair_bucket.tolist())}
    assert got[(0, 0)] == 0 and got[(1, 0)] == 1 and got[(2, 0)] == 2 and got[(3, 0)] == 3  # 3 > max: 3
    assert (4, 0) not in got


def test_pattern_pairs_leave_virtual_nodes_to_the_model(graphs):
    batch = Batch.from_data_list(graphs)
    with_virtual = pattern_pairs("graph|virtual:2", batch.ptr, batch.edge_index, 3)
    without = pattern_pairs("graph", batch.ptr, batch.edge_index, 3)
    assert torch.equal(with_virtual[0], without[0]) and torch.equal(with_virtual[1], without[1])
    assert pattern_pairs("virtual:1", batch.ptr, batch.edge_index, 3)[0].shape == (2, 0)
    assert GraphStructure("graph|virtual:2").num_virtual == 2


def test_a_changed_graph_is_caught(graphs):
    data = GraphStructure("graph")(graphs[0].clone())
    data.edge_index = data.edge_index.flip(1)
    with pytest.raises(ValueError, match="model.transform"):
        pair_edge_ids_of_batch(data.pair_edge, data.pair_index, data.edge_index, torch.tensor([0, data.num_nodes]))


def test_the_fingerprint_of_a_graph_is_the_same_alone_and_in_a_batch(graphs):
    transform = GraphStructure("graph")
    batch = Batch.from_data_list([transform(g.clone()) for g in graphs])
    assert batch.pair_fingerprint.shape == (len(graphs), 3)
    assert torch.equal(batch.pair_fingerprint, edge_fingerprint(batch.edge_index, batch.ptr, batch.batch))
    assert torch.equal(batch.pair_fingerprint[:, :2], torch.tensor([[g.num_nodes, g.edge_index.size(1)] for g in graphs]))
    assert batch.pair_fingerprint[:, 2].unique().numel() == len(graphs)  # different graphs, different hashes
    check_fingerprint(batch.pair_fingerprint, batch.edge_index, batch.ptr)  # no error


def edits(edge_index, n):
    """Changed copies of a graph's edges: one moved, one added, one removed, two reordered."""
    moved = edge_index.clone()
    moved[0, 0] = (moved[0, 0] + 1) % n
    return {"moved": moved, "added": torch.cat([edge_index, torch.tensor([[0], [n - 1]])], 1),
            "removed": edge_index[:, 1:], "reordered": edge_index[:, torch.arange(edge_index.size(1)).roll(1)]}


@pytest.mark.parametrize("edit", ["moved", "added", "removed", "reordered"])
def test_the_fingerprint_catches_changed_edges(graphs, edit):
    g = graphs[3]
    ptr = torch.tensor([0, g.num_nodes])
    changed = edits(g.edge_index, g.num_nodes)[edit]
    for ordered in (True, False):
        before = edge_fingerprint(g.edge_index, ptr, ordered=ordered)
        same = edit == "reordered" and not ordered  # the order counts only where pair_edge does
        assert torch.equal(before, edge_fingerprint(changed, ptr, ordered=ordered)) == same
        if not same:
            with pytest.raises(ValueError, match="edge_index changed after model.transform"):
                check_fingerprint(before, changed, ptr, ordered=ordered)
    with pytest.raises(ValueError, match="no data.pair_fingerprint"):
        check_fingerprint(None, g.edge_index, ptr)


def test_transforms_refuse_what_is_not_a_graph():
    for bad in (None, 3, torch.zeros(2, 3)):
        with pytest.raises(TypeError, match="data must be a torch_geometric Data or Batch"):
            GraphStructure("graph")(bad)
    with pytest.raises(ValueError, match="no edge_index"):
        GraphStructure("graph")(Data(x=torch.zeros(3, 1)))


def test_bad_arguments_are_refused():
    for kwargs, error, match in [({"pattern": "khop"}, ValueError, "takes 1"), ({"max_distance": 0}, ValueError,
                                 "max_distance"), ({"max_pairs": 0}, ValueError, "max_pairs"),
                                 ({"pattern": 5}, TypeError, "pattern")]:
        with pytest.raises(error, match=match):
            GraphStructure(**kwargs)
    big = Data(edge_index=to_undirected(torch.randint(0, 300, (2, 3000))), num_nodes=300)
    with pytest.raises(ValueError, match="GiB"):
        GraphStructure("khop:3", max_pairs=5000)(big)
    assert repr(GraphStructure("khop:2", 4)) == "GraphStructure('khop:2', max_distance=4)"


def test_unions_search_no_deeper_than_their_graph_part():
    # A path 0 - 1 - 2 - 3 - 4 - 5: expander pairs two or more hops apart are "farther" under
    # graph|expander (searched 1 hop deep), and get their distance under expander alone.
    path = Data(edge_index=to_undirected(torch.tensor([[0, 1, 2, 3, 4], [1, 2, 3, 4, 5]])), num_nodes=6)
    union = GraphStructure("graph|expander:2:1", max_distance=4)(path.clone())
    alone = GraphStructure("expander:2:1", max_distance=4)(path.clone())
    hops = {(j, i): abs(i - j) for j in range(6) for i in range(6)}
    got_union = dict(zip(map(tuple, union.pair_index.t().tolist()), union.pair_bucket.tolist()))
    got_alone = dict(zip(map(tuple, alone.pair_index.t().tolist()), alone.pair_bucket.tolist()))
    assert all(b == (hops[p] if hops[p] <= 1 else 5) for p, b in got_union.items())
    assert all(b == hops[p] for p, b in got_alone.items()) and max(got_alone.values()) >= 2
