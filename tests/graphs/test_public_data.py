"""Public benchmark loaders: sizes, labels and split counts against the raw files read independently."""
import csv
import multiprocessing
import os
import pickle

import numpy as np
import pytest
import torch
from filelock import FileLock

from graphattn.graphs import public_data as D

DATA = D.data_dir()


def need(folder: str):
    if not (DATA / folder).is_dir():
        pytest.skip(f"{DATA / folder} is absent: the files come from {D.SOURCES[folder]} (set GRAPHATTN_DATA)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("pyg-cache")


def assert_matches_npz(data, path):
    raw = np.load(path)
    assert data.x.dtype == torch.float32 and torch.equal(data.x, torch.from_numpy(raw["node_features"]).float())
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


@pytest.mark.parametrize("name", ("minesweeper", "chameleon_filtered", "squirrel_filtered"))
def test_heterophilous_matches_the_npz(name, cache):
    need("heterophilous")
    assert_matches_npz(D.heterophilous(name, cache=cache), DATA / "heterophilous" / f"{name}.npz")


@pytest.mark.parametrize("name,spelled", [("tolokers", "Tolokers"), ("roman_empire", "Roman-empire"),
                                          ("chameleon", "chameleon"), ("squirrel_filtered", "Squirrel_filtered")])
def test_every_heterophilous_name_reads_its_file(tmp_path, name, spelled):
    # A graph in the paper's layout under any of its names (the data folder here holds three): PyG's
    # class reads five, the chameleon/squirrel ones are read by hand; both give the same fields.
    rng = np.random.default_rng(0)
    n = 40
    edges = rng.integers(0, n, size=(90, 2))
    masks = {f"{part}_masks": rng.random((10, n)) < 0.3 for part in ("train", "val", "test")}
    (tmp_path / "heterophilous").mkdir()
    path = tmp_path / "heterophilous" / f"{name}.npz"
    np.savez(path, node_features=rng.standard_normal((n, 5)).astype(np.float16), node_labels=rng.integers(0, 3, n),
             edges=edges[edges[:, 0] != edges[:, 1]], **masks)
    assert_matches_npz(D.heterophilous(spelled, data=tmp_path, cache=tmp_path / "cache"), path)


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


def _write_npz(path, seed, n=40):
    rng = np.random.default_rng(seed)
    src = rng.integers(0, n, 90)
    edges = np.stack([src, (src + rng.integers(1, n, 90)) % n], 1)  # no self loops: the same size every seed
    masks = {f"{part}_masks": rng.random((10, n)) < 0.3 for part in ("train", "val", "test")}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, node_features=rng.standard_normal((n, 5)).astype(np.float32), node_labels=rng.integers(0, 3, n),
             edges=edges, **masks)


def test_a_changed_raw_file_is_processed_again(tmp_path):
    # PyG's classes read their processed file whenever it exists: a new file of the same name (of
    # the same size here) must not be answered with the old graph, and an unchanged one is not copied.
    cache = tmp_path / "cache"
    for seed in (0, 1):
        _write_npz(tmp_path / f"data{seed}" / "heterophilous" / "tolokers.npz", seed)
    old = tmp_path / "data0" / "heterophilous" / "tolokers.npz"
    new = tmp_path / "data1" / "heterophilous" / "tolokers.npz"
    assert old.stat().st_size == new.stat().st_size
    os.utime(new, ns=(old.stat().st_atime_ns, old.stat().st_mtime_ns + 10**9))
    assert_matches_npz(D.heterophilous("tolokers", data=tmp_path / "data0", cache=cache), old)
    assert_matches_npz(D.heterophilous("tolokers", data=tmp_path / "data1", cache=cache), new)
    processed = cache / "heterophilous" / "tolokers" / "processed" / "data.pt"
    before = processed.stat().st_mtime_ns
    assert_matches_npz(D.heterophilous("tolokers", data=tmp_path / "data1", cache=cache), new)
    assert processed.stat().st_mtime_ns == before


def test_processes_sharing_a_cache_wait_for_each_other(tmp_path):
    # Benchmark processes started together share one cache: without a lock they copied the same raw
    # file through the same temporary name, and one rename found the file gone (FileNotFoundError).
    path = tmp_path / "data" / "heterophilous" / "tolokers.npz"
    _write_npz(path, 0)
    cache, folder = tmp_path / "cache", tmp_path / "cache" / "heterophilous" / "tolokers"
    folder.mkdir(parents=True)
    fork = multiprocessing.get_context("fork")
    load = dict(target=D.heterophilous, args=("tolokers", tmp_path / "data", cache))
    with FileLock(str(folder / ".lock")):  # another process is placing the files
        waiting = fork.Process(**load)
        waiting.start()
        waiting.join(3)
        assert waiting.is_alive() and not (folder / "raw").exists()
    together = [fork.Process(**load) for _ in range(3)]
    for process in together:
        process.start()
    try:
        for process in [waiting, *together]:
            process.join(120)
            assert process.exitcode == 0
    finally:  # a process still waiting on a lock would outlive the test
        for process in [waiting, *together]:
            process.kill()
    assert_matches_npz(D.heterophilous("tolokers", data=tmp_path / "data", cache=cache), path)


