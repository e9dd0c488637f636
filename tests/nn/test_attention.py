"""GraphMultiheadAttention against torch.nn.MultiheadAttention and a naive dense reference."""
import math

import pytest
import torch
from torch import nn

from graphattn import patterns as P
from graphattn.nn import GraphMultiheadAttention

torch.set_default_dtype(torch.float32)


def make_ptr(lengths):
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=torch.long)


def reference(layer, x_key, x_query, value, mask, bias=None, edge_value=None):
    """Naive dense attention from the definition: mask [Nq, Nk] True = may attend.

    bias: [Nq, Nk, H] added to the scores; edge_value: [Nq, Nk, H, D] value term.
    """
    e, h = layer.embed_dim, layer.num_heads
    d = e // h
    if layer.in_proj_weight is not None:
        w_q, w_k, *w_v = layer.in_proj_weight.split(e)
    else:
        w_q, w_k, *w_v = layer.q_proj_weight, layer.k_proj_weight, layer.v_proj_weight
    b_q, b_k, *b_v = layer.in_proj_bias.split(e) if layer.in_proj_bias is not None else (0, 0, 0)
    q = (x_query @ w_q.t() + b_q).view(-1, h, d)
    k = (x_key @ w_k.t() + b_k).view(-1, h, d)
    # project_values=False: the value inputs themselves, no W_v and no W_o
    v = (value if layer.out_proj is None else value @ w_v[0].t() + (b_v[0] if b_v else 0)).view(-1, h, d)
    scores = torch.einsum("ihd,jhd->ijh", q, k) / math.sqrt(d)
    if bias is not None:
        scores = scores + bias
    m = mask.unsqueeze(-1)
    if layer.normalization == "softmax":
        weights = torch.softmax(scores.masked_fill(~m, -math.inf), dim=1).nan_to_num(0.0)
    elif layer.normalization == "relu":
        weights = torch.relu(scores) * m / mask.sum(1).clamp(min=1).view(-1, 1, 1)
    else:
        weights = torch.sigmoid(scores) * m
    out = torch.einsum("ijh,jhd->ihd", weights, v)
    if edge_value is not None:
        out = out + torch.einsum("ijh,ijhd->ihd", weights, edge_value)
    out = out.reshape(-1, e) if layer.out_proj is None else layer.out_proj(out.reshape(-1, e))
    return out * mask.any(1, keepdim=True), weights


LENGTHS = [6, 1, 0, 9, 3]

# (pattern, backends that can compute it)
CASES = {
    "dense": (P.dense(), ["edges", "dense"]),
    "causal": (P.causal(), ["edges", "dense"]),
    "window2": (P.window(2), ["edges", "window"]),
    "causal_window": (P.causal() & P.window(3), ["edges", "window"]),
    "band": (P.Band(1, 4), ["edges", "window"]),
    "window_wide": (P.window(40), ["edges", "window", "dense"]),
    "dilated": (P.dilated(2, 2), ["edges"]),
    "block": (P.block(3), ["edges"]),
    "bigbird": (P.bigbird(1, num_global=1, num_random=2, seed=0), ["edges"]),
    "global": (P.global_tokens([2]), ["edges"]),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("with_bias", [False, True])
def test_every_backend_equals_dense_reference(name, with_bias):
    pattern, backends = CASES[name]
    torch.manual_seed(0)
    ptr = make_ptr(LENGTHS)
    x = torch.randn(int(ptr[-1]), 16)
    edge_index = pattern.edge_index(ptr)
    attn_bias = torch.randn(edge_index.size(1), 4) if with_bias else None
    mask = pattern.to_dense(ptr)
    dense_bias = None
    if with_bias:
        dense_bias = torch.zeros(*mask.shape, 4)
        dense_bias[edge_index[1], edge_index[0]] = attn_bias
    layer = GraphMultiheadAttention(16, 4).eval()
    expected, weights = reference(layer, x, x, x, mask, dense_bias)
    for backend in backends + ["auto"]:
        layer.backend = backend
        out, (ei, alpha) = layer(x, pattern=pattern, ptr=ptr, attn_bias=attn_bias, return_attention_weights=True)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5, msg=backend)
        assert torch.equal(ei, edge_index)
        torch.testing.assert_close(alpha, weights[ei[1], ei[0]], atol=1e-5, rtol=1e-5, msg=backend)
        plain = layer(x, pattern=pattern, ptr=ptr, attn_bias=attn_bias)
        torch.testing.assert_close(plain, expected, atol=1e-5, rtol=1e-5, msg=backend)


