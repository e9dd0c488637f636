r"""Public graph benchmarks with their official splits, read from a local data folder (nothing downloads).

* :func:`heterophilous`: the graphs of "A critical look at the evaluation of GNNs under heterophily"
  (Platonov et al., ICLR 2023): ``roman_empire``, ``amazon_ratings``, ``minesweeper``, ``tolokers``,
  ``questions`` and ``chameleon`` / ``squirrel`` (``_filtered``: duplicates removed), with the 10
  fixed splits of the files as ``[N, 10]`` masks.
* :func:`planetoid`: Cora, CiteSeer, PubMed with Planetoid's public split (:func:`cora`: Cora).
* :func:`moleculenet`: every MoleculeNet set that PyG's ``MoleculeNet`` knows (Lipophilicity, BBBP,
  BACE, ESOL, FreeSolv, HIV, Tox21, ...) with one-hot atom and bond features, and
  :func:`scaffold_split`, the deterministic Bemis-Murcko split of MoleculeNet.

PyG's dataset classes read the raw files from ``<root>/<name>/raw/``; the functions copy them
there from the data folder, into a cache folder (``cache``, else ``$GRAPHATTN_CACHE``, else
``~/.cache/graphattn``), so that the class finds them and never downloads. The data folder is
``data``, else ``$GRAPHATTN_DATA``, else ``../shared/data`` beside the repository; its layout
(``heterophilous/<name>.npz``, ``planetoid/ind.<name>.*``, ``moleculenet/<PyG's file name>``)
and sources are in :data:`SOURCES`. Processes that share a cache (benchmarks started together) take
turns on each data set's folder through a file lock.
"""
from __future__ import annotations

import gzip
import logging
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from filelock import FileLock
from torch_geometric.data import Data
from torch_geometric.datasets import HeterophilousGraphDataset, MoleculeNet, Planetoid
from torch_geometric.utils import to_undirected

from graphattn.graphs.datasets import require_chem, smiles_to_graph
from graphattn.utils.checks import check_choice

log = logging.getLogger(__name__)

__all__ = ["SOURCES", "HETEROPHILOUS", "PLANETOID", "MOLECULES", "REGRESSION", "data_dir", "cache_dir",
           "heterophilous", "planetoid", "cora", "moleculenet", "scaffold_split"]

#: where each folder's files come from (repository, path, commit)
SOURCES = {
    "heterophilous": "yandex-research/heterophilous-graphs, data/, commit a431395 (MIT)",
    "planetoid": "kimiyoung/planetoid, data/, commit af6abf4 (MIT)",
    "moleculenet": "GLambard/Molecules_Dataset_Collection, originals/, commit beb35cd (MIT), or DeepChem's "
                   "MoleculeNet files (the names PyG's MoleculeNet downloads)",
}
# PyG's HeterophilousGraphDataset reads these five; the chameleon and squirrel graphs of the same
# repository (the same npz layout) are read by hand, as that class reads them.
_PYG_HETEROPHILOUS = ("roman_empire", "amazon_ratings", "minesweeper", "tolokers", "questions")
HETEROPHILOUS = _PYG_HETEROPHILOUS + ("chameleon", "squirrel", "chameleon_filtered", "squirrel_filtered")
PLANETOID = ("Cora", "CiteSeer", "PubMed")
#: our name (PyG's, ``"Lipo"`` for Lipophilicity) -> the file PyG's MoleculeNet downloads (``.csv`` or ``.csv.gz``)
MOLECULES = {("Lipo" if key == "lipo" else entry[0]): entry[1] for key, entry in MoleculeNet.names.items()}
#: the MoleculeNet sets whose targets are real numbers (RMSE); the others are binary tasks (ROC-AUC)
REGRESSION = ("ESOL", "FreeSolv", "Lipo")
_PLANETOID_PARTS = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
_Path = Union[str, os.PathLike]


def _canonical(kind: str, name: str, names: Sequence[str]) -> str:
    """``name`` as spelled in ``names``, matched without case (and ``-`` as ``_``, as PyG's classes do)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, one of {tuple(names)}, got {type(name).__name__}")
    spelled = {n.lower().replace("-", "_"): n for n in names}
    key = name.lower().replace("-", "_")
    check_choice(f"name (a {kind} set)", spelled.get(key, name), names)
    return spelled[key]


def data_dir(data: Optional[_Path] = None) -> Path:
    """The data folder: ``data``, else ``$GRAPHATTN_DATA``, else ``../shared/data`` beside the repository."""
    if data is None:
        data = os.environ.get("GRAPHATTN_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return Path(data)


def cache_dir(cache: Optional[_Path] = None) -> Path:
    """The folder PyG's classes process into: ``cache``, else ``$GRAPHATTN_CACHE``, else ``~/.cache/graphattn``."""
    if cache is None:
        cache = os.environ.get("GRAPHATTN_CACHE") or Path.home() / ".cache" / "graphattn"
    return Path(cache)


