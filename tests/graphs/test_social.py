"""Generated social graphs: degree and community statistics checked independently with networkx."""
import networkx as nx
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from graphattn.graphs.social import VARIANTS, social_graph


def to_nx(data):
    g = nx.Graph()
    g.add_nodes_from(range(data.num_nodes))
    g.add_edges_from(data.edge_index.t().tolist())
    return g


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_degrees_follow_the_propensities_and_a_power_law(variant):
    data = social_graph(3000, variant, avg_degree=12, power=2.5, max_degree=300, seed=1)
    g = to_nx(data)
    assert data.edge_index.size(1) == 2 * g.number_of_edges()  # both directions, no repeats
    assert nx.number_of_selfloops(g) == 0
    degree = np.array([d for _, d in sorted(g.degree())])
    assert 10 <= degree.mean() <= 12.5  # a few repeated draws are dropped
    theta = data.propensity.numpy()
    assert spearmanr(degree, theta).statistic > 0.7  # Poisson noise around small expected degrees
    body = theta < 20  # E[degree] = propensity where repeated draws of a pair are rare
    assert np.polyfit(theta[body], degree[body], 1)[0] == pytest.approx(1.0, abs=0.1)
    assert degree.max() > 8 * degree.mean()  # heavy tail
    # Power law: the complementary CDF of the propensities falls as d^(1 - power) = d^-1.5.
    theta = np.sort(theta)
    ccdf = 1.0 - np.arange(theta.size) / theta.size
    body = (theta > 2 * theta.min()) & (theta < 100)  # the body of the law, away from both cuts
    slope = np.polyfit(np.log(theta[body]), np.log(ccdf[body]), 1)[0]
    assert slope == pytest.approx(-1.5, abs=0.15)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_communities_hold_the_variant_share_of_edges(variant):
    data = social_graph(4000, variant, avg_degree=10, num_classes=5, seed=2)
    g = to_nx(data)
    y = data.y.tolist()
    inside = sum(y[u] == y[v] for u, v in g.edges) / g.number_of_edges()
    assert inside == pytest.approx(VARIANTS[variant], abs=0.03)
    partition = [{v for v in range(data.num_nodes) if y[v] == c} for c in range(5)]
    modularity = nx.community.modularity(g, partition)
    if variant == "homophilous":
        assert modularity > 0.5
    else:  # cross edges go to the partner community c + 1 (mod C), so classes c and c + 2 rarely meet
        assert modularity < 0
        far = sum((y[u] - y[v]) % 5 in (2, 3) for u, v in g.edges) / g.number_of_edges()
        assert far < 0.02


def test_features_carry_a_noisy_class_signal_and_masks_split_the_nodes():
    data = social_graph(2000, noise=2.0, feature_dim=16, seed=3)
    centroids = torch.stack([data.x[data.y == c].mean(0) for c in range(10)])
    nearest = torch.cdist(data.x, centroids).argmin(1)
    own = float((nearest == data.y).float().mean())
    assert 0.15 < own < 0.7  # better than chance (0.1), far from certain
    masks = torch.stack([data.train_mask, data.val_mask, data.test_mask])
    assert bool((masks.sum(0) == 1).all()) and masks.sum(1).tolist() == [1000, 500, 500]


def test_generation_is_deterministic_by_seed():
    a, b, c = social_graph(500, seed=4), social_graph(500, seed=4), social_graph(500, seed=5)
    assert torch.equal(a.edge_index, b.edge_index) and torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.y, c.y)


def test_bad_arguments_are_refused():
    for kwargs, error, match in [({"num_nodes": 1}, ValueError, "num_nodes"), ({"num_nodes": 10, "variant": "x"},
                                 ValueError, "variant"), ({"num_nodes": 100, "power": 2.0}, ValueError, "power"),
                                 ({"num_nodes": 100, "split": (0.5, 0.5)}, ValueError, "split"),
                                 ({"num_nodes": 100, "num_classes": 1}, ValueError, "num_classes"),
                                 ({"num_nodes": 10.0}, TypeError, "num_nodes")]:
        with pytest.raises(error, match=match):
            social_graph(**kwargs)
