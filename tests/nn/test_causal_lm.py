"""CausalLM (nn/causal_lm.py): against torch's encoder with a causal or band mask, cached against
uncached generation, the rolling cache against the full one, sampling, and learning."""
import math

import pytest
import torch
from torch import nn

from graphattn import patterns as P
from graphattn.nn import CausalLM, positional_encoding
from graphattn.utils import lengths_to_ptr

V = 23


def make(pattern="causal", positional="sinusoidal", norm_first=True, **kwargs):
    torch.manual_seed(0)
    model = CausalLM(V, d_model=16, num_heads=2, num_layers=2, dim_feedforward=32, dropout=0.0, pattern=pattern,
                     positional=positional, max_distance=4, norm_first=norm_first, **kwargs).eval()
    if model.rel_bias is not None:  # a zero bias (its initial value) would test nothing
        nn.init.normal_(model.rel_bias.embedding.weight)
    return model


def reference_logits(model: CausalLM, tokens: torch.Tensor) -> torch.Tensor:
    """One sequence through torch.nn.TransformerEncoder with the model's weights and a dense mask
    (-inf where the pattern forbids, the relative bias per head where it allows)."""
    length, heads = tokens.numel(), model.num_heads
    layer = nn.TransformerEncoderLayer(model.d_model, heads, model.layers[0].linear1.out_features, 0.0,
                                       activation="gelu", batch_first=True, norm_first=model.norm_first)
    # Training mode (dropout is 0) keeps torch off its fused inference path, which turns a
    # 3-D float mask with -inf into NaN.
    encoder = nn.TransformerEncoder(layer, model.num_layers, enable_nested_tensor=False).train()
    for mine, theirs in zip(model.layers, encoder.layers):
        theirs.load_state_dict(mine.state_dict())
    pos = torch.arange(length)
    rel = pos.view(-1, 1) - pos.view(1, -1)  # query i - key j
    allowed = (rel >= 0) & (rel <= (model.window if model.window is not None else length))
    mask = torch.zeros(heads, length, length).masked_fill(~allowed, -math.inf)
    x = model.embed(tokens) * math.sqrt(model.d_model)
    if model.rel_bias is None:
        x = x + positional_encoding(length, model.d_model)
    else:
        m = model.rel_bias.max_distance
        mask = mask + model.rel_bias.embedding.weight[rel.clamp(-m, m) + m].permute(2, 0, 1)
    out = encoder(x.unsqueeze(0), mask=mask)[0]
    if model.norm is not None:
        out = model.norm(out)
    return out @ model.embed.weight.T


CONFIGS = [(p, pos, nf) for p in ("causal", "causal&window:3") for pos in ("sinusoidal", "relative")
           for nf in (True, False)]


@pytest.mark.parametrize("pattern, positional, norm_first", CONFIGS)
def test_forward_equals_torch_encoder_with_mask(pattern, positional, norm_first):
    model = make(pattern, positional, norm_first)
    lengths = torch.tensor([7, 1, 11])
    tokens = torch.randint(0, V, (int(lengths.sum()),))
    ptr = lengths_to_ptr(lengths)
    with torch.no_grad():
        out = model(tokens, ptr)
        for b in range(3):
            seq = tokens[ptr[b]:ptr[b + 1]]
            torch.testing.assert_close(out[ptr[b]:ptr[b + 1]], reference_logits(model, seq), atol=1e-5, rtol=1e-5)


def test_padded_forward_equals_flat():
    model = make("causal&window:2", "relative")
    tokens = torch.randint(0, V, (2, 6))
    pad = torch.tensor([[False] * 6, [False] * 4 + [True] * 2])
    with torch.no_grad():
        padded = model(tokens, key_padding_mask=pad)
        flat = model(tokens[~pad], torch.tensor([0, 6, 10]))
    torch.testing.assert_close(padded[~pad], flat)
    assert bool((padded[pad] == 0).all())
    torch.testing.assert_close(model(tokens), model(tokens.flatten(), torch.tensor([0, 6, 12])).view(2, 6, V))


