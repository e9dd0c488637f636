"""Language-model data (lm.py): documents as token streams cut into sequences, perplexity, text generation."""
import math

import pytest
import torch

from graphattn.nn import CausalLM
from graphattn.text.lm import (LMDataset, generate_text, lm_collate, perplexity, read_documents,
                               split_documents)
from graphattn.text.tokenizer import EOS_ID, Tokenizer

DOCS = ["def f(x):\n    return x + 1\n", "class A:\n    pass\n", "print('héllo')\n"]


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(DOCS, "char")


@pytest.mark.parametrize("context", [1, 4, 7, 100])
def test_every_token_is_predicted_once(tokenizer, context):
    ds = LMDataset(DOCS, tokenizer, context)
    stream = [i for d in DOCS for i in tokenizer.encode(d, add_eos=True)]  # documents end with <eos>
    inputs = [i for x, _ in ds for i in x.tolist()]
    targets = [i for _, y in ds for i in y.tolist()]
    assert targets == stream[1:] and inputs == stream[:-1]
    assert ds.num_tokens == len(stream) - 1 == sum(ds.lengths)
    assert all(0 < n <= context for n in ds.lengths) and ds.lengths[:-1] == [context] * (len(ds) - 1)
    for x, y in ds:
        assert torch.equal(x[1:], y[:-1])  # targets are the inputs shifted by one


def test_collate_is_a_flat_batch(tokenizer):
    ds = LMDataset(DOCS, tokenizer, 5)
    batch = lm_collate([ds[0], ds[len(ds) - 1]])
    assert batch.ptr.tolist() == [0, 5, 5 + ds.lengths[-1]]
    assert torch.equal(batch.tokens[:5], ds[0][0]) and torch.equal(batch.targets[5:], ds[len(ds) - 1][1])
    assert batch.num_tokens == batch.tokens.numel() and batch.inputs == (batch.tokens, batch.ptr)


def test_split_documents():
    docs = [f"doc {i}\n" for i in range(40)]
    train, valid = split_documents(docs, 0.1, seed=0)
    assert len(valid) == 4 and sorted(train + valid) == sorted(docs)
    assert split_documents(docs, 0.1, seed=0) == (train, valid) != split_documents(docs, 0.1, seed=1)
    assert len(split_documents(docs[:3], 0.01)[1]) == 1  # at least one document each way
    one = "".join(f"line {i}\n" for i in range(20))
    train, valid = split_documents([one], 0.25)
    assert train[0] + valid[0] == one and valid[0].startswith("line 15\n")
    with pytest.raises(ValueError, match="cannot be split"):
        split_documents(["a single line"], 0.5)
    with pytest.raises(ValueError, match="valid_fraction"):
        split_documents(docs, 0.0)


def test_read_documents_refuses_bad_files(tmp_path):
    good, empty, latin = tmp_path / "good.py", tmp_path / "empty.py", tmp_path / "latin.py"
    good.write_text("x = 1\n", encoding="utf-8")
    empty.write_text("\n\n", encoding="utf-8")
    latin.write_bytes("s = 'd\u00e9j\u00e0'\n".encode("latin-1"))
    assert read_documents([good]) == ["x = 1\n"]
    with pytest.raises(ValueError, match="empty.py' is empty"):
        read_documents([good, empty])
    with pytest.raises(ValueError, match=r"latin.py' is not UTF-8 text: line 1, byte 7"):
        read_documents([latin])
    with pytest.raises(ValueError, match="non-empty list"):
        read_documents(str(good))


def test_perplexity_of_a_uniform_model_is_the_vocabulary_size(tokenizer):
    model = CausalLM(len(tokenizer), d_model=8, num_heads=2, num_layers=1, dim_feedforward=16)
    with torch.no_grad():
        model.embed.weight.zero_()  # tied: every logit is 0, every token has probability 1 / V
    scores = perplexity(model, LMDataset(DOCS, tokenizer, 6), batch_size=2)
    assert scores["perplexity"] == pytest.approx(len(tokenizer), rel=1e-5)
    assert scores["tokens"] == LMDataset(DOCS, tokenizer, 6).num_tokens


def test_perplexity_is_exp_of_the_mean_token_loss(tokenizer):
    torch.manual_seed(0)
    model = CausalLM(len(tokenizer), d_model=8, num_heads=2, num_layers=1, dim_feedforward=16).eval()
    ds = LMDataset(DOCS, tokenizer, 6)
    # Reference: one sequence at a time, padded-batch forward, summed log-probabilities.
    total = sum(-torch.log_softmax(model(x.unsqueeze(0))[0], -1).gather(1, y[:, None]).sum().item() for x, y in ds)
    assert perplexity(model, ds, batch_size=3)["perplexity"] == pytest.approx(math.exp(total / ds.num_tokens), rel=1e-5)


def test_generate_text_continues_the_prompt_and_stops_at_the_end_of_a_document(tokenizer):
    torch.manual_seed(0)
    model = CausalLM(len(tokenizer), d_model=8, num_heads=2, num_layers=1, dim_feedforward=16).eval()
    out = generate_text(model, tokenizer, ["def ", ""], max_new_tokens=12, temperature=0)
    assert out[0].startswith("def ") and len(out) == 2
    ids = model.generate(torch.tensor([EOS_ID] + tokenizer.encode("def ", add_eos=False)), 12, temperature=0,
                         eos_id=EOS_ID)
    assert out[0] == tokenizer.decode(ids[1:])  # the leading <eos> dropped, decoding stops at the next
