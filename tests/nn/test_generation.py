"""The generation loops (nn/generation.py) on a toy Markov chain: greedy and seeded sampling against a
hand-written loop over torch.multinomial, EOS and padding, nucleus/temperature sampling against the
distribution, and Redecode's prefixes against Python lists. (Beam search is checked against brute
force in tests/text/test_decoding.py; the models' cached-vs-uncached runs in their own tests.)"""
import pytest
import torch

from graphattn.nn.generation import Redecode, sample, sample_next, sampler, trim_at_eos
from graphattn.utils import lengths_to_ptr

V = 5


def chain(seed=0):
    """A Markov chain: the next token's logits depend on the last token only."""
    logits = torch.randn(V, V, generator=torch.Generator().manual_seed(seed))
    return logits, (lambda tokens: logits[tokens])


def test_greedy_and_seeded_sampling_equal_a_hand_written_loop():
    logits, step = chain()
    start = torch.tensor([0, 3, 4])
    tokens, scores = sample(step, logits[start], 6, sampler(0.0))
    expected, last, total = [], start, torch.zeros(3)
    for _ in range(6):
        row = logits[last]
        last = row.argmax(-1)
        total += row[torch.arange(3), last]
        expected.append(last)
    assert torch.equal(tokens, torch.stack(expected, 1))
    torch.testing.assert_close(scores, total)
    # Sampling with a seed: the draws of torch.multinomial with a generator seeded alike.
    tokens, _ = sample(step, logits[start], 8, sampler(1.0, seed=5))
    gen, last, drawn = torch.Generator().manual_seed(5), start, []
    for _ in range(8):
        last = torch.multinomial(logits[last].softmax(-1), 1, generator=gen)[:, 0]
        drawn.append(last)
    assert torch.equal(tokens, torch.stack(drawn, 1))
    assert torch.equal(tokens, sample(step, logits[start], 8, sampler(1.0, seed=5))[0])
    assert not torch.equal(tokens, sample(step, logits[start], 8, sampler(1.0, seed=6))[0])


def test_eos_stops_a_sequence_and_padding_follows():
    logits = torch.full((V, V), -5.0)
    logits[0, 1] = logits[1, 2] = logits[2, 2] = logits[3, 4] = logits[4, 4] = 0.0  # 0 -> 1 -> 2 (eos)
    tokens, scores = sample(lambda t: logits[t], logits[torch.tensor([0, 3])], 5, sampler(0.0), eos_id=2, pad_id=0)
    assert tokens.tolist() == [[1, 2, 0, 0, 0], [4, 4, 4, 4, 4]]
    assert trim_at_eos(tokens, 2) == [[1, 2], [4, 4, 4, 4, 4]]
    # Everyone stopped: no more steps.
    calls = []
    tokens, _ = sample(lambda t: calls.append(t) or logits[t], logits[torch.tensor([1])], 5, sampler(0.0), eos_id=2)
    assert tokens.tolist() == [[2]] and calls == []


def test_sample_next_nucleus_and_temperature():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(4000, 1)
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample_next(logits, top_p=0.7, generator=g), minlength=4)
    assert counts[2] == counts[3] == 0  # 0.5 + 0.3 reach 0.7: the rest is cut
    assert abs(counts[0] / 4000 - 0.5 / 0.8) < 0.03
    counts = torch.bincount(sample_next(logits, temperature=0.5, generator=g), minlength=4).float() / 4000
    sharpened = torch.tensor([0.5, 0.3, 0.15, 0.05]) ** 2
    torch.testing.assert_close(counts, sharpened / sharpened.sum(), atol=0.03, rtol=0)
    assert sample_next(logits[:2], temperature=0).tolist() == [0, 0]
    counts = torch.bincount(sample_next(logits, top_k=2, generator=g), minlength=4)
    assert counts[2] == counts[3] == 0 and counts[1] > 0


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"temperature": -1.0}, ValueError, "temperature"),
    ({"top_k": 0}, ValueError, "top_k"),
    ({"top_p": 0.0}, ValueError, r"top_p must be in \(0, 1\]"),
    ({"top_p": "a"}, TypeError, "top_p must be a float"),
    ({"seed": 2 ** 70}, ValueError, "seed"),
])
def test_sampler_refuses_bad_options(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        sampler(**kwargs)


def test_redecode_appends_and_reorders_ragged_prefixes():
    seen = []

    def run(tokens, ptr):
        seen.append([tokens[a:b].tolist() for a, b in zip(ptr[:-1].tolist(), ptr[1:].tolist())])
        return torch.zeros(ptr.numel() - 1, V)

    prefixes = [[1, 2, 3], [4], [5, 6]]
    redecode = Redecode(run, torch.tensor(sum(prefixes, [])), lengths_to_ptr(torch.tensor([3, 1, 2])))
    redecode.first()
    redecode.step(torch.tensor([7, 8, 9]))
    redecode.reorder(torch.tensor([2, 0, 0]))
    redecode.step(torch.tensor([10, 11, 12]))
    assert seen == [prefixes, [[1, 2, 3, 7], [4, 8], [5, 6, 9]], [[5, 6, 9, 10], [1, 2, 3, 7, 11], [1, 2, 3, 7, 12]]]
