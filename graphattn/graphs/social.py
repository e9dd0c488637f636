r"""Large social graphs, generated: communities, power-law degrees, node features with a noisy
class signal, and node splits, from a seed (nothing is downloaded).

:func:`social_graph` samples a degree-corrected stochastic block model (Karrer & Newman, 2011):
node ``i`` of community ``c_i`` (its class) has a propensity :math:`\theta_i` drawn from a
power law, and each of ``num_nodes * avg_degree / 2`` edges picks its first end ``u`` with
probability :math:`\propto \theta_u` and its second end, with probability ``homophily``, among
``u``'s own community (again :math:`\propto \theta`), otherwise among the partner community
``(c_u + 1) mod C``. Self loops and repeated edges are dropped and every edge is stored in
both directions, so degrees follow the propensities (a power law with exponent ``power``, cut
at ``max_degree``) and communities hold ``homophily`` of the edges.

``variant="homophilous"`` (homophily 0.8) is the classic setting where neighbours share the
label; ``"heterophilous"`` (homophily 0.1) the one where they mostly do not, yet their labels are
informative (a node of class ``c`` links to classes ``c - 1`` and ``c + 1``), as in the
heterophilous benchmarks of Platonov et al. (2023). Features are a class mean plus Gaussian
noise, so a node's own features classify it only weakly and its neighbourhood must help.

Written with numpy's vectorised sampling because networkx's generators (``stochastic_block_model``,
``LFR_benchmark_graph``) loop in Python and take hours at a million nodes; this takes seconds.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch_geometric.data import Data

from graphattn.utils.checks import check_choice, check_float, check_int

__all__ = ["social_graph", "VARIANTS", "power_law_propensities", "edge_homophily"]

log = logging.getLogger(__name__)

#: the fraction of edges inside a community of each variant
VARIANTS = {"homophilous": 0.8, "heterophilous": 0.1}


def power_law_propensities(rng: np.random.Generator, num_nodes: int, power: float, max_ratio: float) -> np.ndarray:
    """Propensities with :math:`P(\\theta > t) \\propto t^{1 - power}`, ``1 <= theta <= max_ratio``."""
    u = rng.random(num_nodes)
    # Inverse transform sampling of a Pareto law truncated at max_ratio.
    tail = 1.0 - u * (1.0 - max_ratio ** (1.0 - power))
    return tail ** (1.0 / (1.0 - power))


def _sample_within(rng: np.random.Generator, community: np.ndarray, theta: np.ndarray,
                   targets: np.ndarray, num_communities: int) -> np.ndarray:
    """One node per entry of ``targets`` (community ids), drawn inside it with probability ``∝ theta``."""
    order = np.argsort(community, kind="stable")
    starts = np.searchsorted(community[order], np.arange(num_communities + 1))
    out = np.empty(targets.size, dtype=np.int64)
    for c in range(num_communities):
        wanted = np.nonzero(targets == c)[0]
        members = order[starts[c]:starts[c + 1]]
        if wanted.size == 0 or members.size == 0:
            continue
        cdf = np.cumsum(theta[members])
        picks = np.searchsorted(cdf, rng.random(wanted.size) * cdf[-1], side="right")
        out[wanted] = members[np.minimum(picks, members.size - 1)]
    return out


def edge_homophily(edge_index: torch.Tensor, y: torch.Tensor) -> float:
    """The fraction of edges whose two ends share a label."""
    return float((y[edge_index[0]] == y[edge_index[1]]).double().mean()) if edge_index.numel() else 0.0


def social_graph(
    num_nodes: int,
    variant: str = "homophilous",
    avg_degree: float = 20.0,
    num_classes: int = 10,
    power: float = 2.5,
    max_degree: int = 2000,
    feature_dim: int = 32,
    noise: float = 2.0,
    split: Sequence[float] = (0.5, 0.25, 0.25),
    seed: int = 0,
) -> Data:
    r"""One social graph with communities (the classes) and power-law degrees; see the module.

    Args:
        num_nodes (int): nodes.
        variant (str, optional): ``"homophilous"`` or ``"heterophilous"`` (see :data:`VARIANTS`).
            (default: :obj:`"homophilous"`)
        avg_degree (float, optional): mean degree before repeated edges are dropped (``E`` is
            about ``num_nodes * avg_degree`` directed edges). (default: :obj:`20.0`)
        num_classes (int, optional): communities, of equal expected size. (default: :obj:`10`)
        power (float, optional): exponent of the degree law, :math:`> 2`. (default: :obj:`2.5`)
        max_degree (int, optional): the largest expected degree. (default: :obj:`2000`)
        feature_dim (int, optional): node features. (default: :obj:`32`)
        noise (float, optional): standard deviation of the feature noise around the class mean
            (class means are unit vectors). (default: :obj:`2.0`)
        split (sequence of float, optional): train, validation and test fractions of the nodes.
            (default: :obj:`(0.5, 0.25, 0.25)`)
        seed (int, optional): everything follows from it. (default: :obj:`0`)

    Returns:
        ``Data`` with ``x`` :math:`(N, F)`, ``edge_index`` :math:`(2, E)` (undirected, both
        directions, sorted by target), ``y`` :math:`(N)`, ``train_mask``, ``val_mask``,
        ``test_mask`` :math:`(N)` and ``propensity`` :math:`(N)` (the expected degrees).
    """
    num_nodes = check_int("num_nodes", num_nodes, 2)
    check_choice("variant", variant, tuple(VARIANTS))
    avg_degree = check_float("avg_degree", avg_degree, 1.0, float(num_nodes - 1))
    num_classes = check_int("num_classes", num_classes, 2)
    power = check_float("power", power, 2.0 + 1e-6, 10.0)
    max_degree = check_int("max_degree", max_degree, 2)
    feature_dim = check_int("feature_dim", feature_dim, 1)
    noise = check_float("noise", noise, 0.0, 1e6)
    if len(split) != 3 or min(split) < 0 or abs(sum(split) - 1.0) > 1e-6:
        raise ValueError(f"split must be three non-negative fractions summing to 1, got {tuple(split)}")
    seed = check_int("seed", seed, 0)
    rng = np.random.default_rng([seed, 16])
    homophily = VARIANTS[variant]

    community = rng.integers(num_classes, size=num_nodes)
    # Scale the propensities so that the mean expected degree is avg_degree, cut at max_degree.
    theta = power_law_propensities(rng, num_nodes, power, max_degree)
    theta *= avg_degree / theta.mean()
    np.minimum(theta, max_degree, out=theta)
    num_edges = int(round(num_nodes * avg_degree / 2))
    cdf = np.cumsum(theta)
    first = np.minimum(np.searchsorted(cdf, rng.random(num_edges) * cdf[-1], side="right"), num_nodes - 1)
    inside = rng.random(num_edges) < homophily
    target_community = np.where(inside, community[first], (community[first] + 1) % num_classes)
    second = _sample_within(rng, community, theta, target_community, num_classes)
    del cdf, inside, target_community
    edge_index = _undirected(first, second, num_nodes)

    means = rng.standard_normal((num_classes, feature_dim))
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    x = means[community].astype(np.float32)
    x += rng.standard_normal((num_nodes, feature_dim), dtype=np.float32) * np.float32(noise)
    data = Data(x=torch.from_numpy(x), edge_index=edge_index, y=torch.from_numpy(community),
                propensity=torch.from_numpy(theta.astype(np.float32)), num_nodes=num_nodes)
    part = rng.permutation(num_nodes)
    bounds = np.round(np.cumsum(split)[:2] * num_nodes).astype(np.int64)
    for name, idx in zip(("train_mask", "val_mask", "test_mask"), np.split(part, bounds)):
        mask = torch.zeros(num_nodes, dtype=torch.bool)
        mask[torch.from_numpy(idx)] = True
        data[name] = mask
    log.info("social_graph(%s): %d nodes, %d edges, edge homophily %.3f", variant, num_nodes,
             edge_index.size(1), edge_homophily(edge_index, data.y))
    return data


def _undirected(first: np.ndarray, second: np.ndarray, num_nodes: int) -> torch.Tensor:
    """Both directions of every distinct non-loop edge, sorted by (target, source): ``[2, E]``."""
    lo, hi = np.minimum(first, second), np.maximum(first, second)
    keep = lo != hi
    keys = np.unique(lo[keep] * num_nodes + hi[keep])
    lo, hi = keys // num_nodes, keys % num_nodes
    del keys
    both = np.concatenate([hi * num_nodes + lo, lo * num_nodes + hi])  # target * N + source
    both.sort()
    return torch.from_numpy(np.stack([both % num_nodes, both // num_nodes]))
