"""window_attention against a naive dense masked softmax written from the definition."""
import pytest
import torch

import graphattn.ops.window as window_module
from graphattn.ops import window_attention
from graphattn.patterns import Band

BANDS = [(1, 1), (3, 3), (4, 0), (0, 4), (2, 5), (16, 16), (0, 0)]
# (query lengths, key lengths): ragged, with 0 and 1, shorter and longer than the windows.
LAYOUTS = {
    "self": ([0, 1, 5, 13, 2, 0, 40, 3], None),
    "cross": ([3, 0, 7, 20, 1, 9], [5, 2, 0, 30, 1, 2]),
}


def make_ptr(lengths):
    return torch.tensor([0] + torch.tensor(lengths, dtype=torch.long).cumsum(0).tolist())


def layout(name):
    q_lengths, k_lengths = LAYOUTS[name]
    ptr = make_ptr(q_lengths)
    return ptr, ptr if k_lengths is None else make_ptr(k_lengths)


def dense_mask(ptr, key_ptr, left, right):
    """[Nq, Nk] True = may attend, straight from the definition."""
    def local(p):
        batch = torch.repeat_interleave(torch.arange(p.numel() - 1), p.diff())
        return batch, torch.arange(int(p[-1])) - p[batch]

    bq, t = local(ptr)
    bk, s = local(key_ptr)
    d = s.view(1, -1) - t.view(-1, 1)
    return (bq.view(-1, 1) == bk.view(1, -1)) & (d >= -left) & (d <= right)


def reference(q, k, v, ptr, key_ptr, left, right, bias=None, scale=None):
    """Dense masked softmax per head; rows without keys give zeros. Returns (out, weights)."""
    mask = dense_mask(ptr, key_ptr, left, right)
    scale = q.size(-1) ** -0.5 if scale is None else scale
    scores = torch.einsum("ihd,jhd->hij", q, k) * scale
    if bias is not None:
        src, dst = Band(left, right).edge_index(ptr, key_ptr)
        full = torch.zeros_like(scores)
        full[:, dst, src] = bias.t()
        scores = scores + full
    has_key = mask.any(1, keepdim=True)
    # Rows without keys: softmax over zeros, then weight 0, so the reference's gradients are
    # finite too.
    scores = scores.masked_fill(~mask, float("-inf")).masked_fill(~has_key, 0.0)
    weights = torch.softmax(scores, -1) * has_key  # (H, Nq, Nk)
    return torch.einsum("hij,jhd->ihd", weights, v), weights


def inputs(ptr, key_ptr, heads=2, dim=4, dim_v=3, dtype=torch.float32, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    nq, nk = int(ptr[-1]), int(key_ptr[-1])
    shapes = [(nq, heads, dim), (nk, heads, dim), (nk, heads, dim_v)]
    return [torch.randn(*s, generator=g, dtype=dtype).requires_grad_(grad) for s in shapes]


def num_edges(ptr, key_ptr, left, right):
    return Band(left, right).edge_index(ptr, key_ptr).size(1)


@pytest.fixture
def small_groups(monkeypatch):
    """Force a group per block, so the group loops and their boundaries are exercised."""
    monkeypatch.setitem(window_module._GROUP_ELEMENTS, "cpu", 1)


@pytest.mark.parametrize("left,right", BANDS)
@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("block_size", [None, 3])
def test_matches_reference(left, right, name, with_bias, block_size):
    ptr, key_ptr = layout(name)
    q, k, v = inputs(ptr, key_ptr)
    bias = torch.randn(num_edges(ptr, key_ptr, left, right), 2) if with_bias else None
    out, alpha = window_attention(
        q, k, v, ptr, key_ptr, left, right, bias=bias, need_weights=True, block_size=block_size
    )
    ref_out, weights = reference(q, k, v, ptr, key_ptr, left, right, bias)
    src, dst = Band(left, right).edge_index(ptr, key_ptr)
    assert out.shape == (q.size(0), 2, 3) and alpha.shape == (src.numel(), 2)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alpha, weights[:, dst, src].t(), atol=1e-5, rtol=1e-5)
    plain, no_weights = window_attention(q, k, v, ptr, key_ptr, left, right, bias=bias, block_size=block_size)
    torch.testing.assert_close(plain, out)
    assert no_weights is None