@pytest.mark.parametrize("backend", ["edges", "dense", "window"])
def test_gradcheck(backend):
    pattern = {"edges": P.bigbird(1, 1, 1, seed=0), "dense": P.causal(), "window": P.causal() & P.window(2)}[backend]
    torch.manual_seed(0)
    layer = GraphMultiheadAttention(8, 2, backend=backend).double()
    ptr = make_ptr([4, 0, 1, 5])
    x = torch.randn(10, 8, dtype=torch.float64, requires_grad=True)
    num_edges = pattern.edge_index(ptr).size(1)
    bias = torch.randn(num_edges, 2, dtype=torch.float64, requires_grad=True)

    def f(x, bias):
        return layer(x, pattern=pattern, ptr=ptr, attn_bias=bias)

    assert torch.autograd.gradcheck(f, (x, bias))
    # ... and the parameters get the gradients of the reference.
    out = f(x, bias)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    mask = pattern.to_dense(ptr)
    ei = pattern.edge_index(ptr)
    dense_bias = torch.zeros(*mask.shape, 2, dtype=torch.float64)
    dense_bias[ei[1], ei[0]] = bias.detach()
    ref, _ = reference(layer, x, x, x, mask, dense_bias)
    ref.square().sum().backward()
    for g, p in zip(grads, layer.parameters()):
        torch.testing.assert_close(g, p.grad)


# --------------------------------------------------------------------------- torch parity


