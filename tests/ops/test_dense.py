"""dense_attention's ragged paths, padded and nested (varlen), against a per-example SDPA loop.

The fused variable-length kernels are CUDA's (tests/test_cuda.py); here the nested path runs on
torch's unfused nested-tensor SDPA, which checks how the batch becomes jagged tensors (offsets,
empty examples) and comes back.
"""
import warnings

import pytest
import torch
import torch.nn.functional as F

from graphattn.ops import dense_attention

PTR = torch.tensor([0, 6, 7, 7, 16, 19, 30])  # ragged, with an empty example
KEY_PTR = torch.tensor([0, 3, 9, 9, 12, 20, 25])  # cross-attention: as many examples, other lengths


def per_example(q, k, v, ptr, key_ptr, causal=False):
    """SDPA on each example alone, concatenated: the definition of a ragged batch."""
    outs = []
    for (a, b), (c, d) in zip(zip(ptr[:-1].tolist(), ptr[1:].tolist()), zip(key_ptr[:-1].tolist(), key_ptr[1:].tolist())):
        if b == a:
            continue
        x = [t.transpose(0, 1) for t in (q[a:b], k[c:d], v[c:d])]  # (H, n, D)
        outs.append(F.scaled_dot_product_attention(*x, is_causal=causal).transpose(0, 1))
    return torch.cat(outs)


@pytest.fixture(autouse=True)
def quiet_nested():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*nested tensors.*")  # "prototype stage" notices
        yield


@pytest.mark.parametrize("key_ptr", [None, KEY_PTR], ids=["self", "cross"])
@pytest.mark.parametrize("varlen", [True, False])
def test_nested_and_padded_paths_match_per_example_attention(key_ptr, varlen):
    key_ptr = PTR if key_ptr is None else key_ptr
    g = torch.Generator().manual_seed(0)
    q = torch.randn(30, 2, 8, generator=g, requires_grad=True)
    k, v = (torch.randn(int(key_ptr[-1]), 2, 8, generator=g, requires_grad=True) for _ in range(2))
    out, weights = dense_attention(q, k, v, PTR, key_ptr, varlen=varlen)
    expected = per_example(q, k, v, PTR, key_ptr)
    assert weights is None
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    for grad, ref in zip(grads, torch.autograd.grad(expected.square().sum(), (q, k, v))):
        torch.testing.assert_close(grad, ref, rtol=1e-5, atol=1e-5)


def test_causal_matches_per_example_attention():
    q, k, v = (torch.randn(30, 2, 8, generator=torch.Generator().manual_seed(s)) for s in range(3))
    out, _ = dense_attention(q, k, v, PTR, PTR, causal=True)  # CPU: padded, automatically
    torch.testing.assert_close(out, per_example(q, k, v, PTR, PTR, causal=True), rtol=1e-5, atol=1e-6)


def test_varlen_refuses_what_it_cannot_do():
    q, k, v = (torch.randn(30, 2, 8) for _ in range(3))
    with pytest.raises(ValueError, match="causal=True needs a fused CUDA kernel"):
        dense_attention(q, k, v, PTR, PTR, causal=True, varlen=True)
    with pytest.raises(ValueError, match="every example to have queries and keys, or neither"):
        dense_attention(q, k[:25], v[:25], PTR, torch.tensor([0, 3, 9, 10, 12, 20, 25]), varlen=True)
    with pytest.raises(ValueError, match="cannot add a bias or return weights"):
        dense_attention(q, k, v, PTR, PTR, need_weights=True, edge_index=torch.zeros(2, 0, dtype=torch.long),
                        varlen=True)