@pytest.mark.parametrize("name", ("CiteSeer", "pubmed"))
def test_planetoid_reads_the_other_citation_graphs(tmp_path, name, cache):
    # Cora's files under another set's name: the same graph through the same class (its CiteSeer
    # branch fills isolated test nodes, which Cora has none of).
    need("planetoid")
    folder = tmp_path / "planetoid"
    folder.mkdir()
    for path in (DATA / "planetoid").glob("ind.cora.*"):
        (folder / path.name.replace("cora", name.lower())).write_bytes(path.read_bytes())
    other, cora = D.planetoid(name, data=tmp_path, cache=tmp_path / "cache"), D.cora(cache=cache)
    for key in ("x", "y", "edge_index", "train_mask", "val_mask", "test_mask"):
        assert torch.equal(other[key], cora[key]), key


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
    assert len(D.moleculenet({"Lipo": "Lipophilicity"}.get(name, name.lower()), cache=cache)) == len(dataset)
    rows = [r for r in _rows(name) if (m := Chem.MolFromSmiles(r[smiles])) is not None and m.GetNumAtoms()]
    assert len(dataset) == len(rows) > 1000
    assert [d.smiles for d in dataset] == [r[smiles] for r in rows]
    assert torch.allclose(torch.cat([d.y for d in dataset]).squeeze(1), torch.tensor([float(r[target]) for r in rows]))
    first = dataset[0]
    assert first.x.size(0) == Chem.MolFromSmiles(rows[0][smiles]).GetNumAtoms()
    assert first.x.is_floating_point() and first.edge_attr.is_floating_point()


@pytest.mark.filterwarnings("ignore:Skipping molecule")
def test_moleculenet_reads_any_pyg_set_packed_or_not(tmp_path):
    # ESOL (regression: the target is the second column from the end) as a csv, Tox21 (12 tasks,
    # missing labels NaN) as the .csv.gz PyG downloads: every set of PyG's table, from the local folder.
    pytest.importorskip("rdkit")
    import gzip
    folder = tmp_path / "moleculenet"
    folder.mkdir()
    smiles = ["CCO", "c1ccccc1O", "CC(=O)N"]
    esol = "Compound ID,predicted,measured log solubility,smiles\n" + "".join(
        f"m{i},0.0,{-i - 0.5},{s}\n" for i, s in enumerate(smiles))
    (folder / "delaney-processed.csv").write_text(esol)
    tasks = [[1, 0, "", 1, 0, 0, 1, "", 0, 0, 1, 0], [0] * 12, [""] * 11 + [1]]
    tox = ",".join(f"t{j}" for j in range(12)) + ",mol_id,smiles\n" + "".join(
        ",".join(map(str, t)) + f",m{i},{s}\n" for i, (t, s) in enumerate(zip(tasks, smiles)))
    with gzip.open(folder / "tox21.csv.gz", "wt") as f:
        f.write(tox)
    esol_set = D.moleculenet("esol", data=tmp_path, cache=tmp_path / "cache")
    assert "ESOL" in D.REGRESSION and [d.smiles for d in esol_set] == smiles
    assert torch.equal(torch.cat([d.y for d in esol_set]), torch.tensor([[-0.5], [-1.5], [-2.5]]))
    tox21 = D.moleculenet("Tox21", data=tmp_path, cache=tmp_path / "cache")
    y = torch.cat([d.y for d in tox21])
    expected = torch.tensor([[float(v) if v != "" else float("nan") for v in t] for t in tasks])
    assert y.shape == (3, 12) and torch.equal(y.isnan(), expected.isnan()) and torch.equal(y.nan_to_num(), expected.nan_to_num())
    with pytest.raises(FileNotFoundError, match="sider.csv.gz"):
        D.moleculenet("SIDER", data=tmp_path, cache=tmp_path / "cache")
    with pytest.raises(ValueError, match="name"):
        D.moleculenet("QM9", data=tmp_path)


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


@pytest.mark.filterwarnings("ignore:Skipping molecule")
def test_chiral_scaffolds_give_dgllife_groups(cache):
    # DGL-LifeSci's ScaffoldSplitter (scaffold_func="decompose") groups by the SMILES of rdkit's
    # MurckoDecompose, which keeps stereo: the same groups as include_chirality=True, not as False.
    need("moleculenet")
    pytest.importorskip("rdkit")
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from rdkit.Chem.rdmolops import FastFindRings

    smiles = [d.smiles for d in D.moleculenet("BACE", cache=cache)]
    groups = {}
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        FastFindRings(mol)
        groups.setdefault(Chem.MolToSmiles(AllChem.MurckoDecompose(mol)), []).append(i)
    ordered = sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)
    n, reference = len(smiles), [[], [], []]
    for g in ordered:  # DGL-LifeSci's cut-offs: int(0.8 n), int(0.9 n)
        part = 0 if len(reference[0]) + len(g) <= int(0.8 * n) else (
            1 if len(reference[0]) + len(reference[1]) + len(g) <= int(0.9 * n) else 2)
        reference[part] += g
    chiral = D.scaffold_split(smiles, include_chirality=True)
    assert chiral == [sorted(p) for p in reference]
    assert chiral[2] != D.scaffold_split(smiles)[2]


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
    with pytest.raises(FileNotFoundError, match="ind.pubmed.x"):
        D.planetoid("PubMed", data=tmp_path, cache=tmp_path / "cache")
    with pytest.raises(ValueError, match="name"):
        D.heterophilous("texas", data=tmp_path)
    with pytest.raises(ValueError, match="Planetoid"):
        D.planetoid("Computers", data=tmp_path)
    with pytest.raises(TypeError, match="name"):
        D.heterophilous(3, data=tmp_path)


def test_data_dir_from_argument_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHATTN_DATA", str(tmp_path / "env"))
    assert D.data_dir() == tmp_path / "env" and D.data_dir(tmp_path) == tmp_path
    monkeypatch.delenv("GRAPHATTN_DATA")
    assert D.data_dir().parts[-2:] == ("shared", "data")
