"""A pattern of one's own, written by subclassing Pattern and its public hooks only, through every
kernel its answers allow, against a naive dense masked softmax (outputs and gradients, fp32, 1e-5).

Adding these patterns touched this file alone: no kernel, layer or application learns their
classes. ``Strided`` implements one method (``build_edges``): the edges kernel takes it, and the
flex kernel looks its pairs up in a table of its edges and counts its tiles from them.
``StridedRule`` adds a closed-form ``mask_rule`` and ``allows``, which the flex kernel then uses.
``Lookback`` answers ``as_band()``: the dense and window kernels take it too.
"""
import math
import warnings

import pytest
import torch

from graphattn import patterns as P
from graphattn.nn import GraphMultiheadAttention
from graphattn.ops import block_sparsity, flex_attention, pattern_block_mask
from graphattn.patterns import Pattern

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

LENGTHS = [6, 1, 0, 9, 3]
KEY_LENGTHS = [4, 0, 2, 11, 3]  # cross-attention: example 1 has a query and no key


class Strided(Pattern):
    """Query ``t`` attends the keys ``s`` of its example with ``s = t (mod stride)``; ``build_edges`` only."""

    def __init__(self, stride: int):
        self.stride = stride

    def build_edges(self, query, key):
        # Candidates t % stride + stride * m for every query, kept where inside its example:
        # row-major order is sorted by query, then key, as build_edges must return.
        longest = int(key.sizes.max()) if key.sizes.numel() else 0
        steps = torch.arange(math.ceil(longest / self.stride), device=query.ptr.device)
        local = (query.pos % self.stride).unsqueeze(1) + self.stride * steps  # [N_q, M]
        valid = local < key.sizes[query.batch].unsqueeze(1)
        keys = local + key.ptr[query.batch].unsqueeze(1)
        queries = torch.arange(query.num_nodes, device=query.ptr.device).unsqueeze(1).expand_as(keys)
        return torch.stack([keys[valid], queries[valid]])

    def __repr__(self):
        return f"strided:{self.stride}"


class StridedRule(Strided):
    """``Strided`` with its closed forms: the pointwise rule (FlexAttention's ``mask_mod``) and membership."""

    def mask_rule(self, query, key):
        q_batch, k_batch, q_pos, k_pos, stride = query.batch, key.batch, query.pos, key.pos, self.stride
        return lambda i, j: (q_batch[i] == k_batch[j]) & ((q_pos[i] - k_pos[j]) % stride == 0)

    def allows(self, src, dst, query, key):
        return self.mask_rule(query, key)(dst, src)


class Lookback(Pattern):
    """Query ``t`` attends keys ``t - w .. t``: edges built by hand, and the band it is."""

    contiguous = True

    def __init__(self, w: int):
        self.w = w

    def build_edges(self, query, key):
        offsets = torch.arange(-self.w, 1, device=query.ptr.device)
        local = query.pos.unsqueeze(1) + offsets  # [N_q, w + 1], increasing
        valid = (local >= 0) & (local < key.sizes[query.batch].unsqueeze(1))
        keys = local + key.ptr[query.batch].unsqueeze(1)
        queries = torch.arange(query.num_nodes, device=query.ptr.device).unsqueeze(1).expand_as(keys)
        return torch.stack([keys[valid], queries[valid]])

    def as_band(self):
        return P.Band(self.w, 0)

    def __repr__(self):
        return f"lookback:{self.w}"


def ptr_of(lengths):
    return torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist())


def naive_mask(kind, stride_or_w, lengths, key_lengths):
    """``[N_q, N_k]`` True = may attend, position by position from the pattern's definition."""
    rows = []
    for b, (n, m) in enumerate(zip(lengths, key_lengths)):
        for t in range(n):
            row = torch.zeros(sum(key_lengths), dtype=torch.bool)
            for s in range(m):
                ok = (t - s) % stride_or_w == 0 if kind == "strided" else 0 <= t - s <= stride_or_w
                row[sum(key_lengths[:b]) + s] = ok
            rows.append(row)
    return torch.stack(rows)


#: name -> (pattern, naive mask kind, its parameter, cross-attention, backends its answers allow)
CASES = {
    "strided": (Strided(3), "strided", 3, False, ["edges"]),
    "strided_rule": (StridedRule(2), "strided", 2, False, ["edges"]),
    "cross_strided": (P.cross(Strided(2)), "strided", 2, True, ["edges"]),
    "lookback": (Lookback(2), "lookback", 2, False, ["edges", "window"]),
    "lookback_wide": (Lookback(20), "lookback", 20, False, ["edges", "window", "dense"]),  # causal on these lengths
    "cross_lookback": (P.cross(Lookback(1)), "lookback", 1, True, ["edges", "window"]),
}


