"""torch.compile and torch.export on GraphMultiheadAttention and the models built from it.

Compiled outputs and gradients must equal eager ones (1e-5). Most cases compile with the
``aot_eager`` backend (dynamo's tracing and AOTAutograd, what every backend goes through, in a
fraction of inductor's compile time); one test per kernel also runs inductor, the default.
"""
import pytest
import torch
import torch.nn.functional as F
from torch_geometric import EdgeIndex
from torch_geometric.data import Batch, Data
from torch_geometric.utils import to_torch_csr_tensor

from graphattn import GraphMultiheadAttention, GraphTransformer, Transformer
from graphattn import patterns as P
from graphattn.text.model import Seq2Seq

N, EDGES, PTR = 20, 60, torch.tensor([0, 7, 20])


def graph(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(N, 16, generator=gen), torch.randint(0, N, (2, EDGES), generator=gen)


# name -> (layer keyword arguments, call(layer, x, edge_index))
CASES = {
    "edges": ({}, lambda m, x, ei: m(x, ei)),
    "edges EdgeIndex": ({}, lambda m, x, ei: m(x, EdgeIndex(ei, sparse_size=(N, N)))),
    "edges sparse csr": ({}, lambda m, x, ei: m(x, to_torch_csr_tensor(ei.flip(0), size=(N, N)))),
    "edges weights": ({}, lambda m, x, ei: with_weights(m(x, ei, return_attention_weights=True))),
    "edges features": (dict(edge_dim=3, edge_value=True, edge_key=True),
                       lambda m, x, ei: m(x, ei, torch.linspace(-1, 1, 3 * EDGES).view(EDGES, 3))),
    "edges sigmoid": (dict(normalization="sigmoid"), lambda m, x, ei: m(x, ei)),
    "edges unprojected": (dict(project_values=False), lambda m, x, ei: m(x, ei)),
    "dense unprojected ragged": (dict(project_values=False), lambda m, x, ei: m(x, pattern=P.dense(), ptr=PTR)),
    "dense": ({}, lambda m, x, ei: m(x, pattern=P.dense())),
    "dense ragged": ({}, lambda m, x, ei: m(x, pattern=P.dense(), ptr=PTR)),
    "causal ragged": ({}, lambda m, x, ei: m(x, pattern="causal", ptr=PTR)),
    "dense cross": ({}, lambda m, x, ei: m((x[:12], x[12:]), pattern=P.cross(), ptr=torch.tensor([0, 3, 8]),
                                           key_ptr=torch.tensor([0, 5, 12]))),
    "dense bias": ({}, lambda m, x, ei: m(x, pattern=P.causal(), ptr=PTR,
                                          attn_bias=torch.linspace(-1, 1, 4 * 119).view(119, 4))),
    "kdim vdim value": (dict(kdim=8, vdim=6), lambda m, x, ei: m((x[:, :8], x), ei, value=x[:, 10:])),
    "key_value (cached decoding)": ({}, lambda m, x, ei: m(x[:4], key_value=m.project_key_value(x), pattern=P.cross(),
                                                          ptr=torch.tensor([0, 1, 4]), key_ptr=PTR)),
    "window": ({}, lambda m, x, ei: m(x, pattern=P.window(2))),
    "window ragged": ({}, lambda m, x, ei: m(x, pattern="causal&window:3", ptr=PTR)),
    "window weights": ({}, lambda m, x, ei: with_weights(m(x, pattern=P.window(2), ptr=PTR,
                                                            return_attention_weights=True))),
    "bigbird (pattern edges in forward)": ({}, lambda m, x, ei: m(x, pattern="bigbird:2:1:1:0", ptr=PTR)),
    "graph pattern": ({}, lambda m, x, ei: m(x, ei, pattern="khop:2")),
}
# Patterns whose edges the layer must build in forward (the edges backend, weights or biases on a
# pattern's pairs) break the graph there, since their number depends on ptr's values: build them
# once outside (pattern.edge_index(ptr)) and pass edge_index, as the stacks and transforms do.
NO_GRAPH_BREAK = ["edges", "edges weights", "edges features", "edges sigmoid", "edges unprojected",
                  "dense unprojected ragged", "kdim vdim value", "dense",
                  "dense ragged", "causal ragged", "dense cross", "key_value (cached decoding)", "window", "window ragged"]


def with_weights(result):
    out, (_, alpha) = result
    return torch.cat([out.flatten(), alpha.flatten()])


def run(case, compile_backend=None):
    kwargs, call = CASES[case]
    torch.manual_seed(0)
    layer = GraphMultiheadAttention(16, 4, **kwargs)
    x, ei = graph()
    x.requires_grad_()
    fn = layer if compile_backend is None else torch.compile(layer, backend=compile_backend, fullgraph=False)
    out = call(fn, x, ei)
    out.square().sum().backward()
    return out.detach(), x.grad, {name: p.grad for name, p in layer.named_parameters() if p.grad is not None}


def assert_same(eager, compiled):
    torch.testing.assert_close(compiled[0], eager[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(compiled[1], eager[1], atol=1e-5, rtol=1e-5)
    assert compiled[2].keys() == eager[2].keys()
    for name in eager[2]:
        torch.testing.assert_close(compiled[2][name], eager[2][name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_layer_equals_eager(case):
    assert_same(run(case), run(case, "aot_eager"))


@pytest.mark.parametrize("case", ["dense ragged", "window ragged"])
def test_inductor_equals_eager(case):  # the edges kernel under inductor: benchmarks/compile.py
    assert_same(run(case), run(case, "inductor"))


@pytest.mark.parametrize("case", NO_GRAPH_BREAK)
def test_no_graph_break(case):
    kwargs, call = CASES[case]
    layer = GraphMultiheadAttention(16, 4, **kwargs).eval()
    x, ei = graph()
    explanation = torch._dynamo.explain(lambda: call(layer, x, ei))()
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]


def check_export(module, args, dynamic_shapes, new_args):
    program = torch.export.export(module.eval(), args, dynamic_shapes=dynamic_shapes)
    for a in (args, new_args):
        torch.testing.assert_close(program.module()(*a), module(*a), atol=1e-5, rtol=1e-5)


def test_export_edges_with_dynamic_nodes_and_edges():
    torch.manual_seed(0)
    layer = GraphMultiheadAttention(16, 4, edge_dim=3, edge_value=True)
    nodes, edges = torch.export.Dim("nodes"), torch.export.Dim("edges")
    x, ei = graph()
    x2, ei2 = torch.randn(33, 16), torch.randint(0, 33, (2, 101))
    check_export(layer, (x, ei, torch.randn(EDGES, 3)), ({0: nodes}, {1: edges}, {0: edges}),
                 (x2, ei2, torch.randn(101, 3)))


class PatternCall(torch.nn.Module):
    def __init__(self, pattern):
        super().__init__()
        self.attn, self.pattern = GraphMultiheadAttention(16, 4), pattern

    def forward(self, x, ptr):
        return self.attn(x, pattern=self.pattern, ptr=ptr)


@pytest.mark.parametrize("pattern", ["dense", "causal", "window:3", "causal&window:2"])
def test_export_dense_and_window_on_ragged_batches(pattern):
    torch.manual_seed(0)
    nodes, examples = torch.export.Dim("nodes"), torch.export.Dim("examples")
    x, _ = graph()
    check_export(PatternCall(pattern), (x, PTR), ({0: nodes}, {0: examples}),
                 (torch.randn(31, 16), torch.tensor([0, 10, 11, 31])))


def test_transformer_compiles():
    torch.manual_seed(0)
    model = Transformer(16, 2, 2, 2, 32, dropout=0.0, encoder_pattern="window:2", decoder_pattern="causal&window:2")
    src, tgt = torch.randn(3, 7, 16), torch.randn(3, 5, 16)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[0, 5:] = True

    def step(m):
        out = m(src, tgt, pad)
        out.square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()
        return out.detach(), grads

    eager, compiled = step(model), step(torch.compile(model, backend="aot_eager"))
    torch.testing.assert_close(compiled[0], eager[0], atol=1e-5, rtol=1e-5)
    for a, b in zip(compiled[1], eager[1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_seq2seq_training_step_compiles():
    torch.manual_seed(0)
    model = Seq2Seq(12, 14, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, dropout=0.0)
    src, ptr_src = torch.randint(3, 12, (10,)), torch.tensor([0, 4, 10])
    tgt, ptr_tgt = torch.randint(3, 14, (9,)), torch.tensor([0, 5, 9])

    def loss_of(m):
        return F.nll_loss(m.forward_flat(src, ptr_src, tgt, ptr_tgt), tgt)

    def step(m):
        loss = loss_of(m)
        loss.backward()  # dynamo traces up to here; AOTAutograd builds the backward graph
        return loss

    eager = float(step(model))
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    explanation = torch._dynamo.explain(loss_of)(model)
    assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]
    assert float(torch.compile(step, backend="aot_eager")(model)) == pytest.approx(eager, abs=1e-5)
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pattern, local_mpnn, kwargs", [("khop:2", False, {}), ("dense", True, {}),
                                                        ("graph|virtual:1", False, {}),
                                                        ("graph", False, {"max_degree": 3, "jk": "cat"})])
def test_graph_transformer_compiles(pattern, local_mpnn, kwargs):
    # Virtual nodes are joined to the batch's examples in forward (their pair count depends on
    # the example sizes), which breaks the graph; every other structure is precomputed.
    torch.manual_seed(0)
    model = GraphTransformer(5, 16, 3, num_layers=2, num_heads=4, edge_dim=2, pattern=pattern, local_mpnn=local_mpnn,
                             task="graph", **kwargs)
    graphs = []
    for n in (6, 9, 4):
        ei = torch.randint(0, n, (2, 2 * n))
        ei = ei[:, ei[0] != ei[1]]
        graphs.append(model.transform(Data(x=torch.randn(n, 5), edge_index=ei, edge_attr=torch.randn(ei.size(1), 2))))
    batch = Batch.from_data_list(graphs)
    if "virtual" not in pattern:
        explanation = torch._dynamo.explain(model)(batch)
        assert explanation.graph_break_count == 0, [str(b.reason) for b in explanation.break_reasons]

    def step(m):
        out = m(batch)
        out.square().sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        model.zero_grad()
        return out.detach(), grads

    eager, compiled = step(model), step(torch.compile(model, backend="aot_eager"))
    torch.testing.assert_close(compiled[0], eager[0], atol=1e-5, rtol=1e-5)
    for a, b in zip(compiled[1], eager[1]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
