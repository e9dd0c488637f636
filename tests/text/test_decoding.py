"""Beam search with a length penalty against brute-force enumeration of every output."""
import itertools

import pytest
import torch

from graphattn.text.decoding import beam_search
from graphattn.text.model import Seq2Seq

VOCAB, MAX_LEN = 5, 3


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = Seq2Seq(VOCAB, VOCAB, d_model=8, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                    dim_feedforward=16, dropout=0.0).eval()
    with torch.no_grad():  # peakier, more varied distributions than the Xavier init gives
        model.generator.weight.mul_(2.0)
        model.generator.bias.copy_(torch.tensor([0.0, 0.0, -1.0, 0.0, 0.5]))
    return model


@torch.no_grad()
def brute_force(model, src, alpha):
    """Every output a decoder of MAX_LEN steps can emit, scored by teacher forcing; the best by
    the GNMT-normalised score, with its raw log-probability."""
    ptr = torch.tensor([0, src.numel()])
    best = None
    for length in range(1, MAX_LEN + 1):
        for ys in itertools.product(range(VOCAB), repeat=length):
            ys = list(ys)
            if model.eos_id in ys[:-1] or (length < MAX_LEN and ys[-1] != model.eos_id):
                continue  # decoding stops at the first EOS, and only there before MAX_LEN
            tgt_in = torch.tensor([model.bos_id] + ys[:-1])
            log_probs = model.forward_flat(src, ptr, tgt_in, torch.tensor([0, length]))
            score = float(log_probs[torch.arange(length), torch.tensor(ys)].sum())
            counted = max(1, sum(y not in (model.pad_id, model.bos_id) for y in ys))
            normalised = score / ((5.0 + counted) / 6.0) ** alpha
            if best is None or normalised > best[0]:
                best = (normalised, ys, score)
    return best


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0, 3.0])
def test_exhaustive_beam_equals_brute_force(tiny, alpha, one_thread):
    sources = [torch.tensor([4, 3, 2]), torch.tensor([3, 2]), torch.tensor([4, 4, 4, 2])]
    src = torch.cat(sources)
    ptr = torch.tensor([0, 3, 5, 9])
    # A beam as wide as the number of outputs keeps every hypothesis: beam search becomes exhaustive.
    decoded = beam_search(tiny, src, ptr, beam_size=VOCAB ** MAX_LEN, length_penalty=alpha, max_len=MAX_LEN)
    for i, s in enumerate(sources):
        _, tokens, score = brute_force(tiny, s, alpha)
        assert decoded.tokens[i] == tokens
        assert float(decoded.scores[i]) == pytest.approx(score, abs=1e-4)


def test_length_penalty_changes_the_winner(tiny, one_thread):
    """The penalty is not a no-op: some source's best output differs between alpha 0 and 3."""
    sources = [torch.tensor([a, b, 2]) for a in range(3, VOCAB) for b in range(3, VOCAB)]
    winners = {alpha: [brute_force(tiny, s, alpha)[1] for s in sources] for alpha in (0.0, 3.0)}
    assert winners[0.0] != winners[3.0]
    assert all(len(a) <= len(b) for a, b in zip(winners[0.0], winners[3.0]))  # longer outputs favoured
