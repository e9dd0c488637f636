"""flex_attention, its BlockMask and the patterns' rules, against masks and a naive dense softmax.

FlexAttention's uncompiled path (``compiled=False``) evaluates the same ``mask_mod`` and
``score_mod`` over the whole score matrix, so it checks the pattern's translation on every
pattern; the tiles of the BlockMask, which only the compiled kernel reads, are checked against the
dense mask directly, and one compiled call (through the layer) checks the two together.
"""
import warnings

import pytest
import torch

import graphattn.nn.attention as attention_module
from graphattn import GraphMultiheadAttention
from graphattn import patterns as P
from graphattn.ops import EdgeTable, block_sparsity, flex_attention, pattern_block_mask
from graphattn.ops.flex import mask_rule
from graphattn.utils.batch import ptr_to_batch

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


# Ragged, with empty examples, a one-node example and one longer than a 16-wide tile row.
PTR = torch.tensor([0, 6, 7, 7, 40, 43, 43, 90])
KEY_PTR = torch.tensor([0, 9, 0 + 9, 12, 30, 43, 45, 60])  # cross-attention: example 1 has queries, no keys
GRAPH_PTR = torch.tensor([0, 5, 5, 17, 30])


def random_graph(ptr, num_edges=60, seed=0):
    """Random directed edges inside the examples of ``ptr`` (global numbering, duplicates allowed)."""
    g = torch.Generator().manual_seed(seed)
    batch = ptr_to_batch(ptr)
    src = torch.randint(0, int(ptr[-1]), (4 * num_edges,), generator=g)
    dst = torch.randint(0, int(ptr[-1]), (4 * num_edges,), generator=g)
    keep = batch[src] == batch[dst]
    return torch.stack([src[keep], dst[keep]])[:, :num_edges]


SEQUENCE = {
    "dense": P.dense(), "causal": P.causal(), "window": P.window(3), "causal_window": P.causal() & P.window(5),
    "band": P.Band(2, 7), "block": P.block(8), "dilated": P.dilated(2, 3), "global": P.global_tokens([0, 2]),
    "random": P.random(3, seed=1), "bigbird": P.bigbird(2, 1, 2, seed=0),
    "window&dilated": P.window(6) & P.dilated(3, 2), "block|random": P.block(4) | P.random(2, seed=3),
    "block&causal": P.block(5) & P.causal(), "global|dilated": P.global_tokens([1]) | P.dilated(1, 4),
}
CROSS = {"cross": P.cross(), "cross_window": P.cross(P.window(2)), "cross_causal": P.cross(P.causal()),
         "cross_bigbird": P.cross(P.bigbird(1, 1, 1, seed=0))}
GRAPH = {"graph": P.graph(), "khop": P.khop(2), "expander": P.parse("expander:4:0"),
         "graph|window": P.graph() | P.window(1), "virtual": P.parse("virtual:1")}
#: patterns whose tiles are exact (closed forms, or edges counted), not only safe
EXACT = {"dense", "causal", "window", "causal_window", "band", "block", "global", "block&causal", "cross",
         "cross_window", "cross_causal", "random", "dilated", "graph", "khop", "expander", "virtual"}


def case(name):
    """``(pattern, ptr, key_ptr or None, graph or None)`` of a named case."""
    if name in SEQUENCE:
        return SEQUENCE[name], PTR, None, None
    if name in CROSS:
        return CROSS[name], PTR, KEY_PTR, None
    return GRAPH[name], GRAPH_PTR, None, random_graph(GRAPH_PTR)


ALL = list(SEQUENCE) + list(CROSS) + list(GRAPH)


def reference(q, k, v, mask, bias=None, scale=None):
    """Masked softmax per head in float64 (True = may attend); rows without keys give zeros."""
    q, k, v = q.double(), k.double(), v.double()
    scores = torch.einsum("ihd,jhd->hij", q, k) * (q.size(-1) ** -0.5 if scale is None else scale)
    if bias is not None:
        scores = scores + bias.double()
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1).nan_to_num()
    return torch.einsum("hij,jhd->ihd", weights, v), weights


def dense_bias(bias, edge_index, num_q, num_k):
    """``[E, H]`` on edges as ``[H, N_q, N_k]`` (zero elsewhere)."""
    full = torch.zeros(bias.size(1), num_q, num_k, dtype=bias.dtype)
    full[:, edge_index[1], edge_index[0]] = bias.t()
    return full


def qkv(num_q, num_k, heads=2, dim=8, dim_v=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(num_q, heads, dim, generator=g), torch.randn(num_k, heads, dim, generator=g),
            torch.randn(num_k, heads, dim_v, generator=g))


