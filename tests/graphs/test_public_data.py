"""Public benchmark loaders: sizes, labels and split counts against the raw files read independently."""
import csv
import pickle

import numpy as np
import pytest
import torch

from graphattn.graphs import public_data as D

DATA = D.data_dir()


def need(folder: str):
    if not (DATA / folder).is_dir():
        pytest.skip(f"{DATA / folder} is absent: the files come from {D.SOURCES[folder]} (set GRAPHATTN_DATA)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("pyg-cache")


@pytest.mark.parametrize("name", D.HETEROPHILOUS)
def test_heterophilous_matches_the_npz(name, cache):
    need("heterophilous")
    data = D.heterophilous(name, cache=cache)
    raw = np.load(DATA / "heterophilous" / f"{name}.npz")
    assert torch.equal(data.x, torch.from_numpy(raw["node_features"]))
    assert torch.equal(data.y, torch.from_numpy(raw["node_labels"]))
    for part in ("train", "val", "test"):
        masks = raw[f"{part}_masks"]
        assert masks.shape[0] == 10 and tuple(getattr(data, f"{part}_mask").shape) == (data.num_nodes, 10)
        assert (getattr(data, f"{part}_mask").sum(0).numpy() == masks.sum(1)).all()
        assert torch.equal(getattr(data, f"{part}_mask"), torch.from_numpy(masks).t())
    pairs = {tuple(e) for e in raw["edges"].tolist()}
    undirected = pairs | {(v, u) for u, v in pairs}
    assert set(map(tuple, data.edge_index.t().tolist())) == undirected
    assert data.edge_index.size(1) == len(undirected)


def test_cora_public_split(cache):
    need("planetoid")
    data = D.cora(cache=cache)
    folder = DATA / "planetoid"
    with open(folder / "ind.cora.ally", "rb") as f:
        ally = pickle.load(f, encoding="latin1")
    with open(folder / "ind.cora.graph", "rb") as f:
        graph = pickle.load(f, encoding="latin1")
    test_index = [int(line) for line in open(folder / "ind.cora.test.index")]
    assert data.num_nodes == ally.shape[0] + len(test_index) == 2708
    assert [int(m.sum()) for m in (data.train_mask, data.val_mask, data.test_mask)] == [140, 500, 1000]
    assert data.train_mask[:140].all() and data.val_mask[140:640].all()
    assert torch.equal(data.y[:140], torch.from_numpy(np.asarray(ally[:140]).argmax(1)))
    edges = {(u, v) for u, vs in graph.items() for v in vs if u != v}
    assert set(map(tuple, data.edge_index.t().tolist())) == edges | {(v, u) for u, v in edges}


def _rows(name: str) -> list[dict]:
    with open(DATA / "moleculenet" / D.MOLECULES[name], newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.filterwarnings("ignore:Skipping molecule")  # BBBP's 11 SMILES that rdkit cannot parse
@pytest.mark.parametrize("name,smiles,target", [("Lipo", "smiles", "exp"), ("BBBP", "smiles", "p_np"),
                                                ("BACE", "smiles", "Class")])
def test_moleculenet_matches_the_csv(name, smiles, target, cache):
    need("moleculenet")
    Chem = pytest.importorskip("rdkit.Chem")
    dataset = D.moleculenet(name, cache=cache)
    rows = [r for r in _rows(name) if (m := Chem.MolFromSmiles(r[smiles])) is not None and m.GetNumAtoms()]
    assert len(dataset) == len(rows) > 1000
    assert [d.smiles for d in dataset] == [r[smiles] for r in rows]
    assert torch.allclose(torch.cat([d.y for d in dataset]).squeeze(1), torch.tensor([float(r[target]) for r in rows]))
    first = dataset[0]
    assert first.x.size(0) == Chem.MolFromSmiles(rows[0][smiles]).GetNumAtoms()
    assert first.x.is_floating_point() and first.edge_attr.is_floating_point()


def _scaffold(s):
    from rdkit.Chem.Scaffolds import MurckoScaffold
    return MurckoScaffold.MurckoScaffoldSmiles(smiles=s, includeChirality=False)


@pytest.mark.filterwarnings("ignore:Skipping molecule")
def test_scaffold_split_is_deterministic_and_scaffold_disjoint(cache):
    need("moleculenet")
    pytest.importorskip("rdkit")
    smiles = [d.smiles for d in D.moleculenet("BACE", cache=cache)]
    parts = D.scaffold_split(smiles)
    assert parts == D.scaffold_split(list(smiles))
    assert sorted(i for p in parts for i in p) == list(range(len(smiles)))
    scaffolds = [{_scaffold(smiles[i]) for i in p} for p in parts]
    assert not (scaffolds[0] & scaffolds[1]) and not (scaffolds[0] & scaffolds[2]) and not (scaffolds[1] & scaffolds[2])
    n = len(smiles)
    assert len(parts[0]) <= 0.8 * n and len(parts[0]) + len(parts[1]) <= 0.9 * n and len(parts[0]) > 0.75 * n


def test_scaffold_split_fills_train_with_the_largest_scaffolds():
    pytest.importorskip("rdkit")
    # 6 benzenes, 3 pyridines, 1 cyclohexane: scaffolds of sizes 6, 3, 1.
    smiles = ["Cc1ccccc1", "Oc1ccccc1", "Nc1ccccc1", "c1ccccc1CC", "Clc1ccccc1", "Brc1ccccc1",
              "Cc1ccncc1", "Oc1ccncc1", "Nc1ccncc1", "CC1CCCCC1"]
    assert D.scaffold_split(smiles, (0.6, 0.3, 0.1)) == [[0, 1, 2, 3, 4, 5], [6, 7, 8], [9]]
    # A group that does not fit in train goes on to validation, and smaller ones may still fill train.
    assert D.scaffold_split(smiles, (0.5, 0.4, 0.1)) == [[6, 7, 8, 9], [0, 1, 2, 3, 4, 5], []]
    with pytest.raises(ValueError, match="fractions"):
        D.scaffold_split(smiles, (0.8, 0.1))


def test_missing_files_say_where_they_come_from(tmp_path):
    with pytest.raises(FileNotFoundError, match="yandex-research/heterophilous-graphs"):
        D.heterophilous("minesweeper", data=tmp_path, cache=tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match="kimiyoung/planetoid"):
        D.cora(data=tmp_path, cache=tmp_path / "cache")
    with pytest.raises(ValueError, match="name"):
        D.heterophilous("texas", data=tmp_path)


def test_data_dir_from_argument_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHATTN_DATA", str(tmp_path / "env"))
    assert D.data_dir() == tmp_path / "env" and D.data_dir(tmp_path) == tmp_path
    monkeypatch.delenv("GRAPHATTN_DATA")
    assert D.data_dir().parts[-2:] == ("shared", "data")