@pytest.mark.parametrize("left,right", BANDS)
@pytest.mark.parametrize("name", LAYOUTS)
def test_gradients_match_reference(left, right, name, small_groups):
    ptr, key_ptr = layout(name)
    q, k, v = inputs(ptr, key_ptr, grad=True)
    bias = torch.randn(num_edges(ptr, key_ptr, left, right), 2, requires_grad=True)
    src, dst = Band(left, right).edge_index(ptr, key_ptr)
    out, alpha = window_attention(q, k, v, ptr, key_ptr, left, right, bias=bias, need_weights=True)
    ref_out, weights = reference(q, k, v, ptr, key_ptr, left, right, bias)
    g_out, g_alpha = torch.randn_like(out), torch.randn_like(alpha)
    grads = torch.autograd.grad((out, alpha), (q, k, v, bias), (g_out, g_alpha))
    ref_grads = torch.autograd.grad(
        (ref_out, weights[:, dst, src].t()), (q, k, v, bias), (g_out, g_alpha)
    )
    for got, expected in zip(grads, ref_grads):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_reference_mask_is_band_pattern():
    for name in LAYOUTS:
        ptr, key_ptr = layout(name)
        for left, right in BANDS:
            expected = Band(left, right).to_dense(ptr, key_ptr)
            assert torch.equal(dense_mask(ptr, key_ptr, left, right), expected)


def test_many_groups_and_block_sizes(small_groups):
    ptr, key_ptr = layout("cross")
    q, k, v = inputs(ptr, key_ptr)
    bias = torch.randn(num_edges(ptr, key_ptr, 2, 5), 2)
    ref_out, weights = reference(q, k, v, ptr, key_ptr, 2, 5, bias)
    src, dst = Band(2, 5).edge_index(ptr, key_ptr)
    for block_size in [1, 2, 7, 64]:
        out, alpha = window_attention(q, k, v, ptr, key_ptr, 2, 5, bias=bias, need_weights=True,
                                      block_size=block_size)
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(alpha, weights[:, dst, src].t(), atol=1e-5, rtol=1e-5)


def test_scale_and_noncontiguous_inputs():
    ptr, key_ptr = layout("self")
    qkv = torch.randn(int(ptr[-1]), 3, 2, 4)
    q, k, v = qkv.unbind(1)  # strided views, as a fused in-projection gives
    out, _ = window_attention(q, k, v, ptr, key_ptr, 2, 2, scale=0.3)
    ref_out, _ = reference(q, k, v, ptr, key_ptr, 2, 2, scale=0.3)
    torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name,left,right", [("self", 2, 1), ("cross", 1, 3), ("cross", 3, 0)])
def test_gradcheck(name, left, right, small_groups):
    q_lengths, k_lengths = [[2, 0, 5, 1], [3, 1, 0, 6]] if name == "cross" else [[2, 0, 5, 1], None]
    ptr = make_ptr(q_lengths)
    key_ptr = ptr if k_lengths is None else make_ptr(k_lengths)
    q, k, v = inputs(ptr, key_ptr, dim=3, dim_v=2, dtype=torch.float64, grad=True)
    bias = torch.randn(num_edges(ptr, key_ptr, left, right), 2, dtype=torch.float64)
    bias.requires_grad_()

    def f(q, k, v, bias):  # both outputs, so alpha's gradient is checked too
        return window_attention(q, k, v, ptr, key_ptr, left, right, bias=bias, need_weights=True,
                                block_size=2)

    assert torch.autograd.gradcheck(f, (q, k, v, bias), fast_mode=True)
    def g(q, k, v):  # one output, no bias
        return window_attention(q, k, v, ptr, key_ptr, left, right)[0]

    assert torch.autograd.gradcheck(g, (q, k, v), fast_mode=True)