@pytest.fixture(autouse=True)
def quiet_reference():
    # The uncompiled path warns that it materialises the scores: that is what these tests want.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        yield


# --- the rules and the tiles ---------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_mask_rule_is_the_dense_mask(name):
    pattern, ptr, key_ptr, graph = case(name)
    query, key = pattern.layouts(ptr, key_ptr, graph)
    i = torch.arange(query.num_nodes).view(-1, 1)
    j = torch.arange(key.num_nodes).view(1, -1)
    rule = mask_rule(pattern, query, key)(i.expand(-1, key.num_nodes), j.expand(query.num_nodes, -1))
    assert torch.equal(rule, pattern.to_dense(ptr, key_ptr, graph))
    # A pattern's own rule is a closed form (no edge lookup) or None, never a wrong one.
    own = pattern.mask_rule(query, key)
    assert own is None or torch.equal(own(i.expand(-1, key.num_nodes), j.expand(query.num_nodes, -1)), rule)


def test_band_rule_on_one_example_reads_no_table():
    # One example: the band's rule is arithmetic on the indices alone, like a hand-written mask_mod.
    query, key = P.window(2).layouts(torch.tensor([0, 10]))
    rule = P.window(2).mask_rule(query, key)
    i, j = torch.tensor([5, 5, 5, 0]), torch.tensor([3, 7, 8, 9])
    assert rule(i, j).tolist() == [True, True, False, False]