@pytest.mark.parametrize("pattern, positional, norm_first", CONFIGS)
def test_decode_step_equals_forward(pattern, positional, norm_first):
    model = make(pattern, positional, norm_first)
    seq = torch.randint(0, V, (20,))
    with torch.no_grad():
        full = model(seq)
        cache = model.init_cache(1, 20)
        logits = [model.prefill(seq[:5], torch.tensor([0, 5]), cache)[0]]
        logits += [model.decode_step(seq[t:t + 1], cache)[0] for t in range(5, 19)]
    torch.testing.assert_close(torch.stack(logits), full[4:19], atol=1e-5, rtol=1e-5)
    assert cache.size == (20 if pattern == "causal" else 4)  # window 3: the ring keeps 4 positions


@pytest.mark.parametrize("pattern, positional, norm_first", CONFIGS)
def test_greedy_cached_equals_uncached_and_rolling_equals_full(pattern, positional, norm_first):
    model = make(pattern, positional, norm_first)
    prompts = [torch.randint(0, V, (n,)) for n in (3, 9, 1)]  # ragged
    cached = model.generate(prompts, 12, temperature=0)
    uncached = model.generate(prompts, 12, temperature=0, use_cache=False)
    full = model.generate(prompts, 12, temperature=0, rolling_cache=False)
    for a, b, c, p in zip(cached, uncached, full, prompts):
        assert len(a) == len(p) + 12 and torch.equal(a[:len(p)], p)
        assert torch.equal(a, b) and torch.equal(a, c)


def test_rolling_cache_keeps_the_window_only():
    model = make("causal&window:3")
    rolling, full = model.init_cache(2, 4096), model.init_cache(2, 4096, rolling=False)
    assert rolling.size == 4 and full.size == 4096
    assert full.nbytes() == 1024 * rolling.nbytes() == 2 * 2 * 2 * 4096 * 16 * 4  # layers x (k, v) x batch x t x d
    seq = torch.randint(0, V, (2, 30))
    with torch.no_grad():
        model.prefill(seq[:, :10].flatten(), torch.tensor([0, 10, 20]), rolling)
        for t in range(10, 30):
            model.decode_step(seq[:, t], rolling)
    assert rolling.keys[0].shape == (2, 4, 2, 8)
    assert sorted(rolling.positions[0].tolist()) == [26, 27, 28, 29]  # the last w + 1 positions
    assert model.init_cache(1, 2).size == 2  # never more than the capacity
    assert make("causal").init_cache(1, 50).size == 50  # causal: rolling has no meaning
    # A cache too small for what the pattern reaches refuses, rather than forget keys.
    small = model.init_cache(1, 3)
    with pytest.raises(ValueError, match="the cache holds 3 positions, the sequences reach 4"):
        model.prefill(seq[0, :4], torch.tensor([0, 4]), small)
    model.prefill(seq[0, :3], torch.tensor([0, 3]), small)
    with pytest.raises(ValueError, match="give the cache a larger capacity"):
        model.decode_step(seq[0, 3:4], small)


