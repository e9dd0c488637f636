"""Full-batch training, ROC-AUC and the Platonov et al. / AttentiveFP baselines, against independent references."""
import copy
import itertools

import pytest
import torch
from torch_geometric.data import Batch, Data
from torch_geometric.nn import GATConv, SAGEConv

from graphattn.graphs.baselines import RESIDUAL_GNNS, AttentiveFPModel, ResidualGNN
from graphattn.graphs.fit import accuracy, binary_loss, fit_full_graph, node_loss, roc_auc


def pairwise_auc(score, target):
    """The definition: P(score of a positive > score of a negative) + P(tie) / 2, over all pairs."""
    pos, neg = score[target == 1].tolist(), score[target == 0].tolist()
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(3))
def test_roc_auc_is_the_pairwise_probability(seed):
    gen = torch.Generator().manual_seed(seed)
    score = torch.randint(0, 6, (40,), generator=gen).float()  # many ties
    target = (torch.rand(40, generator=gen) < 0.4).long()
    assert roc_auc(score.unsqueeze(1), target) == pytest.approx(pairwise_auc(score, target))
    two_class = torch.stack([torch.zeros(40), score], 1)
    assert roc_auc(two_class, target) == pytest.approx(pairwise_auc(score, target))
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(score, torch.zeros(40))


def test_roc_auc_of_several_tasks_with_missing_labels():
    # MoleculeNet's multi-task sets: each task over its labelled rows, averaged over the tasks that
    # have both classes (a task with one class, here the third, is left out as OGB's evaluator does).
    gen = torch.Generator().manual_seed(0)
    score = torch.randint(0, 5, (30, 3), generator=gen).float()
    target = (torch.rand(30, 3, generator=gen) < 0.5).float()
    target[torch.rand(30, 3, generator=gen) < 0.3] = float("nan")
    target[:, 2] = torch.where(target[:, 2].isnan(), target[:, 2], torch.ones(30))
    expected = [pairwise_auc(score[~target[:, t].isnan(), t], target[~target[:, t].isnan(), t]) for t in range(2)]
    assert roc_auc(score, target) == pytest.approx(sum(expected) / 2)
    assert roc_auc(score[:, 0], target[:, :1]) == pytest.approx(expected[0])  # one task with NaNs
    with pytest.raises(ValueError, match="pred of shape"):
        roc_auc(score[:, :2], target)
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(score[:, 2:].repeat(1, 2), target[:, 2:].repeat(1, 2))


def test_binary_loss_skips_missing_labels():
    pred = torch.randn(6, 2, requires_grad=True)
    target = torch.tensor([[1.0, float("nan")], [0, 1], [float("nan"), 0], [1, 1], [0, float("nan")], [1, 0]])
    labelled = ~target.isnan()
    p, y = torch.sigmoid(pred[labelled]), target[labelled]
    expected = -(y * p.log() + (1 - y) * (1 - p).log()).mean()
    loss = binary_loss(pred, target)
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert torch.isfinite(pred.grad).all() and (pred.grad[~labelled] == 0).all()
    empty = binary_loss(pred, torch.full((6, 2), float("nan")))
    assert empty.item() == 0.0 and empty.requires_grad


def test_node_loss_binary_and_multiclass():
    out, y = torch.randn(5, 1), torch.tensor([0, 1, 1, 0, 1])
    expected = -(y * torch.log(torch.sigmoid(out[:, 0])) + (1 - y) * torch.log(1 - torch.sigmoid(out[:, 0]))).mean()
    assert torch.allclose(node_loss(out, y), expected, atol=1e-6)
    logits = torch.randn(5, 3)
    assert torch.allclose(node_loss(logits, y), -torch.log_softmax(logits, 1)[torch.arange(5), y].mean())


def two_communities(n=60, seed=0):
    """Two dense communities; a node's own feature shows its community only faintly (signal 0.6,
    noise 1), its neighbours' average shows it clearly: accuracy needs the edges."""
    gen = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) >= n // 2).long()
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j and y[i] == y[j] and torch.rand(1, generator=gen) < 0.4]
    x = torch.randn(n, 4, generator=gen)
    x[:, 0] += 0.6 * (2 * y - 1)
    part = torch.arange(n) % 3
    train, val, test = part == 0, part == 1, part == 2
    return Data(x=x, y=y, edge_index=torch.tensor(pairs).t(), train_mask=torch.stack([train, train], 1),
                val_mask=torch.stack([val, val], 1), test_mask=torch.stack([test, test], 1))


