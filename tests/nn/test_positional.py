"""Positional information on path graphs: sinusoidal encodings and relative-position biases."""
import math

import pytest
import torch

from graphattn import patterns
from graphattn.nn import RelativePositionBias, positional_encoding, relative_position_buckets, relative_positions
from graphattn.utils import local_positions

ei_ok = torch.tensor([[0], [1]])


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


@pytest.mark.parametrize(
    "call, error, match",
    [
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
