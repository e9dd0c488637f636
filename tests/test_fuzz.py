"""Fuzzing the public API with hypothesis: patterns, CausalLM.generate, Tokenizer and checkpoints.

Every input gets a correct result or a ValueError/TypeError whose message names the argument
(its name in the signature, or the path for a file); no other exception reaches the user.
"""
import inspect
import math

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from graphattn import patterns as P
from graphattn.nn import CausalLM
from graphattn.text.checkpoint import REQUIRED_KEYS, load_checkpoint, save_checkpoint
from graphattn.text.tokenizer import KINDS, Tokenizer

SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Values of every kind a caller may pass by mistake; ints stay small where a valid one would
# ask for that much work (random(num_keys=2**40) draws that many keys).
ANY = st.one_of(st.none(), st.booleans(), st.integers(-3, 40), st.just(2 ** 70), st.floats(allow_nan=True),
                st.text(max_size=5), st.lists(st.integers(-2, 12), max_size=4),
                st.sampled_from([torch.tensor([1, 2]), torch.tensor([0.5]), torch.zeros(2, 2, dtype=torch.long)]))


def names_an_argument(error: Exception, function, also=()) -> bool:
    names = [n for n in inspect.signature(function).parameters if n not in ("self", "cls")] + list(also)
    return any(name in str(error) for name in names)


def refused_clearly(call, function, also=()):
    """The result of ``call()``, or None when it raised a ValueError/TypeError naming an argument
    of ``function`` (or one of the words ``also``); any other exception fails the test."""
    try:
        return call()
    except (ValueError, TypeError) as error:
        assert names_an_argument(error, function, also), f"{type(error).__name__}: {error}"
        return None


# --------------------------------------------------------------------------- patterns

CONSTRUCTORS = {"window": P.window, "dilated": P.dilated, "block": P.block, "global_tokens": P.global_tokens,
                "random": P.random, "bigbird": P.bigbird, "khop": P.khop, "expander": P.expander,
                "virtual_nodes": P.virtual_nodes}
PTR = torch.tensor([0, 1, 5, 12])


def check_edges(edges: torch.Tensor, ptr: torch.Tensor) -> None:
    assert edges.dtype == torch.long and edges.dim() == 2 and edges.size(0) == 2
    if edges.numel():
        assert int(edges.min()) >= 0
        key_example = torch.bucketize(edges[0], ptr[1:], right=True)
        query_example = torch.bucketize(edges[1], ptr[1:], right=True)
        assert torch.equal(key_example, query_example)  # never across examples


@SETTINGS
@given(st.sampled_from(sorted(CONSTRUCTORS)), st.lists(ANY, min_size=4, max_size=4))
def test_pattern_constructors(name, args):
    make = CONSTRUCTORS[name]
    args = args[:len(inspect.signature(make).parameters)]  # Python's own error for a wrong count
    pattern = refused_clearly(lambda: make(*args), make)
    if pattern is None:
        return
    if "edges>" not in repr(pattern):  # a pattern bound to one graph prints its size, not its edges
        assert P.parse(repr(pattern)) == pattern
    if pattern.position_based:
        check_edges(pattern.edge_index(PTR), PTR)


@SETTINGS
@given(st.text(alphabet="dnsecaulwi0123456789:&|()bgrphkx-", max_size=24))
def test_parse_takes_a_spec_or_says_why_not(spec):
    # parse's messages name the pattern they cannot read, quoting the spec
    pattern = refused_clearly(lambda: P.parse(spec), P.parse, also=("pattern",))
    if pattern is not None:
        assert P.parse(repr(pattern)) == pattern


@SETTINGS
@given(ANY)
def test_edge_index_checks_ptr(ptr):
    edges = refused_clearly(lambda: P.window(2).edge_index(ptr), P.window(2).edge_index)
    if edges is not None:
        check_edges(edges, torch.as_tensor(ptr))


# --------------------------------------------------------------------------- CausalLM.generate

V = 11


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return CausalLM(V, d_model=8, num_heads=2, num_layers=1, dim_feedforward=16, dropout=0.0,
                    pattern="causal&window:3").eval()


PROMPTS = st.one_of(ANY, st.lists(st.lists(st.integers(-1, V + 1), max_size=4), max_size=3),
                    st.lists(st.integers(0, V - 1), min_size=1, max_size=4).map(torch.tensor))
NUMBERS = st.one_of(st.none(), st.integers(-2, V + 2), st.floats(-1, 3), st.just(math.nan), st.just(math.inf),
                    st.text(max_size=2))