def tiles_of(mask, block_q, block_k):
    """``(any, all)`` of each ``[block_q, block_k]`` tile of a dense mask (padding counts as missing)."""
    nqb, nkb = -(-mask.size(0) // block_q), -(-mask.size(1) // block_k)
    padded = torch.zeros(nqb * block_q, nkb * block_k, dtype=torch.bool)
    padded[:mask.size(0), :mask.size(1)] = mask
    tiles = padded.view(nqb, block_q, nkb, block_k).transpose(1, 2).flatten(2)
    return tiles.any(-1), tiles.all(-1)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("block_size", [(16, 16), (8, 4)])
def test_block_sparsity_covers_the_mask(name, block_size):
    pattern, ptr, key_ptr, graph = case(name)
    query, key = pattern.layouts(ptr, key_ptr, graph)
    tiles = block_sparsity(pattern, query, key, block_size)
    touched, full = tiles_of(pattern.to_dense(ptr, key_ptr, graph), *block_size)
    assert torch.equal(tiles.touched | touched, tiles.touched)  # no tile with an edge is skipped
    assert torch.equal(tiles.full & full, tiles.full)  # no tile is taken whole unless it is whole
    if name in EXACT:  # closed forms and edge counts are exact, not only safe
        assert torch.equal(tiles.touched, touched) and torch.equal(tiles.full, full)


def expand(block_mask, rule_mask):
    """The pairs a BlockMask lets the kernel attend: whole full tiles, and the rule in partial ones."""
    block_q, block_k = block_mask.BLOCK_SIZE
    num_q, num_k = block_mask.seq_lengths
    allowed = torch.zeros(num_q, num_k, dtype=torch.bool)
    tiles = [(block_mask.kv_num_blocks, block_mask.kv_indices, False),
             (block_mask.full_kv_num_blocks, block_mask.full_kv_indices, True)]
    for counts, indices, whole in tiles:
        for qb in range(counts.size(-1)):
            for kb in indices[0, 0, qb, :int(counts[0, 0, qb])].tolist():
                rows, cols = slice(qb * block_q, (qb + 1) * block_q), slice(kb * block_k, (kb + 1) * block_k)
                allowed[rows, cols] = True if whole else rule_mask[rows, cols]
    return allowed


@pytest.mark.parametrize("name", ["bigbird", "causal", "cross_window", "khop", "global|dilated"])
def test_block_mask_attends_exactly_the_pattern(name):
    pattern, ptr, key_ptr, graph = case(name)
    block_mask = pattern_block_mask(pattern, ptr, key_ptr, graph, block_size=8)
    mask = pattern.to_dense(ptr, key_ptr, graph)
    assert block_mask.shape == (1, 1, *mask.shape)
    assert torch.equal(expand(block_mask, mask), mask)
    # The BlockMask's own mask_mod is the pattern's rule.
    i = torch.arange(mask.size(0)).view(-1, 1).expand_as(mask)
    j = torch.arange(mask.size(1)).view(1, -1).expand_as(mask)
    assert torch.equal(block_mask.mask_mod(0, 0, i, j), mask)


@pytest.mark.parametrize("name", ["bigbird", "khop"])
def test_edge_table_finds_every_edge_and_nothing_else(name):
    pattern, ptr, key_ptr, graph = case(name)
    edge_index = pattern.edge_index(ptr, key_ptr, graph)
    table = EdgeTable.of(edge_index)
    found, position = table.find(edge_index[1], edge_index[0])
    assert found.all() and torch.equal(position, torch.arange(edge_index.size(1)))
    assert table.keys.numel() == 2 ** int(table.bits) + table.probes >= 2 * edge_index.size(1)
    assert table.probes & (table.probes - 1) == 0  # a power of 2: few distinct compiled kernels
    i, j = (~pattern.to_dense(ptr, key_ptr, graph)).nonzero().t()
    assert not table.rule(i, j).any()
    empty = EdgeTable.of(torch.zeros(2, 0, dtype=torch.long))
    assert not empty.rule(torch.tensor([0, 2]), torch.tensor([1, 0])).any()


# --- the kernel, uncompiled ------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_forward_matches_the_dense_reference(name):
    pattern, ptr, key_ptr, graph = case(name)
    mask = pattern.to_dense(ptr, key_ptr, graph)
    q, k, v = qkv(*mask.shape, dim_v=5)
    out, weights = flex_attention(q, k, v, ptr, key_ptr, pattern, graph=graph, compiled=False, block_size=16)
    assert weights is None and out.shape == (mask.size(0), 2, 5)
    torch.testing.assert_close(out.double(), reference(q, k, v, mask)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["window", "bigbird", "cross_causal", "graph"])
def test_bias_becomes_a_score_mod_and_weights_come_back(name):
    # Contiguous runs (window) find a pair's row by offset, the others by binary search.
    pattern, ptr, key_ptr, graph = case(name)
    edge_index = pattern.edge_index(ptr, key_ptr, graph)
    mask = pattern.to_dense(ptr, key_ptr, graph)
    q, k, v = qkv(*mask.shape, seed=1)
    bias = torch.randn(edge_index.size(1), 2, generator=torch.Generator().manual_seed(2))
    out, weights, has_key = flex_attention(q, k, v, ptr, key_ptr, pattern, graph=graph, scale=0.3, bias=bias,
                                           edge_index=edge_index, need_weights=True, compiled=False,
                                           return_has_key=True)
    ref_out, ref_weights = reference(q, k, v, mask, dense_bias(bias, edge_index, *mask.shape), scale=0.3)
    torch.testing.assert_close(out.double(), ref_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(weights.double(), ref_weights[:, edge_index[1], edge_index[0]].t(),
                               rtol=1e-5, atol=1e-6)
    assert torch.equal(has_key, mask.any(1))
    assert not torch.allclose(reference(q, k, v, mask, scale=0.3)[0], ref_out, atol=1e-3)  # the bias counts


def test_queries_without_keys_output_zero():
    pattern = P.cross(P.window(1))
    ptr, key_ptr = torch.tensor([0, 3, 8]), torch.tensor([0, 0, 2])  # example 0: no keys; example 1: t >= 3 none
    q, k, v = qkv(8, 2)
    out, _, has_key = flex_attention(q, k, v, ptr, key_ptr, pattern, compiled=False, return_has_key=True)
    assert has_key.tolist() == [False] * 3 + [True] * 3 + [False] * 2
    assert torch.equal(out[~has_key], torch.zeros_like(out[~has_key]))
    empty, _ = flex_attention(q[:0], k[:0], v[:0], torch.tensor([0, 0]), None, P.dense(), compiled=False)
    assert empty.shape == (0, 2, 8)


def test_bad_input_and_cpu_backward_are_refused_clearly():
    q, k, v = qkv(7, 7)
    ptr = torch.tensor([0, 7])
    with pytest.raises(ValueError, match="bias and need_weights need edge_index"):
        flex_attention(q, k, v, ptr, None, P.dense(), bias=torch.zeros(49, 2), compiled=False)
    with pytest.raises(ValueError, match=r"bias must have shape \[E, H\] = \[49, 2\]"):
        flex_attention(q, k, v, ptr, None, P.dense(), bias=torch.zeros(48, 2), edge_index=P.dense().edge_index(ptr))
    with pytest.raises(ValueError, match="disagree"):
        flex_attention(q, k[:, :1], v, ptr, None, P.dense())
    with pytest.raises(TypeError, match="query must be a floating point Tensor"):
        flex_attention(q.long(), k, v, ptr, None, P.dense())
    with pytest.raises(NotImplementedError, match="no backward on CPU.*backend 'edges', 'window' or 'dense'"):
        flex_attention(q.requires_grad_(), k, v, ptr, None, P.dense())


# --- the layer -----------------------------------------------------------------------------------


def test_select_backend_takes_flex_on_cuda_only(monkeypatch):
    layer = GraphMultiheadAttention(16, 2)
    assert layer.select_backend(P.bigbird(3, 1, 1, seed=0), 100)[0] == "edges"  # CPU: never by itself
    monkeypatch.setattr(attention_module, "flex_available", lambda device: True)
    assert layer.select_backend(P.bigbird(3, 1, 1, seed=0), 100, device="cuda") == ("flex", "")
    assert layer.select_backend(P.window(8), 100, device="cuda") == ("flex", "")
    assert layer.select_backend(P.causal(), 100, device="cuda") == ("dense", "")
    backend, why = layer.select_backend(P.graph(), 100, device="cuda")
    assert backend == "edges" and "graph pattern" in why
    relu = GraphMultiheadAttention(16, 2, normalization="relu")
    backend, why = relu.select_backend(P.window(8), 100, device="cuda")
    assert backend == "edges" and "normalization='relu'" in why
    dropout = GraphMultiheadAttention(16, 2, dropout=0.1)
    assert dropout.select_backend(P.window(8), 100, device="cuda") == (
        "window", "FlexAttention has no dropout on the weights (dropout=0.1 in training)")
    assert dropout.eval().select_backend(P.window(8), 100, device="cuda")[0] == "flex"


def test_forced_flex_states_what_it_cannot_do():
    with pytest.raises(ValueError, match="backend 'flex' cannot compute window:2: normalization='sigmoid'"):
        GraphMultiheadAttention(16, 2, normalization="sigmoid", backend="flex").select_backend(P.window(2))
    with pytest.raises(ValueError, match="no dropout on the weights"):
        GraphMultiheadAttention(16, 2, dropout=0.5, backend="flex").select_backend(P.window(2))
    layer = GraphMultiheadAttention(16, 2, backend="flex")
    with pytest.raises(NotImplementedError, match="no backward on CPU"):
        layer(torch.randn(5, 16), pattern=P.window(1))


def test_layer_on_flex_compiled_equals_edges_backend():
    # The one compiled FlexAttention of the suite (~10 s on 2 cores): partial and full tiles, the
    # rule and an edge-feature score_mod through the fused CPU kernel, as the layer calls it.
    torch.manual_seed(0)
    ptr = torch.tensor([0, 6, 7, 7, 150, 153, 553])  # the last example fills whole 128 x 128 tiles
    pattern = P.Band(300, 10)
    query, key = pattern.layouts(ptr)
    assert block_sparsity(pattern, query, key).full.any()
    edges = GraphMultiheadAttention(32, 2, edge_dim=3, backend="edges").eval()
    flex = GraphMultiheadAttention(32, 2, edge_dim=3, backend="flex").eval()
    flex.load_state_dict(edges.state_dict())
    assert repr(flex) == "GraphMultiheadAttention(32, num_heads=2, edge_dim=3, backend='flex')"
    x = torch.randn(553, 32)
    edge_attr = torch.randn(pattern.edge_index(ptr).size(1), 3)
    with torch.no_grad():
        expected, (pairs, alpha) = edges(x, edge_attr=edge_attr, pattern=pattern, ptr=ptr,
                                         return_attention_weights=True)
        out, (flex_pairs, flex_alpha) = flex(x, edge_attr=edge_attr, pattern=pattern, ptr=ptr,
                                             return_attention_weights=True)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(flex_pairs, pairs)
    torch.testing.assert_close(flex_alpha, alpha, rtol=1e-5, atol=1e-6)


def test_tiles_that_do_not_fit_are_retried_smaller():
    from graphattn.ops.flex import SMALL_TILES, _fitting

    calls = []

    def attend(*args, **kwargs):  # inductor's refusal on the first call, as an H200 gave it for BigBird in fp32
        calls.append(kwargs.get("kernel_options"))
        if len(calls) == 1:
            raise RuntimeError("No valid triton configs. OutOfMemoryError: out of resource: "
                               "triton_tem_fused_flex_attention_0 Required: 307712 Hardware limit:232448")
        return "out"

    assert _fitting(attend)(1, scale=0.5) == "out"
    assert calls == [None, SMALL_TILES]

    def broken(*args, **kwargs):
        raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match="something else"):  # any other error is the caller's
        _fitting(broken)(1)