@pytest.mark.parametrize("embed_dim, num_heads", [(16, 4), (24, 3), (8, 1)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("backend", ["edges", "dense", "auto"])
def test_equals_torch_self_attention(embed_dim, num_heads, bias, causal, backend):
    torch.manual_seed(embed_dim + num_heads)
    mha = nn.MultiheadAttention(embed_dim, num_heads, bias=bias, batch_first=True).eval()
    lengths = torch.tensor([7, 3, 5, 1])
    x = torch.randn(4, 7, embed_dim)
    pad = torch.arange(7) >= lengths.unsqueeze(1)  # True = padding (torch's convention)
    attn_mask = torch.ones(7, 7, dtype=torch.bool).triu(1) if causal else None  # True = blocked
    expected, _ = mha(x, x, x, key_padding_mask=pad, attn_mask=attn_mask)
    layer = GraphMultiheadAttention.from_torch(mha, backend=backend).eval()
    out = layer(x[~pad], pattern=P.causal() if causal else P.dense(), ptr=make_ptr(lengths.tolist()))
    torch.testing.assert_close(out, expected[~pad], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kdim, vdim", [(None, None), (5, 7), (16, 3)])
@pytest.mark.parametrize("backend", ["edges", "dense"])
def test_equals_torch_cross_attention(kdim, vdim, backend):
    torch.manual_seed(1)
    mha = nn.MultiheadAttention(16, 4, kdim=kdim, vdim=vdim, batch_first=True).eval()
    q_len, k_len = torch.tensor([4, 2, 5]), torch.tensor([6, 1, 3])
    query = torch.randn(3, 5, 16)
    key, value = torch.randn(3, 6, kdim or 16), torch.randn(3, 6, vdim or 16)
    q_pad = torch.arange(5) >= q_len.unsqueeze(1)
    k_pad = torch.arange(6) >= k_len.unsqueeze(1)
    expected, _ = mha(query, key, value, key_padding_mask=k_pad)
    layer = GraphMultiheadAttention.from_torch(mha, backend=backend).eval()
    out = layer(
        (key[~k_pad], query[~q_pad]), value=value[~k_pad], pattern=P.cross(),
        ptr=make_ptr(q_len.tolist()), key_ptr=make_ptr(k_len.tolist()),
    )
    torch.testing.assert_close(out, expected[~q_pad], atol=1e-5, rtol=1e-5)


def test_to_torch_round_trip():
    layer = GraphMultiheadAttention(12, 3, kdim=4, vdim=6)
    mha = layer.to_torch()
    assert mha.batch_first and mha.kdim == 4 and mha.vdim == 6
    back = GraphMultiheadAttention.from_torch(mha)
    for (n1, p1), (n2, p2) in zip(layer.state_dict().items(), back.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_doctest_numbers():
    # The worked example of the docstring: scores 112 and 96 -> 14 and 12 -> 0.88 and 0.12.
    layer = GraphMultiheadAttention(64, 1, bias=False)
    with torch.no_grad():
        layer.in_proj_weight.copy_(torch.eye(64).repeat(3, 1))
        layer.out_proj.weight.copy_(torch.eye(64))
    x_key, x_query = torch.zeros(2, 64), torch.zeros(1, 64)
    x_key[0, 0], x_key[1, 0], x_query[0, 0] = 14.0, 12.0, 8.0
    _, (_, alpha) = layer((x_key, x_query), torch.tensor([[0, 1], [0, 0]]), return_attention_weights=True)
    expected = torch.softmax(torch.tensor([14.0, 12.0]), 0)
    torch.testing.assert_close(alpha.squeeze(1), expected)


# --------------------------------------------------------------------------- graphs


@pytest.mark.parametrize("project_values", [True, False])
def test_edge_attr_bias_and_value_against_reference(project_values):
    torch.manual_seed(2)
    n = 9
    edge_index = torch.randint(0, n, (2, 30))
    edge_index = torch.unique(edge_index[1] * n + edge_index[0])
    edge_index = torch.stack([edge_index % n, edge_index // n])
    edge_attr = torch.randn(edge_index.size(1), 3)
    layer = GraphMultiheadAttention(8, 2, edge_dim=3, edge_value=True, project_values=project_values).eval()
    x = torch.randn(n, 8)
    out = layer(x, edge_index, edge_attr)
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[edge_index[1], edge_index[0]] = True
    bias = torch.zeros(n, n, 2)
    bias[edge_index[1], edge_index[0]] = layer.lin_edge(edge_attr)
    ev = torch.zeros(n, n, 2, 4)
    ev[edge_index[1], edge_index[0]] = layer.lin_edge_value(edge_attr).view(-1, 2, 4)
    expected, _ = reference(layer, x, x, x, mask, bias, ev)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    # Edge features reach the gradients of their weights.
    out.sum().backward()
    assert layer.lin_edge.weight.grad.abs().sum() > 0 and layer.lin_edge_value.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("backend", ["edges", "window", "dense"])
def test_edge_key_term_against_reference(backend):
    # Pattern window(40) on short examples: every backend can compute it, each with an edge bias.
    torch.manual_seed(4)
    ptr = make_ptr(LENGTHS)
    n = int(ptr[-1])
    x = torch.randn(n, 8, requires_grad=True)
    pattern = P.window(40)
    edge_index = pattern.edge_index(ptr)
    edge_attr = torch.randn(edge_index.size(1), 3)
    layer = GraphMultiheadAttention(8, 2, edge_dim=3, edge_key=True, backend=backend).eval()
    out = layer(x, pattern=pattern, ptr=ptr, edge_attr=edge_attr)
    w_q, b_q = layer.in_proj_weight[:8], layer.in_proj_bias[:8]
    q = (x @ w_q.t() + b_q).view(n, 2, 4)
    key_term = (q[edge_index[1]] * layer.lin_edge_key(edge_attr).view(-1, 2, 4)).sum(-1) / 2.0  # sqrt(head_dim)
    mask = torch.zeros(n, n, dtype=torch.bool)
    mask[edge_index[1], edge_index[0]] = True
    bias = torch.zeros(n, n, 2)
    bias[edge_index[1], edge_index[0]] = layer.lin_edge(edge_attr) + key_term
    expected, _ = reference(layer, x, x, x, mask, bias)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    out.square().sum().backward()
    assert layer.lin_edge_key.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="edge_key=True needs edge_dim"):
        GraphMultiheadAttention(8, 2, edge_key=True)


@pytest.mark.parametrize("normalization", ["relu", "sigmoid"])
def test_other_normalizations(normalization):
    torch.manual_seed(3)
    ptr = make_ptr(LENGTHS)
    x = torch.randn(int(ptr[-1]), 8)
    layer = GraphMultiheadAttention(8, 2, normalization=normalization).eval()
    out = layer(x, pattern=P.window(2), ptr=ptr)
    expected, _ = reference(layer, x, x, x, P.window(2).to_dense(ptr))
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="normalization"):
        GraphMultiheadAttention(8, 2, normalization=normalization, backend="dense")(x, pattern=P.dense(), ptr=ptr)


def test_unsorted_edge_index_keeps_caller_order():
    torch.manual_seed(4)
    edge_index = torch.tensor([[3, 0, 1, 2, 0], [0, 1, 0, 2, 2]])
    x = torch.randn(4, 8)
    layer = GraphMultiheadAttention(8, 2).eval()
    out, (ei, alpha) = layer(x, edge_index, return_attention_weights=True)
    assert torch.equal(ei, edge_index)
    order = torch.argsort(edge_index[1] * 4 + edge_index[0])
    out2, (_, alpha2) = layer(x, edge_index[:, order], return_attention_weights=True)
    torch.testing.assert_close(out, out2)
    torch.testing.assert_close(alpha[order], alpha2)


def test_isolated_nodes_output_zero_with_zero_gradient():
    edge_index = torch.tensor([[0, 1], [1, 0]])  # nodes 2 and 3 have no keys
    layer = GraphMultiheadAttention(8, 2)
    x = torch.randn(4, 8, requires_grad=True)
    out = layer(x, edge_index)
    assert torch.equal(out[2:], torch.zeros(2, 8))
    out[2:].sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters() if p.grad is not None)


@pytest.mark.parametrize("backend", ["edges", "dense"])
def test_empty_and_single_node(backend):
    layer = GraphMultiheadAttention(8, 2, backend=backend).eval()
    empty = layer(torch.zeros(0, 8), pattern=P.dense(), ptr=torch.tensor([0]))
    assert empty.shape == (0, 8)
    x = torch.randn(1, 8)
    expected, _ = reference(layer, x, x, x, torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(layer(x, pattern=P.dense()), expected)
    # cross-attention to an empty key example gives zeros, not NaN
    out = layer((torch.zeros(0, 8), x), pattern=P.cross(), ptr=torch.tensor([0, 1]), key_ptr=torch.tensor([0, 0]))
    assert torch.equal(out, torch.zeros(1, 8))


def test_permutation_equivariance_on_graphs():
    torch.manual_seed(5)
    n = 12
    edge_index = torch.randint(0, n, (2, 40))
    x = torch.randn(n, 16)
    layer = GraphMultiheadAttention(16, 4, edge_dim=2).eval()
    edge_attr = torch.randn(40, 2)
    perm = torch.randperm(n)
    inverse = torch.argsort(perm)
    out = layer(x, edge_index, edge_attr)
    out_perm = layer(x[perm], inverse[edge_index], edge_attr)
    torch.testing.assert_close(out_perm, out[perm], atol=1e-5, rtol=1e-5)


def test_dropout_like_torch():
    torch.manual_seed(6)
    layer = GraphMultiheadAttention(8, 2, dropout=0.5)
    x = torch.randn(10, 8)
    layer.eval()
    a = layer(x, pattern=P.dense())
    b = layer(x, pattern=P.dense())
    assert torch.equal(a, b)
    layer.train()
    for backend in ["edges", "dense", "window"]:
        layer.backend = backend
        pattern = P.window(3) if backend == "window" else P.dense()
        layer.eval()
        clean = layer(x, pattern=pattern)
        layer.train()
        torch.manual_seed(0)
        noisy = layer(x, pattern=pattern)
        torch.manual_seed(0)
        assert torch.equal(noisy, layer(x, pattern=pattern)), backend
        assert not torch.allclose(noisy, clean), backend


def test_select_backend_reasons():
    layer = GraphMultiheadAttention(8, 2)
    assert layer.select_backend(P.dense(), 10)[0] == "dense"
    assert layer.select_backend(P.causal() & P.window(4), 100)[0] == "window"
    assert layer.select_backend(P.window(64), 10)[0] == "dense"  # wider than the sequence
    backend, why = layer.select_backend(P.block(4), 10)
    assert backend == "edges" and "block:4 is not a band" in why
    assert layer.select_backend(None)[0] == "edges"


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(embed_dim=10, num_heads=3), ValueError, r"embed_dim \(10\) must be divisible by num_heads \(3\)"),
        (dict(embed_dim=0, num_heads=1), ValueError, "embed_dim"),
        (dict(embed_dim=8, num_heads=2.0), TypeError, "num_heads"),
        (dict(embed_dim=8, num_heads=2, dropout=1.5), ValueError, "dropout"),
        (dict(embed_dim=8, num_heads=2, backend="flash"), ValueError, "backend"),
        (dict(embed_dim=8, num_heads=2, normalization="tanh"), ValueError, "normalization"),
        (dict(embed_dim=8, num_heads=2, edge_value=True), ValueError, "edge_dim"),
        (dict(embed_dim=8, num_heads=2, vdim=4, project_values=False), ValueError, r"vdim \(4\) must equal embed_dim"),
    ],
)
def test_bad_construction(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        GraphMultiheadAttention(**kwargs)


def test_bad_forward_input():
    layer = GraphMultiheadAttention(8, 2)
    x = torch.randn(5, 8)
    ei = torch.tensor([[0, 1], [1, 2]])
    cases = [
        (lambda: layer(torch.randn(5, 7), ei), ValueError, "x_query"),
        (lambda: layer(x.long(), ei), TypeError, "floating"),
        (lambda: layer(x), ValueError, "edge_index"),
        (lambda: layer(x, torch.tensor([[0, 9], [1, 2]])), ValueError, "outside"),
        (lambda: layer(x, ei.int()), TypeError, "edge_index"),
        (lambda: layer(x, ei, torch.randn(2, 3)), ValueError, "edge_dim"),
        (lambda: layer(x, pattern=3), TypeError, "pattern must be a graphattn Pattern or a pattern spec"),
        (lambda: layer(x, pattern="dens"), ValueError, "unknown pattern"),
        (lambda: layer(x, pattern=P.dense(), ptr=torch.tensor([0, 4])), ValueError, "ptr"),
        (lambda: layer(x, ei, attn_bias=torch.randn(3, 2)), ValueError, "attn_bias"),
        (lambda: layer([x, x, x], ei), TypeError, "x must be"),
        (lambda: GraphMultiheadAttention(8, 2, backend="dense")(x, pattern=P.window(1)), ValueError, "dense"),
        (lambda: GraphMultiheadAttention(8, 2, backend="window")(x, pattern=P.block(2)), ValueError, "window"),
        (lambda: GraphMultiheadAttention(8, 2, backend="dense")(x, ei), ValueError, "dense"),
    ]
    for make, exc, match in cases:
        with pytest.raises(exc, match=match):
            make()
    with pytest.raises(ValueError, match="edge_attr"):
        GraphMultiheadAttention(8, 2, edge_dim=3)(x, ei, torch.randn(5, 3))


def test_an_explicit_edge_index_on_a_pattern_backend_says_what_the_backend_needs():
    x, ei = torch.randn(5, 8), torch.tensor([[0, 1], [1, 2]])
    for backend in ("dense", "window"):
        with pytest.raises(ValueError, match=f"backend '{backend}' computes a pattern .* not an explicit edge_index"):
            GraphMultiheadAttention(8, 2, backend=backend)(x, ei)


DTYPE_CASES = {  # argument -> a call that gives it in another dtype than the layer's float32
    "x": lambda layer, x, ei, ea: layer(x.double(), ei, ea),
    "x_key": lambda layer, x, ei, ea: layer((x.bfloat16(), x), ei, ea),
    "value": lambda layer, x, ei, ea: layer(x, ei, ea, value=x.double()),
    "edge_attr": lambda layer, x, ei, ea: layer(x, ei, ea.bfloat16()),
    "attn_bias": lambda layer, x, ei, ea: layer(x, ei, ea, attn_bias=torch.zeros(2, 2, dtype=torch.float64)),
    "key_value keys": lambda layer, x, ei, ea: layer(x, ei, ea, key_value=tuple(
        t.double() for t in layer.project_key_value(x))),
}


@pytest.mark.parametrize("name", list(DTYPE_CASES))
def test_a_dtype_mix_names_the_argument_and_both_dtypes(name):
    layer = GraphMultiheadAttention(8, 2, edge_dim=3)
    x, ei, ea = torch.randn(5, 8), torch.tensor([[0, 1], [1, 2]]), torch.randn(2, 3)
    with pytest.raises(TypeError, match=rf"^{name} has dtype torch\.(float64|bfloat16) but the layer's parameters "
                                        r"have dtype torch\.float32"):
        DTYPE_CASES[name](layer, x, ei, ea)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        if name in ("x_key", "edge_attr"):  # bf16 and fp32: autocast casts both sides, allowed and right
            mixed, same = DTYPE_CASES[name](layer, x, ei, ea), layer(x, ei, ea)
            torch.testing.assert_close(mixed.float(), same.float(), atol=0.05, rtol=0.05)
        else:  # autocast does not cast float64
            with pytest.raises(TypeError, match=f"^{name} has dtype torch.float64"):
                DTYPE_CASES[name](layer, x, ei, ea)


@pytest.mark.parametrize("backend", ["edges", "dense", "window"])
@pytest.mark.parametrize("kdim", [None, 5])
def test_unprojected_values_against_reference(backend, kdim):
    # project_values=False: values are the inputs split into heads, no W_v and no W_o; every
    # backend gives the reference's numbers and gradients (edge value terms: the test above).
    pattern = {"edges": P.bigbird(1, 1, 1, seed=0), "dense": P.causal(), "window": P.window(2)}[backend]
    torch.manual_seed(0)
    layer = GraphMultiheadAttention(8, 2, kdim=kdim, backend=backend, project_values=False).double()
    assert layer.out_proj is None  # parameters: W_q, W_k and their biases only
    assert sum(p.numel() for p in layer.parameters()) == 8 * 8 + 8 * (kdim or 8) + 2 * 8
    ptr = make_ptr([4, 0, 1, 5])
    x = torch.randn(10, 8, dtype=torch.float64, requires_grad=True)
    x_key = torch.randn(10, kdim, dtype=torch.float64, requires_grad=True) if kdim else x
    inputs = (x_key, x) if kdim else x
    mask = pattern.to_dense(ptr)
    out = layer(inputs, pattern=pattern, ptr=ptr, key_ptr=ptr if kdim else None, value=x if kdim else None)
    expected, _ = reference(layer, x_key, x, x, mask)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in layer.parameters()] + [x.grad.clone()]
    layer.zero_grad()
    x.grad = None
    expected.square().sum().backward()
    for got, want in zip(grads, [p.grad for p in layer.parameters()] + [x.grad]):
        torch.testing.assert_close(got, want)


def test_unprojected_values_have_no_torch_counterpart():
    layer = GraphMultiheadAttention(8, 2, project_values=False)
    with pytest.raises(ValueError, match="project_values=False"):
        layer.to_torch()
    with pytest.raises(ValueError, match="project_values=False"):
        GraphMultiheadAttention.from_torch(nn.MultiheadAttention(8, 2), project_values=False)


def test_repr():
    assert repr(GraphMultiheadAttention(256, 8)) == "GraphMultiheadAttention(256, num_heads=8, backend='auto')"
    assert repr(GraphMultiheadAttention(16, 2, edge_dim=4, backend="edges")) == (
        "GraphMultiheadAttention(16, num_heads=2, edge_dim=4, backend='edges')"
    )


@pytest.mark.parametrize("cross", [False, True])
def test_recomputed_projections_give_the_same_gradients(monkeypatch, cross):
    # Above RECOMPUTE_ABOVE elements the edges backend projects q, k, v again in backward
    # instead of keeping them; the gradients must not change. (Such sizes are far above those
    # that gather messages, so the sparse kernels are forced here.)
    import graphattn.nn.attention as attention_module

    monkeypatch.setattr("graphattn.ops.edges.GATHER_AT_MOST", 0)
    torch.manual_seed(0)
    layer = GraphMultiheadAttention(16, 4, kdim=8 if cross else None, vdim=8 if cross else None)
    x = torch.randn(12, 16, requires_grad=True)
    x_key = torch.randn(9, 8, requires_grad=True) if cross else x
    edge_index = torch.stack([torch.randint(0, x_key.size(0), (40,)), torch.randint(0, 12, (40,))])

    def grads():
        layer.zero_grad()
        for t in (x, x_key):
            t.grad = None
        out = layer((x_key, x) if cross else x, edge_index)
        out.square().sum().backward()
        return [out.detach(), x.grad.clone(), x_key.grad.clone()] + [p.grad.clone() for p in layer.parameters()]

    kept = grads()
    monkeypatch.setattr(attention_module, "RECOMPUTE_ABOVE", 0)
    calls = []
    recipes = layer._recipes

    def counted(*args):
        return tuple(None if r is None else (lambda r=r: calls.append(1) or r()) for r in recipes(*args))

    monkeypatch.setattr(layer, "_recipes", counted)
    recomputed = grads()
    assert len(calls) == 3  # q and k for the scores' backward, v for the aggregation's
    for a, b in zip(recomputed, kept):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("normalization", ["softmax", "sigmoid"])
def test_edges_backend_gathers_small_messages_with_the_numbers_of_its_kernels(monkeypatch, normalization):
    """Small calls gather per-edge messages (gathers_messages); outputs, weights and gradients
    equal those of the sparse kernels, with edge features in the scores, keys and values."""
    torch.manual_seed(0)
    layer = GraphMultiheadAttention(16, 4, edge_dim=3, edge_value=True, edge_key=True, normalization=normalization,
                                    backend="edges")
    x = torch.randn(12, 16)
    edge_index = torch.randint(0, 12, (2, 40))
    edge_attr = torch.randn(40, 3)
    bias = torch.randn(40, 4)

    def run(gather_at_most):
        monkeypatch.setattr("graphattn.ops.edges.GATHER_AT_MOST", gather_at_most)
        layer.zero_grad()
        inputs = [t.clone().requires_grad_() for t in (x, edge_attr, bias)]
        out, (_, alpha) = layer(inputs[0], edge_index, inputs[1], attn_bias=inputs[2], return_attention_weights=True)
        (out.square().sum() + alpha.sum()).backward()
        return [out, alpha] + [t.grad for t in inputs] + [p.grad.clone() for p in layer.parameters()]

    for got, expected in zip(run(1 << 40), run(0)):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