@SETTINGS
@given(PROMPTS, st.one_of(st.integers(-1, 4), ANY), NUMBERS, NUMBERS, NUMBERS, st.one_of(ANY, st.integers(-5, 5)),
       st.one_of(st.none(), st.integers(-1, V + 1)))
def test_generate(lm, prompt, max_new_tokens, temperature, top_k, top_p, seed, eos_id):
    kwargs = dict(temperature=1.0 if temperature is None else temperature, top_k=top_k, top_p=top_p, seed=seed,
                  eos_id=eos_id)
    out = refused_clearly(lambda: lm.generate(prompt, max_new_tokens, **kwargs), lm.generate)
    if out is None:
        return
    if isinstance(prompt, torch.Tensor):
        rows_in, rows_out = ([prompt], [out]) if prompt.dim() == 1 else (list(prompt), list(out))
    else:
        rows_in, rows_out = [torch.as_tensor(p) for p in prompt], out
    for given_row, row in zip(rows_in, rows_out):
        assert torch.equal(row[:len(given_row)], given_row)
        assert len(given_row) <= len(row) <= len(given_row) + max_new_tokens
        assert int(row.min()) >= 0 and int(row.max()) < V


# --------------------------------------------------------------------------- Tokenizer

TEXTS = st.one_of(ANY, st.lists(st.text(max_size=12), max_size=6), st.text(max_size=8))


@SETTINGS
@given(TEXTS, st.sampled_from(KINDS + ("bytes",)), st.one_of(st.none(), st.integers(-1, 400), ANY))
def test_tokenizer_train(texts, kind, vocab_size):
    tok = refused_clearly(lambda: Tokenizer.train(texts, kind, vocab_size), Tokenizer.train)
    if tok is None:
        return
    sample = texts[0]
    ids = tok.encode(sample)
    assert all(0 <= i < len(tok) for i in ids)
    if kind in ("bpe", "unigram"):  # byte-level: exact round trip
        assert tok.decode(ids) == sample


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train(["hello world", "graph attention"] * 3, "bpe", 300)


@SETTINGS
@given(st.one_of(ANY, st.lists(st.integers(-2, 400), max_size=5), st.lists(st.floats(), max_size=2)))
def test_tokenizer_decode(tokenizer, ids):
    text = refused_clearly(lambda: tokenizer.decode(ids), tokenizer.decode)
    if text is not None:
        assert isinstance(text, str)


# --------------------------------------------------------------------------- checkpoints

PAYLOAD = {"format": "graphattn-checkpoint", "version": 2, "step": 3, "model": {"w": torch.ones(2)},
           "optimizer": {}, "scheduler": {}, "rng": {}, "data": {}, "config": {}, "vocab": {}}


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    save_checkpoint(PAYLOAD, path)
    return path.read_bytes()


@SETTINGS
@given(st.one_of(st.binary(max_size=64), st.integers(0, 4000).map(lambda n: ("cut", n)),
                 st.tuples(st.integers(0, 4000), st.integers(0, 255)).map(lambda a: ("flip",) + a)))
def test_load_checkpoint_of_any_bytes(tmp_path_factory, good_bytes, change):
    path = tmp_path_factory.mktemp("fuzz") / "c.pt"
    if isinstance(change, bytes):
        data = change
    elif change[0] == "cut":
        data = good_bytes[:change[1]]
    else:
        position = change[1] % len(good_bytes)
        data = good_bytes[:position] + bytes([change[2]]) + good_bytes[position + 1:]
    path.write_bytes(data)
    try:
        ckpt = load_checkpoint(path)
    except ValueError as error:
        assert "c.pt" in str(error) and len(str(error)) < 400 and "weights_only" not in str(error)
        return
    assert set(REQUIRED_KEYS) <= set(ckpt)


@SETTINGS
@given(st.dictionaries(st.sampled_from(REQUIRED_KEYS + ("extra",)), st.one_of(st.integers(), st.text(max_size=3)),
                       max_size=6))
def test_load_checkpoint_of_any_dict(tmp_path_factory, payload):
    path = tmp_path_factory.mktemp("fuzz") / "d.pt"
    save_checkpoint(payload, path)
    try:
        ckpt = load_checkpoint(path)
    except ValueError as error:
        assert "d.pt" in str(error)
        return
    assert ckpt["format"] == "graphattn-checkpoint"
    assume(True)