def test_sampling_is_seeded_locally_and_follows_top_k_top_p():
    model = make()
    prompt = torch.randint(0, V, (2, 4))
    state = torch.random.get_rng_state()
    a = model.generate(prompt, 10, temperature=1.0, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is untouched
    assert torch.equal(a, model.generate(prompt, 10, temperature=1.0, seed=3))
    assert not torch.equal(a, model.generate(prompt, 10, temperature=1.0, seed=4))
    greedy = model.generate(prompt, 10, temperature=0)
    assert torch.equal(model.generate(prompt, 10, top_k=1, seed=0), greedy)
    assert torch.equal(model.generate(prompt, 10, top_p=1e-6, seed=0), greedy)
    # Every sampled token is among the top 3 of the model's own distribution at that point.
    out = model.generate(prompt, 12, temperature=2.0, top_k=3, seed=1)
    with torch.no_grad():
        logits = model(out)  # [2, 16, V]
    top3 = logits[:, 3:-1].topk(3, dim=-1).indices
    assert bool((top3 == out[:, 4:, None]).any(-1).all())


def test_eos_stops_a_sequence():
    model = make()
    prompt = torch.randint(0, V, (2, 3))
    first = model.generate(prompt, 1, temperature=0)[:, -1]
    out = model.generate(prompt, 8, temperature=0, eos_id=int(first[0]))
    assert int(out[0, 3]) == int(first[0]) and bool((out[0, 4:] == int(first[0])).all())  # padded with eos
    ragged = model.generate([prompt[0]], 8, temperature=0, eos_id=int(first[0]))
    assert len(ragged[0]) == 4


def test_a_tiny_model_learns_a_deterministic_sequence():
    # A period of 10 in which 1 and 2 recur: the next token is fixed by the last two, not by one.
    # Trained on 24 tokens; a window with relative positions has no absolute position to trip
    # over, so it continues past them.
    torch.manual_seed(0)
    period = torch.tensor([1, 2, 3, 1, 4, 5, 1, 6, 2, 7])
    data = period[(torch.randint(0, 10, (32, 1)) + torch.arange(24)) % 10]
    model = CausalLM(8, d_model=32, num_heads=2, num_layers=2, dim_feedforward=64, dropout=0.0,
                     pattern="causal&window:4", positional="relative", max_distance=4)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    for _ in range(150):
        loss = nn.functional.cross_entropy(model(data[:, :-1]).reshape(-1, 8), data[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    prompts = period[(torch.arange(10)[:, None] + torch.arange(2)) % 10]  # from every phase
    expected = period[(torch.arange(10)[:, None] + torch.arange(40)) % 10]
    assert torch.equal(model.generate(prompts, 38, temperature=0), expected)


def test_bad_input_and_repr():
    with pytest.raises(ValueError, match="causal band"):
        CausalLM(V, 16, 2, pattern="window:3")
    with pytest.raises(ValueError, match="positional must be one of"):
        CausalLM(V, 16, 2, positional="rotary")
    model = make("causal&window:3", "relative")
    assert repr(model) == ("CausalLM(23, d_model=16, num_heads=2, num_layers=2, pattern=causal&window:3, "
                           "positional='relative')")
    assert model.lm_head.weight is model.embed.weight
    with pytest.raises(ValueError, match=r"tokens must be ids in \[0, 23\)"):
        model(torch.tensor([0, 23]))
    with pytest.raises(TypeError, match="LongTensor"):
        model(torch.zeros(3))
    with pytest.raises(ValueError, match="prompt must be token ids"):
        model.generate(torch.zeros(2, 0, dtype=torch.long), 3)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        model.generate(torch.tensor([1]), 3, top_p=0.0)
    with pytest.raises(ValueError, match="eos_id"):
        model.generate(torch.tensor([1]), 3, eos_id=99)
    with pytest.raises(ValueError, match="non-empty prompt per cached sequence"):
        model.prefill(torch.tensor([1, 2]), torch.tensor([0, 2]), model.init_cache(2, 4))


@pytest.mark.parametrize("prompt, kwargs, exc, match", [
    (torch.tensor([1, 2]), {"seed": "a"}, TypeError, "seed must be an int"),
    (torch.tensor([1, 2]), {"seed": 2 ** 70}, ValueError, "seed must be an int <="),
    (torch.tensor([1, 23]), {}, ValueError, r"prompt holds token ids outside \[0, 23\)"),
    ([[-1]], {}, ValueError, r"outside \[0, 23\)"),
    ([[1.5]], {}, TypeError, r"prompt\[0\] must be a LongTensor"),
    ([torch.tensor([1.0])], {}, TypeError, r"prompt\[0\] must hold integer token ids"),
    ("abc", {}, TypeError, "prompt must be a LongTensor"),
])
def test_generate_refuses_bad_prompts_and_seeds(prompt, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        make("causal", "sinusoidal").generate(prompt, 3, **kwargs)


def test_generate_takes_any_64_bit_seed():
    model = make("causal", "sinusoidal").eval()
    for seed in (-5, 2 ** 64 - 1):
        assert torch.equal(model.generate(torch.tensor([1]), 4, seed=seed), model.generate(torch.tensor([1]), 4, seed=seed))