@pytest.mark.parametrize("conv", RESIDUAL_GNNS)
def test_residual_gnns_learn_from_the_edges(conv, one_thread):
    torch.manual_seed(0)
    data = two_communities()
    model = ResidualGNN(4, 16, 2, 2, conv, num_heads=2, dropout=0.0)
    result = fit_full_graph(model, data, split=1, metric=accuracy, steps=60, lr=1e-2)
    assert result["test"] >= 0.78 and 1 <= result["step"] <= 60  # the own feature alone: about 0.7 and result["params"] > 0


def test_residual_gnn_layer_is_the_documented_update():
    torch.manual_seed(0)
    data = two_communities()
    for conv in ("sage", "gat-sep"):
        model = ResidualGNN(4, 8, 3, 1, conv, num_heads=2).eval()
        h = torch.nn.functional.gelu(model.encoder(data.x))
        z = model.norms[0](h)
        if conv == "sage":  # PyG's own layer with the same weights
            ref = SAGEConv(8, 8)
            ref.load_state_dict(model.convs[0].state_dict())
            message = ref(z, data.edge_index)
        else:  # -sep: no self loops, the node's own state concatenated before the feed-forward
            ref = GATConv(8, 4, heads=2, add_self_loops=False)
            ref.load_state_dict(model.convs[0].state_dict())
            message = torch.cat([z, ref(z, data.edge_index)], 1)
        h = h + model.ffs[0](message)
        assert torch.allclose(model(data), model.head(model.norm(h)), atol=1e-6)
    assert repr(ResidualGNN(4, 8, 3, 2, "gt-sep")) == "ResidualGNN(4, 8, 3, num_layers=2, conv='gt-sep')"
    with pytest.raises(ValueError, match="conv"):
        ResidualGNN(4, 8, 3, 2, "gin")
    with pytest.raises(ValueError, match="num_heads"):
        ResidualGNN(4, 10, 3, 2, "gat", num_heads=4)


def test_graph_task_pools_each_graph_and_attentivefp_reads_bonds():
    torch.manual_seed(0)
    triangle = torch.tensor([[0, 1, 1, 2, 2, 0], [1, 0, 2, 1, 0, 2]])  # two in-edges a node: bonds weigh them
    graphs = [Data(x=torch.randn(n, 5), edge_index=triangle, edge_attr=torch.randn(6, 3)) for n in (3, 4)]
    batch = Batch.from_data_list(graphs)
    model = ResidualGNN(5, 8, 2, 2, "gcn", task="graph").eval()
    assert torch.allclose(model(batch), torch.cat([model(g) for g in graphs]), atol=1e-5)
    fp = AttentiveFPModel(5, 8, 1, 3).eval()
    out = fp(batch)
    assert out.shape == (2, 1) and torch.allclose(out, torch.cat([fp(Batch.from_data_list([g])) for g in graphs]), atol=1e-5)
    changed = batch.clone()
    changed.edge_attr = torch.randn_like(changed.edge_attr)
    assert not torch.allclose(fp(changed), out)


@pytest.mark.parametrize("optimizer, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_full_graph_weight_decay_is_l2_or_decoupled(optimizer, cls):
    data = two_communities()
    torch.manual_seed(0)
    model = ResidualGNN(4, 8, 2, 1, "gcn", dropout=0.0)
    reference = copy.deepcopy(model)
    fit_full_graph(model, data, metric=accuracy, steps=1, lr=0.1, weight_decay=0.5, optimizer=optimizer)
    step = cls(reference.parameters(), lr=0.1, weight_decay=0.5)  # torch's own, on the same loss
    node_loss(reference(data)[data.train_mask[:, 0]], data.y[data.train_mask[:, 0]]).backward()
    step.step()
    for got, want in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="optimizer"):
        fit_full_graph(model, data, steps=1, optimizer="sgd")
