"""The learned span as an edge bias equals the adaptive-span mask applied to the weights."""
import torch

from graphattn import patterns as P
from graphattn.nn import GraphMultiheadAttention, LearnedSpan


def test_bias_equals_masked_renormalised_weights():
    torch.manual_seed(0)
    span = LearnedSpan(num_heads=2, max_span=6, ramp=2)
    with torch.no_grad():
        span.span_fraction.copy_(torch.tensor([0.25, 0.8]))
    ptr = torch.tensor([0, 12, 17])
    ei = span.pattern.edge_index(ptr)
    bias = span(ei, ptr)
    layer = GraphMultiheadAttention(8, 2).eval()
    x = torch.randn(17, 8)
    _, (_, alpha) = layer(x, pattern=span.pattern, ptr=ptr, attn_bias=bias, return_attention_weights=True)
    _, (_, plain) = layer(x, pattern=span.pattern, ptr=ptr, return_attention_weights=True)
    # Sukhbaatar et al.: multiply the softmax weights by the mask m(x), renormalise.
    pos = torch.cat([torch.arange(12), torch.arange(5)])
    dist = (pos[ei[1]] - pos[ei[0]]).abs().float()
    z = torch.tensor([0.25, 0.8]) * 6
    mask = ((2 + z - dist.unsqueeze(1)) / 2).clamp(0, 1).clamp(min=1e-4)
    weighted = plain * mask
    expected = weighted / torch.zeros(17, 2).index_add_(0, ei[1], weighted)[ei[1]]
    torch.testing.assert_close(alpha, expected, atol=1e-5, rtol=1e-5)


def test_span_learns_from_gradient_and_runs_on_window_backend():
    span = LearnedSpan(num_heads=3, max_span=8)
    layer = GraphMultiheadAttention(12, 3)
    assert layer.select_backend(span.pattern, 100)[0] == "window"
    ptr = torch.tensor([0, 40])
    ei = span.pattern.edge_index(ptr)
    out = layer(torch.randn(40, 12), pattern=span.pattern, ptr=ptr, attn_bias=span(ei, ptr))
    (out.square().sum() + span.penalty()).backward()
    assert span.span_fraction.grad.abs().sum() > 0
    assert torch.equal(span.spans(), torch.full((3,), 4.0))
    assert repr(span) == "LearnedSpan(num_heads=3, max_span=8, ramp=8)"
