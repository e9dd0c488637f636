"""KVCache (nn/kv_cache.py) in the Transformer decoder: each step equals the full decode at that
position under causal and causal&window:w, the ring keeps w + 1 positions whatever the decoded length,
beam reordering, and a cache that holds no parameters."""
import pytest
import torch

from graphattn import patterns as P
from graphattn.nn import KVCache, Transformer

D, H = 16, 2
PATTERNS = ["causal", "causal&window:2"]


def make(pattern, norm_first=False, layers=2):
    torch.manual_seed(0)
    return Transformer(D, H, 1, layers, 32, dropout=0.0, norm_first=norm_first, decoder_pattern=P.parse(pattern)).eval()


def decode_incrementally(model, x, memory, ptr_src, capacity):
    """Decoder outputs of every position of ``x [M, T, d]``, one step at a time."""
    cache = model.start_decoding(memory, ptr_src, capacity)
    out = [model.decode_step(x[:, t], cache) for t in range(x.size(1))]
    return torch.stack(out, 1), cache


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("norm_first", [False, True])
def test_step_equals_decode_and_the_window_cache_is_a_ring(pattern, norm_first):
    model = make(pattern, norm_first)
    steps, lengths = 11, torch.tensor([3, 0, 5])  # an empty source too
    ptr_src = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    memory, x = torch.randn(int(lengths.sum()), D), torch.randn(3, steps, D)
    with torch.no_grad():
        full = model.decode(x.reshape(-1, D), torch.arange(4) * steps, memory, ptr_src).view(3, steps, D)
        out, cache = decode_incrementally(model, x, memory, ptr_src, steps)
    torch.testing.assert_close(out, full, atol=1e-5, rtol=1e-5)
    w = P.parse(pattern).as_band().left
    size = steps if w is None else w + 1
    assert cache.size == size and all(k.shape == (3, size, H, D // H) for k in cache.keys + cache.values)
    assert sorted(cache.positions[0].tolist()) == list(range(steps - size, steps))  # the last `size` positions
    assert cache.length.tolist() == [steps] * 3


@pytest.mark.parametrize("steps", [8, 64])
def test_window_cache_size_is_bounded_by_w_and_causal_grows(steps):
    w, model = 3, make("causal&window:3")
    causal = make("causal")
    memory, ptr_src = torch.randn(4, D), torch.tensor([0, 4])
    x = torch.randn(1, steps, D)
    with torch.no_grad():
        _, ring = decode_incrementally(model, x, memory, ptr_src, steps)
        _, full = decode_incrementally(causal, x, memory, ptr_src, steps)
    per_position = 2 * 2 * H * (D // H) * 4  # layers x (k, v) x d x float32 bytes
    assert ring.nbytes() == (w + 1) * per_position  # O(w): the same at 8 and at 64 tokens
    assert full.nbytes() == steps * per_position  # O(t)
    assert ring.memory_nbytes() == full.memory_nbytes() == 2 * 2 * 4 * D * 4  # projected once, both


def test_reorder_follows_the_hypotheses():
    model = make("causal&window:2")
    memory, ptr_src = torch.randn(6, D), torch.tensor([0, 3, 6])
    x = torch.randn(2, 5, D)
    with torch.no_grad():
        _, cache = decode_incrementally(model, x, memory, ptr_src, 5)
        keys = [k.clone() for k in cache.keys]
        cache.reorder(torch.tensor([1, 1]))
    for before, after in zip(keys, cache.keys):
        assert torch.equal(after[0], before[1]) and torch.equal(after[1], before[1])


def test_cache_holds_no_parameters_and_refuses_what_it_cannot_hold():
    model = make("causal")
    keys = list(model.state_dict())
    memory, ptr_src = torch.randn(3, D), torch.tensor([0, 3])
    with torch.no_grad():
        _, cache = decode_incrementally(model, torch.randn(1, 4, D), memory, ptr_src, 4)
        assert list(model.state_dict()) == keys and not isinstance(cache, torch.nn.Module)
        with pytest.raises(ValueError, match="the cache holds 4 positions, the sequences reach 5"):
            model.decode_step(torch.randn(1, D), cache)
    with pytest.raises(ValueError, match="causal band"):
        make("window:2").start_decoding(memory, ptr_src, 4)
    with pytest.raises(ValueError, match="holds no memory"):
        KVCache.empty(1, 1, 4, H, D // H, None, memory).attend_memory(model.decoder.layers[0].multihead_attn, 0,
                                                                      torch.randn(1, D), P.cross())