def setup(name, device="cpu"):
    pattern, kind, arg, is_cross, backends = CASES[name]
    key_lengths = KEY_LENGTHS if is_cross else LENGTHS
    ptr, key_ptr = ptr_of(LENGTHS).to(device), ptr_of(key_lengths).to(device)
    mask = naive_mask(kind, arg, LENGTHS, key_lengths).to(device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(int(ptr[-1]), 16, generator=g).to(device)
    x_key = torch.randn(int(key_ptr[-1]), 16, generator=g).to(device) if is_cross else x
    return pattern, backends, (ptr, key_ptr if is_cross else None), mask, x, x_key


def every_pair(mask):
    """``(i, j)``: the query and key index of every entry of ``mask``, each shaped like it."""
    return (torch.arange(mask.size(0)).view(-1, 1).expand_as(mask),
            torch.arange(mask.size(1)).view(1, -1).expand_as(mask))


def reference(layer, x_key, x_query, mask):
    """Naive dense masked softmax from the layer's weights (True = may attend; no key: zeros)."""
    e, h = layer.embed_dim, layer.num_heads
    w_q, w_k, w_v = layer.in_proj_weight.split(e)
    b_q, b_k, b_v = layer.in_proj_bias.split(e)
    q = (x_query @ w_q.t() + b_q).view(-1, h, e // h)
    k = (x_key @ w_k.t() + b_k).view(-1, h, e // h)
    v = (x_key @ w_v.t() + b_v).view(-1, h, e // h)
    scores = torch.einsum("ihd,jhd->hij", q, k) / math.sqrt(e // h)
    weights = torch.softmax(scores.masked_fill(~mask, -math.inf), -1).nan_to_num(0.0)
    out = layer.out_proj(torch.einsum("hij,jhd->ihd", weights, v).reshape(-1, e))
    return out * mask.any(1, keepdim=True)


def outputs_and_grads(layer, x_key, x_query, run):
    """``run``'s output and the gradients of a fixed loss w.r.t. the inputs and every parameter."""
    inputs = [x_query.detach().clone().requires_grad_()]
    if x_key is not x_query:
        inputs.append(x_key.detach().clone().requires_grad_())
    layer.zero_grad()
    out = run(inputs[-1], inputs[0])
    (out * torch.linspace(-1, 1, out.numel(), device=out.device).view_as(out)).square().sum().backward()
    return out.detach(), [t.grad for t in inputs] + [p.grad.clone() for p in layer.parameters()]


@pytest.mark.parametrize("name", list(CASES))
def test_the_patterns_edges_are_their_definition(name):
    pattern, _, (ptr, key_ptr), mask, _, _ = setup(name)
    assert torch.equal(pattern.to_dense(ptr, key_ptr), mask)
    edge_index = pattern.edge_index(ptr, key_ptr)
    assert torch.equal(edge_index, mask.nonzero().flip(1).t())  # sorted by query, then key
    non_edges = (~mask).nonzero().flip(1).t()
    assert pattern.contains(edge_index, ptr, key_ptr).all() and not pattern.contains(non_edges, ptr, key_ptr).any()


@pytest.mark.parametrize("name", list(CASES))
def test_every_kernel_its_answers_allow_equals_the_naive_reference(name):
    pattern, backends, (ptr, key_ptr), mask, x, x_key = setup(name)
    torch.manual_seed(0)
    layer = GraphMultiheadAttention(16, 4)
    expected, expected_grads = outputs_and_grads(layer, x_key, x, lambda k, q: reference(layer, k, q, mask))
    allowed = {b for b in ("edges", "window", "dense") if _can(layer, b, pattern)}
    assert allowed == set(backends)  # the pattern's answers, not its class, decide
    for backend in backends + ["auto"]:
        layer.backend = backend
        out, grads = outputs_and_grads(
            layer, x_key, x, lambda k, q: layer(q if k is q else (k, q), pattern=pattern, ptr=ptr, key_ptr=key_ptr))
        torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5, msg=backend)
        for got, want in zip(grads, expected_grads):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=backend)


def _can(layer, backend, pattern):
    """Whether the layer's backend ``backend`` accepts ``pattern`` (on examples of at most 11)."""
    saved, layer.backend = layer.backend, backend
    try:
        layer.select_backend(pattern, max(LENGTHS + KEY_LENGTHS))
        return True
    except ValueError:
        return False
    finally:
        layer.backend = saved


@pytest.mark.parametrize("name", list(CASES))
def test_flex_kernel_forward_equals_the_naive_reference(name):
    # On CPU FlexAttention runs forward only (its uncompiled reference path here: the same mask_mod
    # and BlockMask as the fused kernel); with gradients on CUDA below.
    pattern, _, (ptr, key_ptr), mask, x, x_key = setup(name)
    torch.manual_seed(0)
    layer = GraphMultiheadAttention(16, 4).eval()
    e, h = layer.embed_dim, layer.num_heads
    w_q, w_k, w_v = layer.in_proj_weight.split(e)
    b_q, b_k, b_v = layer.in_proj_bias.split(e)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        q, k, v = ((t @ w.t() + b).view(-1, h, e // h) for t, w, b in ((x, w_q, b_q), (x_key, w_k, b_k),
                                                                        (x_key, w_v, b_v)))
        out, has_key = flex_attention(q, k, v, ptr, key_ptr, pattern, compiled=False, block_size=4,
                                      return_has_key=True)[::2]
        out = layer.out_proj(out.reshape(-1, e)) * has_key.unsqueeze(1)
        expected = reference(layer, x_key, x, mask)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    # The tiles it told the BlockMask: every tile with an edge visited, none taken whole unless whole.
    query, key = pattern.layouts(ptr, key_ptr)
    tiles = block_sparsity(pattern, query, key, (4, 4))
    padded = torch.zeros(-(-mask.size(0) // 4) * 4, -(-mask.size(1) // 4) * 4, dtype=torch.bool)
    padded[:mask.size(0), :mask.size(1)] = mask
    per_tile = padded.view(padded.size(0) // 4, 4, -1, 4).transpose(1, 2).flatten(2)
    assert torch.equal(tiles.touched, per_tile.any(-1)) and torch.equal(tiles.full, per_tile.all(-1))
    block_mask = pattern_block_mask(pattern, ptr, key_ptr, block_size=4)
    i, j = every_pair(mask)
    assert torch.equal(block_mask.mask_mod(0, 0, i, j), mask)


def test_the_flex_kernel_uses_a_closed_form_rule_when_the_pattern_gives_one():
    ptr = ptr_of(LENGTHS)
    query, key = StridedRule(2).layouts(ptr)
    assert Strided(2).mask_rule(query, key) is None  # no closed form: the kernel looks pairs up
    rule = StridedRule(2).mask_rule(query, key)
    mask = naive_mask("strided", 2, LENGTHS, LENGTHS)
    i, j = every_pair(mask)
    assert torch.equal(rule(i, j), mask)
    # A union with a part without a closed form has none either; with closed forms on both sides it has one.
    assert (Strided(2) | P.window(1)).mask_rule(query, key) is None
    assert (StridedRule(2) | P.window(1)).mask_rule(query, key) is not None


def test_the_custom_patterns_answers():
    assert Strided(2).as_band() is None and not Strided(2).is_causal_band and not Strided(2).is_dense
    assert Lookback(3).is_causal_band and not Lookback(3).is_dense and P.cross(Lookback(3)).is_causal_band
    assert Strided(2).graph_radius() is None and Strided(2).hop_pairs(None) is None and not Strided(2).expands
    # The statistics need nothing more: reach by breadth-first search on its edges.
    stats = Strided(2).stats(ptr_of([7]), num_layers=2)
    assert stats["max_path_length"] == math.inf and stats["keys_per_query_max"] == 4
    assert Lookback(2).stats(ptr_of([7]))["max_path_length"] == math.inf  # never looks ahead


@pytest.mark.skipif(not torch.cuda.is_available(), reason="FlexAttention's backward runs on CUDA only")
@pytest.mark.parametrize("name", list(CASES))
def test_flex_backend_on_cuda_with_gradients(name):
    pattern, _, (ptr, key_ptr), mask, x, x_key = setup(name, "cuda")
    torch.manual_seed(0)
    layer = GraphMultiheadAttention(16, 4).cuda()
    expected, expected_grads = outputs_and_grads(layer, x_key, x, lambda k, q: reference(layer, k, q, mask))
    layer.backend = "flex"
    out, grads = outputs_and_grads(
        layer, x_key, x, lambda k, q: layer(q if k is q else (k, q), pattern=pattern, ptr=ptr, key_ptr=key_ptr))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