def test_gradcheck_full(small_groups):
    # Every Jacobian entry (fast_mode above only checks random projections of it).
    ptr, key_ptr = make_ptr([3, 0, 2]), make_ptr([2, 1, 4])
    q, k, v = inputs(ptr, key_ptr, dim=2, dim_v=2, dtype=torch.float64, grad=True)
    bias = torch.randn(num_edges(ptr, key_ptr, 1, 2), 2, dtype=torch.float64, requires_grad=True)

    def f(q, k, v, bias):
        return window_attention(q, k, v, ptr, key_ptr, 1, 2, bias=bias, need_weights=True,
                                block_size=2)

    assert torch.autograd.gradcheck(f, (q, k, v, bias))


def test_gradcheck_with_dropout():
    ptr = make_ptr([4, 0, 6])
    q, k, v = inputs(ptr, ptr, dim=3, dim_v=2, dtype=torch.float64, grad=True)

    def f(q, k, v):  # re-seeded: the same keep mask on every call
        torch.manual_seed(1)
        return window_attention(q, k, v, ptr, ptr, 1, 2, dropout_p=0.4)[0]

    assert torch.autograd.gradcheck(f, (q, k, v), fast_mode=True)


@pytest.mark.filterwarnings("ignore:Anomaly Detection")
def test_rows_without_keys():
    # Example 0: 6 queries, 2 keys, band (1, 0): queries 3.. have none. Example 1: no keys.
    ptr, key_ptr = make_ptr([6, 3, 2]), make_ptr([2, 0, 4])
    q, k, v = inputs(ptr, key_ptr, grad=True)
    with torch.autograd.detect_anomaly():  # raises on any NaN produced in backward
        out, _ = window_attention(q, k, v, ptr, key_ptr, 1, 0)
        empty = ~dense_mask(ptr, key_ptr, 1, 0).any(1)
        assert empty.tolist() == [False] * 3 + [True] * 6 + [False] * 2
        assert torch.equal(out[empty], torch.zeros_like(out[empty]))
        (out * torch.randn_like(out)).sum().backward()
    for x in (q, k, v):
        assert torch.isfinite(x.grad).all()
    assert torch.equal(q.grad[empty], torch.zeros_like(q.grad[empty]))
    torch.testing.assert_close(out, reference(q, k, v, ptr, key_ptr, 1, 0)[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("q_lengths,k_lengths", [([3, 2], [0, 0]), ([], []), ([0, 0], [4, 1])])
def test_degenerate_batches(q_lengths, k_lengths):
    ptr, key_ptr = make_ptr(q_lengths), make_ptr(k_lengths)
    q, k, v = inputs(ptr, key_ptr, grad=True)
    out, alpha = window_attention(q, k, v, ptr, key_ptr, 2, 2, need_weights=True)
    assert out.shape == (sum(q_lengths), 2, 3) and alpha.shape == (0, 2)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    for x in (q, k, v):
        assert x.grad is not None and torch.equal(x.grad, torch.zeros_like(x))


def test_dropout():
    ptr, key_ptr = layout("cross")
    q, k, v = inputs(ptr, key_ptr)
    args = (q, k, v, ptr, key_ptr, 3, 3)
    plain = window_attention(*args)[0]
    torch.manual_seed(0)
    a = window_attention(*args, dropout_p=0.5)[0]
    torch.manual_seed(0)
    b = window_attention(*args, dropout_p=0.5)[0]
    assert torch.equal(a, b) and not torch.allclose(a, plain)
    # Weights are returned before dropout (as PyG does), outputs after.
    torch.manual_seed(0)
    c, alpha = window_attention(*args, dropout_p=0.5, need_weights=True)
    assert torch.equal(c, a)
    torch.testing.assert_close(alpha, window_attention(*args, need_weights=True)[1])
    zero = window_attention(*args, dropout_p=1.0)[0]
    assert torch.equal(zero, torch.zeros_like(zero))


def test_dropout_drops_weights_and_rescales():
    # Band(0, 0): each query's only key is itself with weight 1, so dropout(0.25) gives
    # either 0 or v / 0.75, per query and head.
    ptr = make_ptr([50, 30])
    q, k, v = inputs(ptr, ptr)
    out, _ = window_attention(q, k, v, ptr, ptr, 0, 0, dropout_p=0.25)
    kept = (out != 0).all(-1)  # (N, H)
    torch.testing.assert_close(out[kept], v[kept] / 0.75)
    assert 0.6 < kept.float().mean() < 0.9


def test_float64_and_bias_dtype():
    ptr, key_ptr = layout("self")
    q, k, v = inputs(ptr, key_ptr, dtype=torch.float64)
    bias = torch.randn(num_edges(ptr, key_ptr, 3, 1), 2)  # float32, cast to the inputs' dtype
    out, _ = window_attention(q, k, v, ptr, key_ptr, 3, 1, bias=bias)
    assert out.dtype == torch.float64
    ref_out, _ = reference(q, k, v, ptr, key_ptr, 3, 1, bias.double())
    torch.testing.assert_close(out, ref_out)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    ptr, key_ptr = layout("cross")
    q, k, v = inputs(ptr, key_ptr, grad=True)
    bias = torch.randn(num_edges(ptr, key_ptr, 2, 5), 2, requires_grad=True)
    out, alpha = window_attention(q, k, v, ptr, key_ptr, 2, 5, bias=bias, need_weights=True)
    out.sum().backward()
    cpu_grads = [x.grad.clone() for x in (q, k, v, bias)]
    dev = [x.detach().cuda().requires_grad_() for x in (q, k, v, bias)]
    out_d, alpha_d = window_attention(*dev[:3], ptr.cuda(), key_ptr.cuda(), 2, 5, bias=dev[3],
                                      need_weights=True)
    out_d.sum().backward()
    torch.testing.assert_close(out_d.cpu(), out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(alpha_d.cpu(), alpha, atol=1e-5, rtol=1e-5)
    for x, g in zip(dev, cpu_grads):
        torch.testing.assert_close(x.grad.cpu(), g, atol=1e-4, rtol=1e-4)


def _bad(**overrides):
    ptr, key_ptr = make_ptr([3, 4]), make_ptr([2, 5])
    q, k, v = inputs(ptr, key_ptr)
    kwargs = dict(query=q, key=k, value=v, ptr=ptr, key_ptr=key_ptr, left=1, right=1)
    kwargs.update(overrides)
    return kwargs


@pytest.mark.parametrize(
    "overrides,error,match",
    [
        (dict(query=torch.randn(7, 3, 4)), ValueError, "heads"),
        (dict(key=torch.randn(7, 2, 5)), ValueError, "key must have the head dim"),
        (dict(value=torch.randn(6, 2, 3)), ValueError, "value must have one row per key"),
        (dict(query=torch.randn(7, 8)), ValueError, "query must have shape"),
        (dict(query=[[1.0]]), TypeError, "query must be a Tensor"),
        (dict(query=torch.ones(7, 2, 4, dtype=torch.long)), TypeError, "query must be a floating"),
        (dict(value=torch.randn(7, 2, 3, dtype=torch.float64)), TypeError, "one dtype"),
        (dict(ptr=make_ptr([3, 3])), ValueError, r"ptr\[-1\] \(6\) must equal .* query rows \(7\)"),
        (dict(key_ptr=make_ptr([2, 4])), ValueError, r"key_ptr\[-1\]"),
        (dict(key_ptr=make_ptr([7])), ValueError, "key_ptr must describe as many examples"),
        (dict(ptr=torch.tensor([1, 7])), ValueError, "ptr must start at 0"),
        (dict(ptr=torch.tensor([0.0, 7.0])), TypeError, "ptr must be an integer"),
        (dict(left=-1), ValueError, "left must be an int >= 0"),
        (dict(right=1.5), TypeError, "right must be an int"),
        (dict(bias=torch.randn(5, 2)), ValueError, r"bias must have shape \[E, H\] = \[16, 2\]"),
        (dict(bias=torch.randn(16, 3)), ValueError, "bias must have shape"),
        (dict(bias=[0.0]), TypeError, "bias must be a Tensor"),
        (dict(dropout_p=1.5), ValueError, "dropout_p"),
        (dict(scale="x"), TypeError, "scale"),
        (dict(block_size=0), ValueError, "block_size"),
    ],
)
def test_bad_input(overrides, error, match):
    with pytest.raises(error, match=match):
        window_attention(**_bad(**overrides))