def _source(data: Optional[_Path], folder: str, names: Sequence[str]) -> list[Path]:
    """The raw files, or a FileNotFoundError that says where they come from."""
    paths = [data_dir(data) / folder / name for name in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)}: the files come from {SOURCES[folder]} "
                                f"(pass the data folder as data=..., or set GRAPHATTN_DATA)")
    return paths


def _lock(folder: Path) -> FileLock:
    """A lock on one data set's cache folder, held while its raw files are placed and PyG's class
    processes or reads them: benchmark processes started together would otherwise copy the same
    files and write the same processed file at once (one process's copy vanishing under the other's
    rename). ``filelock`` (a torch dependency) works across processes on POSIX and Windows."""
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / ".lock"))


def _place(paths: Sequence[Path], raw_dir: Path, unpack: bool = False) -> bool:
    """Copy the raw files where a PyG dataset looks for them (``unpack``: a ``.gz`` unpacked, as PyG
    unpacks what it downloads): once, and again when a file changed (its size or modification time;
    a copy keeps its source's). Returns whether any was copied, so that the class processes them
    again (``force_reload``) instead of reading the processed file of the old ones. Each copy goes
    through a temporary name: an interrupted one is never read as the file."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    changed = False
    for path in paths:
        target = raw_dir / (path.name[:-3] if unpack else path.name)
        source = path.stat()
        if target.is_file() and target.stat().st_mtime_ns == source.st_mtime_ns and (
                unpack or target.stat().st_size == source.st_size):
            continue
        part = target.with_name(target.name + ".part")
        with (gzip.open if unpack else open)(path, "rb") as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst)
        os.utime(part, ns=(source.st_atime_ns, source.st_mtime_ns))
        part.replace(target)
        changed = True
    return changed


def heterophilous(name: str, data: Optional[_Path] = None, cache: Optional[_Path] = None) -> Data:
    """One heterophilous benchmark of Platonov et al. (2023) with its 10 official splits.

    ``name`` is one of :data:`HETEROPHILOUS` (PyG's spelling, ``"Roman-empire"``, is accepted).
    Returns a ``Data`` with float ``x`` :math:`(N, F)`, ``y`` :math:`(N)`, undirected ``edge_index``
    (both directions of every edge of the file) and ``train_mask``, ``val_mask``, ``test_mask``
    :math:`(N, 10)`, column ``s`` the split ``s`` of the file. The paper scores the two-class sets
    (minesweeper, tolokers, questions) by ROC-AUC, the others by accuracy.
    """
    name = _canonical("heterophilous", name, HETEROPHILOUS)
    (path,) = _source(data, "heterophilous", [f"{name}.npz"])
    if name in _PYG_HETEROPHILOUS:  # PyG's class reads <root>/<name>/raw/<name>.npz
        root = cache_dir(cache) / "heterophilous"
        with _lock(root / name):
            changed = _place([path], root / name / "raw")
            graph = HeterophilousGraphDataset(str(root), name, force_reload=changed)[0]
        graph.x = graph.x.float()  # as the hand-read graphs: some files store float16 features
        return graph
    # The chameleon/squirrel graphs are not among the names HeterophilousGraphDataset accepts (PyG 2.8),
    # and PyG's WikipediaNetwork holds the unfiltered graphs with other splits: the same npz layout is
    # read here as that class reads it.
    raw = np.load(path)
    x = torch.from_numpy(raw["node_features"]).float()
    edge_index = to_undirected(torch.from_numpy(raw["edges"]).t().contiguous(), num_nodes=x.size(0))
    masks = {f"{part}_mask": torch.from_numpy(raw[f"{part}_masks"]).t().contiguous() for part in ("train", "val", "test")}
    return Data(x=x, y=torch.from_numpy(raw["node_labels"]), edge_index=edge_index, **masks)


def planetoid(name: str, data: Optional[_Path] = None, cache: Optional[_Path] = None) -> Data:
    """Cora, CiteSeer or PubMed through PyG's ``Planetoid`` with the public split (20 labelled
    nodes a class for training, 500 for validation, 1,000 for test).

    Features are the raw rows; row-normalise them (``NormalizeFeatures``) as GCN and GAT do.
    """
    name = _canonical("Planetoid", name, PLANETOID)
    paths = _source(data, "planetoid", [f"ind.{name.lower()}.{part}" for part in _PLANETOID_PARTS])
    root = cache_dir(cache) / "planetoid"
    with _lock(root / name):
        changed = _place(paths, root / name / "raw")
        return Planetoid(str(root), name, split="public", force_reload=changed)[0]


def cora(data: Optional[_Path] = None, cache: Optional[_Path] = None) -> Data:
    """Cora with the public split (masks of 140 / 500 / 1,000 nodes): :func:`planetoid` ``("Cora")``."""
    return planetoid("Cora", data, cache)


def _one_hot_smiles(smiles: str) -> Data:
    """``smiles_to_graph`` for ``MoleculeNet(from_smiles=...)``: a SMILES that rdkit cannot parse
    gives an empty graph, which the class skips with a warning (as its own parser does)."""
    try:
        return smiles_to_graph(smiles)
    except ValueError:
        log.info("rdkit cannot parse %r: skipped", smiles)
        return Data(x=torch.zeros(0, 1), edge_index=torch.zeros(2, 0, dtype=torch.long), smiles=smiles, num_nodes=0)


def moleculenet(name: str, data: Optional[_Path] = None, cache: Optional[_Path] = None) -> MoleculeNet:
    """A MoleculeNet set (one of :data:`MOLECULES`: ``"Lipo"``, ``"BBBP"``, ``"BACE"``, ``"ESOL"``,
    ``"FreeSolv"``, ``"HIV"``, ``"Tox21"``, ...) as PyG's ``MoleculeNet``, with one-hot features.

    Every graph has float ``x`` :math:`(N, \\text{ATOM\\_DIM})`, ``edge_attr`` :math:`(E, \\text{BOND\\_DIM})`
    (:func:`~graphattn.graphs.datasets.smiles_to_graph`), ``y`` :math:`(1, T)` (``T`` tasks; ``NaN``
    where a multi-task set has no label) and its ``smiles``. The data folder holds the file PyG
    downloads (``moleculenet/bace.csv``, ``moleculenet/tox21.csv.gz``; a ``.gz`` may also be there
    unpacked). Molecules that rdkit cannot parse (11 of BBBP's) are skipped. Needs the ``chem`` extra.
    """
    if isinstance(name, str) and name.lower() == "lipophilicity":  # PyG's display name of "lipo"
        name = "Lipo"
    name = _canonical("MoleculeNet", name, tuple(MOLECULES))
    require_chem()
    file = MOLECULES[name]
    csv = file[:-3] if file.endswith(".gz") else file  # the name PyG's class reads in raw/
    folder = data_dir(data) / "moleculenet"
    if file != csv and not (folder / file).is_file() and (folder / csv).is_file():
        file = csv
    (path,) = _source(data, "moleculenet", [file])
    root = cache_dir(cache) / "moleculenet"
    with _lock(root / name.lower()):
        changed = _place([path], root / name.lower() / "raw", unpack=file != csv)
        return MoleculeNet(str(root), name, from_smiles=_one_hot_smiles, force_reload=changed)


def scaffold_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                   include_chirality: bool = False) -> list[list[int]]:
    """MoleculeNet's deterministic scaffold split: train, validation and test indices.

    Molecules are grouped by their Bemis-Murcko scaffold (rdkit; without chirality, as DeepChem
    and MoleculeNet; ``include_chirality=True`` tells stereoisomeric scaffolds apart, which gives
    the groups, and so the split, of DGL-LifeSci's ``ScaffoldSplitter`` with its default
    ``scaffold_func="decompose"``: on BACE 739 groups instead of 671, and 123 of the 152 test
    molecules in common). The groups, largest first (ties: the group whose first molecule comes later, as DeepChem sorts), fill train up to
    ``fractions[0]`` of the molecules, then validation up to ``fractions[0] + fractions[1]``,
    and the rest go to test (DeepChem's ``ScaffoldSplitter``). No scaffold is in two parts.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers that sum to 1, got {tuple(fractions)}")
    require_chem()
    from rdkit.Chem.Scaffolds import MurckoScaffold

    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(smiles):
        groups[MurckoScaffold.MurckoScaffoldSmiles(smiles=s, includeChirality=bool(include_chirality))].append(i)
    ordered = sorted(groups.values(), key=lambda g: (len(g), g[0]), reverse=True)
    n = len(smiles)
    train_cut, val_cut = fractions[0] * n, (fractions[0] + fractions[1]) * n
    parts: list[list[int]] = [[], [], []]
    for group in ordered:
        if len(parts[0]) + len(group) <= train_cut:
            parts[0] += group
        elif len(parts[0]) + len(parts[1]) + len(group) <= val_cut:
            parts[1] += group
        else:
            parts[2] += group
    return [sorted(p) for p in parts]
