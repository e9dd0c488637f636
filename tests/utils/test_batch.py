import math

import pytest
import torch

from graphattn import patterns
from graphattn.nn import RelativePositionBias, positional_encoding, relative_position_buckets, relative_positions
from graphattn.utils import lengths_to_ptr, local_positions, ptr_to_batch, ptr_to_lengths, to_flat, to_padded


def ragged(seed: int, B: int = 6, n: int = 7, d: int | None = 3):
    """A padded batch whose lengths include 0 and n, plus the lengths."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, n + 1, (B,), generator=g)
    lengths[0], lengths[1] = 0, n
    shape = (B, n) if d is None else (B, n, d)
    x = torch.randint(1, 100, shape, generator=g)
    return (x if d is None else x.float()), lengths


def ref_ptr(lengths):
    out = [0]
    for L in lengths.tolist():
        out.append(out[-1] + L)
    return torch.tensor(out)


@pytest.mark.parametrize("d", [None, 1, 3])
@pytest.mark.parametrize("seed", range(3))
def test_round_trip_with_lengths(d, seed):
    x, lengths = ragged(seed, d=d)
    x_flat, ptr = to_flat(x, lengths=lengths)
    expected = torch.cat([x[b, :L] for b, L in enumerate(lengths.tolist())])
    assert torch.equal(x_flat, expected)
    assert torch.equal(ptr, ref_ptr(lengths))

    back, mask = to_padded(x_flat, ptr, max_len=x.size(1), fill_value=-1)
    for b, L in enumerate(lengths.tolist()):
        assert torch.equal(back[b, :L], x[b, :L])
        assert bool((back[b, L:] == -1).all())
        assert mask[b].tolist() == [t >= L for t in range(x.size(1))]
    # A suffix key_padding_mask means the same as the lengths.
    assert torch.equal(to_flat(x, key_padding_mask=mask)[0], x_flat)


def test_to_padded_default_length_is_longest():
    x_flat, ptr = torch.arange(5.0).unsqueeze(1), torch.tensor([0, 2, 2, 5])
    out, mask = to_padded(x_flat, ptr)
    assert out.shape == (3, 3, 1)
    assert out.squeeze(-1).tolist() == [[0, 1, 0], [0, 0, 0], [2, 3, 4]]
    assert mask.tolist() == [[False, False, True], [True] * 3, [False] * 3]


@pytest.mark.parametrize("d", [None, 2])
def test_mask_anywhere_keeps_order(d):
    x, _ = ragged(5, d=d)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(x.shape[:2], generator=g) < 0.4
    mask[0] = torch.tensor([True, True, True, False, False, False, False])  # left padding
    mask[1] = True  # empty row
    x_flat, ptr = to_flat(x, key_padding_mask=mask)
    rows = [x[b][~mask[b]] for b in range(x.size(0))]
    assert torch.equal(x_flat, torch.cat(rows))
    assert torch.equal(ptr, ref_ptr(torch.tensor([len(r) for r in rows])))
    back, back_mask = to_padded(x_flat, ptr)
    for b, r in enumerate(rows):
        assert torch.equal(back[b, : len(r)], r)  # real positions now left-aligned
        assert back_mask[b].sum() == back.size(1) - len(r)


def test_no_mask_means_all_real():
    x, _ = ragged(0)
    x_flat, ptr = to_flat(x)
    assert torch.equal(x_flat, x.reshape(-1, x.size(-1)))
    assert ptr.tolist() == [7 * b for b in range(x.size(0) + 1)]


def test_ptr_helpers_against_loops():
    lengths = torch.tensor([3, 0, 2, 4])
    ptr = lengths_to_ptr(lengths)
    assert torch.equal(ptr, ref_ptr(lengths))
    assert torch.equal(ptr_to_lengths(ptr), lengths)
    batch = [b for b, L in enumerate(lengths.tolist()) for _ in range(L)]
    pos = [t for L in lengths.tolist() for t in range(L)]
    assert ptr_to_batch(ptr).tolist() == batch
    assert local_positions(ptr).tolist() == pos
    assert local_positions([0]).numel() == 0


def naive_pe(positions, d, base=10000.0):
    out = torch.zeros(len(positions), d, dtype=torch.float64)
    for r, p in enumerate(positions):
        for c in range(d):
            k2 = c - c % 2  # 2i
            angle = p / base ** (k2 / d)
            out[r, c] = math.sin(angle) if c % 2 == 0 else math.cos(angle)
    return out


@pytest.mark.parametrize("d", [1, 4, 5, 16])
@pytest.mark.parametrize("base", [10000.0, 100.0])
def test_positional_encoding_matches_formula(d, base):
    ref = naive_pe(range(12), d, base)
    assert torch.allclose(positional_encoding(12, d, base, dtype=torch.float64), ref, atol=1e-12)
    pe32 = positional_encoding(12, d, base)
    assert pe32.dtype == torch.float32 and torch.allclose(pe32.double(), ref, atol=1e-5)


def test_positional_encoding_known_values_and_flat_batch():
    pe = positional_encoding(torch.tensor([1]), 4, dtype=torch.float64)
    expected = [math.sin(1), math.cos(1), math.sin(0.01), math.cos(0.01)]
    assert torch.allclose(pe, torch.tensor([expected], dtype=torch.float64))
    ptr = torch.tensor([0, 3, 3, 8])
    flat = positional_encoding(local_positions(ptr), 6)
    table = positional_encoding(5, 6)
    assert torch.equal(flat, torch.cat([table[:3], table[:5]]))
    assert positional_encoding(0, 3).shape == (0, 3)


def _path_batch():
    return torch.tensor([0, 4, 5, 5, 11])


@pytest.mark.parametrize(
    "pattern", [patterns.dense(), patterns.window(2), patterns.causal()], ids=repr
)
def test_relative_positions_on_path_graph(pattern):
    ptr = _path_batch()
    ei = pattern.edge_index(ptr)
    pos = {}
    for b in range(ptr.numel() - 1):
        for t, node in enumerate(range(int(ptr[b]), int(ptr[b + 1]))):
            pos[node] = t
    expected = [pos[i] - pos[j] for j, i in ei.t().tolist()]
    assert relative_positions(ei, ptr).tolist() == expected


def test_relative_positions_cross():
    ptr, key_ptr = torch.tensor([0, 2, 5]), torch.tensor([0, 3, 4])
    ei = patterns.cross().edge_index(ptr, key_ptr)
    q_pos, k_pos = [0, 1, 0, 1, 2], [0, 1, 2, 0]
    expected = [q_pos[i] - k_pos[j] for j, i in ei.t().tolist()]
    assert relative_positions(ei, ptr, key_ptr).tolist() == expected


@pytest.mark.parametrize("max_distance", [1, 3, 20])
def test_buckets_clip(max_distance):
    rel = torch.arange(-10, 11)
    expected = [min(max(r, -max_distance), max_distance) + max_distance for r in rel.tolist()]
    assert relative_position_buckets(rel, max_distance).tolist() == expected


def test_relative_position_bias():
    ptr = _path_batch()
    ei = patterns.window(3).edge_index(ptr)
    module = RelativePositionBias(num_heads=2, max_distance=2)
    assert repr(module) == "RelativePositionBias(num_heads=2, max_distance=2)"
    assert torch.equal(module(ei, ptr), torch.zeros(ei.size(1), 2))  # zero init: no bias

    with torch.no_grad():
        module.embedding.weight.copy_(torch.randn(5, 2))
    buckets = relative_position_buckets(relative_positions(ei, ptr), 2)
    out = module(ei, ptr)
    assert torch.equal(out, module.embedding.weight[buckets])
    (out * torch.randn_like(out)).sum().backward()
    assert bool((module.embedding.weight.grad.abs().sum(1) > 0).all())  # every bucket is used
    module.reset_parameters()
    assert not module.embedding.weight.any()


x3 = torch.zeros(2, 4, 3)
ei_ok = torch.tensor([[0], [1]])


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: to_flat(torch.zeros(4)), ValueError, "x must be"),
        (lambda: to_flat(x3, torch.zeros(2, 4, dtype=torch.bool), torch.tensor([1, 2])), ValueError, "not both"),
        (lambda: to_flat(x3, key_padding_mask=torch.zeros(2, 4)), TypeError, "key_padding_mask"),
        (lambda: to_flat(x3, key_padding_mask=torch.zeros(2, 3, dtype=torch.bool)), ValueError, "key_padding_mask"),
        (lambda: to_flat(x3, lengths=torch.tensor([1, 5])), ValueError, r"lengths must lie in \[0, n = 4\]"),
        (lambda: to_flat(x3, lengths=torch.tensor([-1, 2])), ValueError, "lengths"),
        (lambda: to_flat(x3, lengths=torch.tensor([1.0, 2.0])), TypeError, "lengths"),
        (lambda: to_flat(x3, lengths=torch.tensor([1, 2, 3])), ValueError, "lengths"),
        (lambda: lengths_to_ptr(torch.tensor([2, -1])), ValueError, "lengths"),
        (lambda: to_padded(torch.zeros(3, 2), torch.tensor([0, 2])), ValueError, r"ptr\[-1\]"),
        (lambda: to_padded(torch.zeros(3, 2), torch.tensor([0, 3])[[1, 0]]), ValueError, "ptr"),
        (lambda: to_padded(torch.zeros(3, 2), torch.tensor([0, 3]), max_len=2), ValueError, "max_len"),
        (lambda: ptr_to_batch(torch.tensor([0.0, 2.0])), TypeError, "ptr"),
        (lambda: positional_encoding(4, 0), ValueError, "d_model"),
        (lambda: positional_encoding(4, 2.5), TypeError, "d_model"),
        (lambda: positional_encoding(-1, 4), ValueError, "length_or_positions"),
        (lambda: positional_encoding(4, 4, base=0.0), ValueError, "base"),
        (lambda: relative_positions(torch.tensor([[0], [5]]), torch.tensor([0, 2])), ValueError, "edge_index"),
        (lambda: relative_positions(ei_ok, torch.tensor([0, 1, 2])), ValueError, "different examples"),
        (lambda: relative_positions(ei_ok, torch.tensor([0, 2]), torch.tensor([0, 1, 2])), ValueError, "key_ptr"),
        (lambda: relative_positions(ei_ok.float(), torch.tensor([0, 2])), TypeError, "edge_index"),
        (lambda: relative_position_buckets(torch.tensor([0.5]), 2), TypeError, "rel"),
        (lambda: relative_position_buckets(torch.tensor([1]), 0), ValueError, "max_distance"),
        (lambda: RelativePositionBias(0, 2), ValueError, "num_heads"),
    ],
)
def test_bad_input(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_positional_encoding_follows_dtype_and_device():
    assert positional_encoding(3, 4, dtype=torch.float16).dtype == torch.float16
    # The output lives where the positions live ("meta" stands in for an accelerator).
    assert positional_encoding(torch.arange(3, device="meta"), 4).device.type == "meta"
    assert positional_encoding(3, 4, device="meta").device.type == "meta"
