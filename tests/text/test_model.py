"""Seq2Seq learns to copy and to reverse; cached decoding equals decoding without cache."""
import pytest
import torch

from graphattn import patterns as P
from graphattn.text.decoding import beam_search, greedy_decode
from graphattn.text.model import Seq2Seq, TorchSeq2Seq
from graphattn.utils import lengths_to_ptr

NUM_SYMBOLS, SPECIAL = 10, 3  # ids 0, 1, 2 = pad, bos, eos; symbols 3..12


def random_batch(gen, batch, min_len=2, max_len=7):
    lengths = torch.randint(min_len, max_len + 1, (batch,), generator=gen)
    src = torch.randint(SPECIAL, SPECIAL + NUM_SYMBOLS, (int(lengths.sum()),), generator=gen)
    return src, lengths_to_ptr(lengths)


def targets(src, ptr, task):
    """Flat decoder inputs (BOS + y) and outputs (y + EOS) with their ptr."""
    pieces_in, pieces_out = [], []
    for a, b in zip(ptr[:-1].tolist(), ptr[1:].tolist()):
        y = src[a:b] if task == "copy" else src[a:b].flip(0)
        pieces_in.append(torch.cat([torch.tensor([1]), y]))
        pieces_out.append(torch.cat([y, torch.tensor([2])]))
    lengths = torch.tensor([len(p) for p in pieces_in])
    return torch.cat(pieces_in), torch.cat(pieces_out), lengths_to_ptr(lengths)


def train(task, decoder_pattern=None, steps=400):
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = Seq2Seq(SPECIAL + NUM_SYMBOLS, SPECIAL + NUM_SYMBOLS, d_model=32, num_heads=4, num_encoder_layers=2,
                    num_decoder_layers=2, dim_feedforward=64, dropout=0.0, decoder_pattern=decoder_pattern)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    # Decay to zero: a small model at this rate otherwise keeps bouncing around the optimum.
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    loss_fn = torch.nn.NLLLoss()
    losses = []
    for _ in range(steps):
        src, ptr = random_batch(gen, 32)
        tgt_in, tgt_out, ptr_tgt = targets(src, ptr, task)
        loss = loss_fn(model.forward_flat(src, ptr, tgt_in, ptr_tgt), tgt_out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model.eval(), losses


@pytest.fixture(scope="module")
def copy_model():
    return train("copy")


@pytest.mark.parametrize("task", ["copy", "reverse"])
def test_learns_task(task, copy_model):
    model, losses = copy_model if task == "copy" else train(task)
    assert sum(losses[-20:]) / 20 < 0.2 * sum(losses[:20]) / 20
    src, ptr = random_batch(torch.Generator().manual_seed(123), 50)
    _, tgt_out, ptr_tgt = targets(src, ptr, task)
    decoded = greedy_decode(model, src, ptr, max_len=12)
    expected = [tgt_out[a:b].tolist() for a, b in zip(ptr_tgt[:-1].tolist(), ptr_tgt[1:].tolist())]
    accuracy = sum(d == e for d, e in zip(decoded.tokens, expected)) / len(expected)
    assert accuracy >= 0.9, accuracy
    beam = beam_search(model, src, ptr, beam_size=3, max_len=12)
    assert sum(d == e for d, e in zip(beam.tokens, expected)) / len(expected) >= 0.9


def test_cached_equals_uncached(copy_model):
    model, _ = copy_model
    src, ptr = random_batch(torch.Generator().manual_seed(7), 9, min_len=1, max_len=9)
    a = greedy_decode(model, src, ptr, max_len=15, use_cache=True)
    b = greedy_decode(model, src, ptr, max_len=15, use_cache=False)
    assert a.tokens == b.tokens
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=1e-5)
    for k in (1, 3):
        a = beam_search(model, src, ptr, beam_size=k, max_len=15, use_cache=True)
        b = beam_search(model, src, ptr, beam_size=k, max_len=15, use_cache=False)
        assert a.tokens == b.tokens
        torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=1e-5)


def test_beam_of_one_is_greedy(copy_model):
    model, _ = copy_model
    src, ptr = random_batch(torch.Generator().manual_seed(8), 12)
    greedy = greedy_decode(model, src, ptr, max_len=12)
    beam = beam_search(model, src, ptr, beam_size=1, max_len=12)
    assert greedy.tokens == beam.tokens
    torch.testing.assert_close(greedy.scores, beam.scores)


