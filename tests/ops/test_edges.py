"""The edges kernel's operators against gather/scatter references, as torch.library operators."""
import pytest
import torch
from torch_geometric.utils import softmax

from graphattn.ops import CSRLayout, edge_attention, gathers_messages, normalize
from graphattn.ops.dense import dense_forward
from graphattn.ops.edges import edge_aggregate, edge_scores, edge_softmax
from graphattn.ops.window import window_forward


@pytest.fixture(autouse=True, params=["kernels", "gather"])
def edge_path(request, monkeypatch):
    """Every test of edge_attention runs on both of its paths: the sparse kernels and, for small
    messages, gather/scatter."""
    monkeypatch.setattr("graphattn.ops.edges.GATHER_AT_MOST", 0 if request.param == "kernels" else 1 << 40)
    return request.param


def test_the_path_follows_the_message_size(edge_path):
    assert gathers_messages(10, 2, 3) == (edge_path == "gather")


def sorted_graph(num_queries=7, num_keys=5, num_edges=20, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.stack([torch.randint(0, num_keys, (num_edges,), generator=gen),
                              torch.randint(0, num_queries, (num_edges,), generator=gen)])
    keys = torch.unique(edge_index[1] * num_keys + edge_index[0])  # sorted by query, then key; no duplicates
    edge_index = torch.stack([keys % num_keys, keys // num_keys])
    q = torch.randn(num_queries, 2, 3, generator=gen, dtype=dtype)
    k = torch.randn(num_keys, 2, 3, generator=gen, dtype=dtype)
    v = torch.randn(num_keys, 2, 4, generator=gen, dtype=dtype)
    return edge_index, q, k, v


def reference(edge_index, q, k, v, scale, bias=None, edge_value=None, normalization="softmax"):
    src, dst = edge_index
    scores = (q[dst] * k[src]).sum(-1) * scale + (0 if bias is None else bias)
    weights = normalize(scores, dst, q.size(0), normalization)
    msg = v[src] if edge_value is None else v[src] + edge_value
    return torch.zeros(q.size(0), *v.shape[1:], dtype=v.dtype).index_add_(0, dst, weights.unsqueeze(-1) * msg), weights


@pytest.mark.parametrize("normalization", ["softmax", "relu", "sigmoid"])
@pytest.mark.parametrize("with_terms", [False, True])
def test_edge_attention_equals_gather_scatter(normalization, with_terms):
    edge_index, q, k, v = sorted_graph()
    num_edges = edge_index.size(1)
    bias = torch.randn(num_edges, 2) if with_terms else None
    edge_value = torch.randn(num_edges, 2, 4) if with_terms else None
    out, weights = edge_attention(q, k, v, edge_index, scale=0.7, bias=bias, edge_value=edge_value,
                                  normalization=normalization, need_weights=True)
    ref_out, ref_weights = reference(edge_index, q, k, v, 0.7, bias, edge_value, normalization)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, ref_weights, atol=1e-5, rtol=1e-5)
    assert edge_attention(q, k, v, edge_index)[1] is None  # weights only when asked for


@pytest.mark.parametrize("normalization", ["softmax", "relu", "sigmoid"])
def test_gradcheck(normalization):
    edge_index, q, k, v = sorted_graph(dtype=torch.float64)
    bias = torch.randn(edge_index.size(1), 2, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (q, k, v, bias)]

    def f(q, k, v, bias):
        return edge_attention(q, k, v, edge_index, scale=0.7, bias=bias, normalization=normalization, need_weights=True)

    assert torch.autograd.gradcheck(f, inputs)


def test_softmax_operator_equals_pyg_and_its_gradient():
    edge_index, q, k, _ = sorted_graph(dtype=torch.float64)
    layout = CSRLayout.build(edge_index, q.size(0), k.size(0))
    scores = torch.randn(edge_index.size(1), 2, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(edge_softmax(layout.rowptr, layout.row, scores), softmax(scores, edge_index[1]))
    assert torch.autograd.gradcheck(lambda s: edge_softmax(layout.rowptr, layout.row, s), (scores,))


def test_operators_pass_torch_library_opcheck():
    edge_index, q, k, v = sorted_graph()
    layout = CSRLayout.build(edge_index, q.size(0), k.size(0))
    weights = torch.rand(edge_index.size(1), 2, requires_grad=True)
    q, k, v = (t.requires_grad_() for t in (q, k, v))
    torch.library.opcheck(edge_scores, (*layout, q, k, 0.5))
    torch.library.opcheck(edge_aggregate, (*layout, weights, v, False))
    torch.library.opcheck(edge_aggregate, (*layout, weights, q, True))
    torch.library.opcheck(edge_softmax, (layout.rowptr, layout.row, weights))
    ptr = torch.tensor([0, 3, 7])
    qq, kk, vv = (torch.randn(7, 2, 3, requires_grad=True) for _ in range(3))
    seed = torch.zeros((), dtype=torch.long)
    torch.library.opcheck(window_forward, (qq, kk, vv, None, ptr, ptr, 1, 1, 0.5, 0.0, seed, 16, False, 0))
    torch.library.opcheck(dense_forward, (qq, kk, vv, ptr, ptr, True, 0.5, None, None, 0.0, seed, False, 0))


def test_queries_without_keys_and_no_edges():
    edge_index, q, k, v = sorted_graph(num_queries=9)
    keep = edge_index[1] < 6  # queries 6..8 get no key
    out, weights = edge_attention(q, k, v, edge_index[:, keep], need_weights=True)
    assert torch.equal(out[6:], torch.zeros_like(out[6:]))
    empty = torch.zeros(2, 0, dtype=torch.long)
    out, weights = edge_attention(q, k, v, empty, need_weights=True)
    assert out.shape == (9, 2, 4) and weights.shape == (0, 2) and not out.any()


def test_half_precision_sums_in_float32():
    edge_index, q, k, v = sorted_graph()
    out, weights = edge_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), edge_index, need_weights=True)
    assert out.dtype == weights.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), edge_attention(q, k, v, edge_index)[0], atol=3e-2, rtol=3e-2)
