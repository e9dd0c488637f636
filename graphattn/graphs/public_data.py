r"""Public graph benchmarks with their official splits, read from a local data folder (nothing downloads).

* :func:`heterophilous`: ``minesweeper``, ``chameleon_filtered``, ``squirrel_filtered`` of "A critical
  look at the evaluation of GNNs under heterophily" (Platonov et al., ICLR 2023), with the 10 fixed
  splits of the files as ``[N, 10]`` masks.
* :func:`cora`: Cora with Planetoid's public split (140 / 500 / 1,000 nodes).
* :func:`moleculenet`: Lipophilicity, BBBP, BACE through PyG's ``MoleculeNet`` with one-hot atom and
  bond features, and :func:`scaffold_split`, the deterministic Bemis-Murcko split of MoleculeNet.

PyG's dataset classes read the raw files from ``<root>/<name>/raw/``; the functions copy them
there from the data folder, into a cache folder (``cache``, else ``$GRAPHATTN_CACHE``, else
``~/.cache/graphattn``), so that the class finds them and never downloads. The data folder is
``data``, else ``$GRAPHATTN_DATA``, else ``../shared/data`` beside the repository; its layout
and sources are in :data:`SOURCES`.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch_geometric.data import Data
from torch_geometric.datasets import HeterophilousGraphDataset, MoleculeNet, Planetoid
from torch_geometric.utils import to_undirected

from graphattn.graphs.datasets import require_chem, smiles_to_graph
from graphattn.utils.checks import check_choice

log = logging.getLogger(__name__)

__all__ = ["SOURCES", "HETEROPHILOUS", "MOLECULES", "data_dir", "cache_dir", "heterophilous", "cora",
           "moleculenet", "scaffold_split"]

#: where each folder's files come from (repository, path, commit)
SOURCES = {
    "heterophilous": "yandex-research/heterophilous-graphs, data/, commit a431395 (MIT)",
    "planetoid": "kimiyoung/planetoid, data/, commit af6abf4 (MIT)",
    "moleculenet": "GLambard/Molecules_Dataset_Collection, originals/, commit beb35cd (MIT)",
}
HETEROPHILOUS = ("minesweeper", "chameleon_filtered", "squirrel_filtered")
#: PyG's MoleculeNet name -> the csv file PyG expects in ``raw/``
MOLECULES = {"Lipo": "Lipophilicity.csv", "BBBP": "BBBP.csv", "BACE": "bace.csv"}
_CORA_FILES = tuple(f"ind.cora.{s}" for s in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index"))
_Path = Union[str, os.PathLike]


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


def _place(paths: Sequence[Path], raw_dir: Path) -> None:
    """Copy the raw files where a PyG dataset looks for them (once; again if their size changed)."""
    raw_dir.mkdir(parents=True, exist_ok=True)
    for path in paths:
        target = raw_dir / path.name
        if not target.is_file() or target.stat().st_size != path.stat().st_size:
            shutil.copyfile(path, target)


def heterophilous(name: str, data: Optional[_Path] = None, cache: Optional[_Path] = None) -> Data:
    """One heterophilous benchmark of Platonov et al. (2023) with its 10 official splits.

    Returns a ``Data`` with float ``x`` :math:`(N, F)`, ``y`` :math:`(N)`, undirected ``edge_index``
    (both directions of every edge of the file) and ``train_mask``, ``val_mask``, ``test_mask``
    :math:`(N, 10)`, column ``s`` the split ``s`` of the file.
    """
    check_choice("name", name, HETEROPHILOUS)
    (path,) = _source(data, "heterophilous", [f"{name}.npz"])
    if name == "minesweeper":  # PyG's class reads <root>/minesweeper/raw/minesweeper.npz
        root = cache_dir(cache) / "heterophilous"
        _place([path], root / name / "raw")
        return HeterophilousGraphDataset(str(root), name)[0]
    # The filtered chameleon/squirrel (duplicates removed, from the same paper's repository) are not
    # among the names HeterophilousGraphDataset accepts (PyG 2.8), and PyG's WikipediaNetwork holds the
    # unfiltered graphs with other splits: the same npz layout is read here as that class reads it.
    raw = np.load(path)
    x = torch.from_numpy(raw["node_features"]).float()
    edge_index = to_undirected(torch.from_numpy(raw["edges"]).t().contiguous(), num_nodes=x.size(0))
    masks = {f"{part}_mask": torch.from_numpy(raw[f"{part}_masks"]).t().contiguous() for part in ("train", "val", "test")}
    return Data(x=x, y=torch.from_numpy(raw["node_labels"]), edge_index=edge_index, **masks)


def cora(data: Optional[_Path] = None, cache: Optional[_Path] = None) -> Data:
    """Cora through PyG's ``Planetoid`` with the public split (masks of 140 / 500 / 1,000 nodes).

    Features are the raw bag-of-words rows; row-normalise them (``NormalizeFeatures``) as GCN and GAT do.
    """
    paths = _source(data, "planetoid", _CORA_FILES)
    root = cache_dir(cache) / "planetoid"
    _place(paths, root / "Cora" / "raw")
    return Planetoid(str(root), "Cora", split="public")[0]


def _one_hot_smiles(smiles: str) -> Data:
    """``smiles_to_graph`` for ``MoleculeNet(from_smiles=...)``: a SMILES that rdkit cannot parse
    gives an empty graph, which the class skips with a warning (as its own parser does)."""
    try:
        return smiles_to_graph(smiles)
    except ValueError:
        log.info("rdkit cannot parse %r: skipped", smiles)
        return Data(x=torch.zeros(0, 1), edge_index=torch.zeros(2, 0, dtype=torch.long), smiles=smiles, num_nodes=0)


def moleculenet(name: str, data: Optional[_Path] = None, cache: Optional[_Path] = None) -> MoleculeNet:
    """Lipophilicity (``"Lipo"``), ``"BBBP"`` or ``"BACE"`` as PyG's ``MoleculeNet``, with one-hot features.

    Every graph has float ``x`` :math:`(N, \\text{ATOM\\_DIM})`, ``edge_attr`` :math:`(E, \\text{BOND\\_DIM})`
    (:func:`~graphattn.graphs.datasets.smiles_to_graph`), ``y`` :math:`(1, 1)` and its ``smiles``.
    Molecules that rdkit cannot parse (11 of BBBP's) are skipped. Needs the ``chem`` extra.
    """
    check_choice("name", name, tuple(MOLECULES))
    require_chem()
    (path,) = _source(data, "moleculenet", [MOLECULES[name]])
    root = cache_dir(cache) / "moleculenet"
    _place([path], root / name.lower() / "raw")
    return MoleculeNet(str(root), name, from_smiles=_one_hot_smiles)


def scaffold_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> list[list[int]]:
    """MoleculeNet's deterministic scaffold split: train, validation and test indices.

    Molecules are grouped by their Bemis-Murcko scaffold (rdkit, without chirality); the groups,
    largest first (ties: the group whose first molecule comes later, as DeepChem sorts), fill train up to
    ``fractions[0]`` of the molecules, then validation up to ``fractions[0] + fractions[1]``,
    and the rest go to test (DeepChem's ``ScaffoldSplitter``). No scaffold is in two parts.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise ValueError(f"fractions must be three non-negative numbers that sum to 1, got {tuple(fractions)}")
    require_chem()
    from rdkit.Chem.Scaffolds import MurckoScaffold

    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(smiles):
        groups[MurckoScaffold.MurckoScaffoldSmiles(smiles=s, includeChirality=False)].append(i)
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