@pytest.mark.parametrize("cls", [Seq2Seq, TorchSeq2Seq])
@pytest.mark.parametrize("pattern", [P.causal(), P.causal() & P.window(2)])
def test_untrained_model_cached_equals_uncached_greedy_and_beam(cls, pattern):
    """The windowed decoder decodes with its ring cache (longer than the window here); the torch
    reference re-decodes its prefix behind the same step interface, through the same loops."""
    torch.manual_seed(1)
    model = cls(8, 9, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=16,
                decoder_pattern=pattern, norm_first=True).eval()
    src, ptr = torch.tensor([3, 4, 5, 6, 7]), torch.tensor([0, 2, 2, 5])  # an empty source too
    a = greedy_decode(model, src, ptr, max_len=10, use_cache=True)
    b = greedy_decode(model, src, ptr, max_len=10, use_cache=False)
    assert a.tokens == b.tokens
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=1e-5)
    assert all(len(t) <= 10 for t in a.tokens)
    a = beam_search(model, src, ptr, beam_size=3, max_len=10, use_cache=True)
    b = beam_search(model, src, ptr, beam_size=3, max_len=10, use_cache=False)
    assert a.tokens == b.tokens
    torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=1e-5)


def test_trained_model_cached_equals_uncached_under_the_window():
    """A model trained with the windowed decoder (short run): greedy and beam agree with and without
    the cache (test_cached_equals_uncached does the causal one), and the cache it decodes with is the
    ring of w + 1 positions."""
    model, _ = train("copy", decoder_pattern=P.parse("causal&window:2"), steps=60)
    src, ptr = random_batch(torch.Generator().manual_seed(9), 6, min_len=1, max_len=9)
    for decode in (lambda c: greedy_decode(model, src, ptr, max_len=12, use_cache=c),
                   lambda c: beam_search(model, src, ptr, beam_size=3, max_len=12, use_cache=c)):
        a, b = decode(True), decode(False)
        assert a.tokens == b.tokens
        torch.testing.assert_close(a.scores, b.scores, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        cache = model.transformer.start_decoding(model.encode(src, ptr), ptr, 12)
    assert cache.size == 3


def test_padded_forward_equals_flat():
    torch.manual_seed(2)
    model = Seq2Seq(10, 11, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16).eval()
    src = torch.tensor([[3, 4, 5], [6, 0, 0]])
    tgt = torch.tensor([[1, 7, 8, 9], [1, 5, 0, 0]])
    out = model(src, tgt)
    flat = model.forward_flat(torch.tensor([3, 4, 5, 6]), torch.tensor([0, 3, 4]),
                              torch.tensor([1, 7, 8, 9, 1, 5]), torch.tensor([0, 4, 6]))
    torch.testing.assert_close(out[tgt != 0], flat)
    assert torch.equal(out[tgt == 0], torch.zeros_like(out[tgt == 0]))
    assert torch.allclose(flat.exp().sum(-1), torch.ones(6))


def test_tied_embeddings():
    model = Seq2Seq(10, 12, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, tie_embeddings=True)
    assert model.generator.weight is model.tgt_embed.weight


def test_bad_input():
    model = Seq2Seq(10, 12, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1)
    with pytest.raises(ValueError, match="outside"):
        model.forward_flat(torch.tensor([3, 10]), torch.tensor([0, 2]), torch.tensor([1]), torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="src"):
        model.encode(torch.tensor([0.5]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="batch size"):
        model(torch.ones(2, 3, dtype=torch.long), torch.ones(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="eos_id"):
        Seq2Seq(10, 12, eos_id=11)
    for cls in (Seq2Seq, TorchSeq2Seq):
        with pytest.raises(ValueError, match=r"divisible by num_heads \(3\)"):
            cls(10, 12, d_model=16, num_heads=3)
        with pytest.raises(TypeError, match="num_heads"):
            cls(10, 12, d_model=16, num_heads=2.0)
    with pytest.raises(ValueError, match="ptr_src"):
        greedy_decode(model, torch.tensor([3, 4]), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model, torch.tensor([3, 4]), torch.tensor([0, 2]), beam_size=0)
    bad = Seq2Seq(10, 12, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1, decoder_pattern=P.window(2))
    with pytest.raises(ValueError, match="causal band"):
        greedy_decode(bad, torch.tensor([3, 4]), torch.tensor([0, 2]))
    # Without a cache a non-causal decoder still decodes: each step re-reads the whole prefix.
    bad.eval()
    src, ptr_src = torch.tensor([3, 4]), torch.tensor([0, 2])
    decoded = greedy_decode(bad, src, ptr_src, use_cache=False, max_len=3)
    prefix, score = [bad.bos_id], 0.0
    with torch.no_grad():
        memory = bad.encode(src, ptr_src)
        for _ in range(3):
            hidden = bad.decode(torch.tensor(prefix), torch.tensor([0, len(prefix)]), memory, ptr_src)
            log_probs = bad.log_probs(hidden[-1])
            prefix.append(int(log_probs.argmax()))
            score += float(log_probs.max())
            if prefix[-1] == bad.eos_id:
                break
    assert decoded.tokens == [prefix[1:]]
    assert float(decoded.scores[0]) == pytest.approx(score, abs=1e-5)
