"""The ListOps generator against an independent recursive evaluator."""
import itertools
import statistics

import pytest
import torch

from graphattn.compare import listops


def reference_value(tokens):
    """Recursive descent, written apart from listops.expression_value's stack machine."""
    def parse(i):
        tok = tokens[i]
        if tok.isdigit():
            return int(tok), i + 1
        args, i = [], i + 1
        while tokens[i] != "]":
            value, i = parse(i)
            args.append(value)
        if tok == "[MAX":
            v = max(args)
        elif tok == "[MIN":
            v = min(args)
        elif tok == "[MED":
            v = int(statistics.median_low(args)) if len(args) % 2 else (sorted(args)[len(args) // 2 - 1] + sorted(args)[len(args) // 2]) // 2
        else:
            v = sum(args) % 10
        return v, i + 1

    value, end = parse(0)
    assert end == len(tokens)
    return value


def test_labels_agree_with_independent_evaluator():
    for tokens in listops.generate(300, 8, 200, seed=3):
        assert listops.expression_value(tokens) == reference_value(tokens)


def test_known_values():
    assert listops.expression_value("[MAX 4 3 [MIN 2 3 ] 1 0 ]".split()) == 4
    assert listops.expression_value("[MED 1 5 8 9 2 ]".split()) == 5
    assert listops.expression_value("[MED 1 4 ]".split()) == 2  # lower middle of an even count
    assert listops.expression_value("[SM 9 8 [MAX 7 ] ]".split()) == 4
    with pytest.raises(ValueError):
        listops.expression_value("[MAX 1 2".split())


def test_lengths_determinism_and_encoding():
    a = listops.generate(200, 32, 128, seed=0)
    assert a == listops.generate(200, 32, 128, seed=0)
    assert a != listops.generate(200, 32, 128, seed=1)
    assert all(32 <= len(t) <= 128 for t in a)
    ids = listops.encode(a[0])
    assert ids[0] == listops.VOCAB.index("<cls>") and ids.numel() == len(a[0]) + 1
    labels = torch.tensor([listops.expression_value(t) for t in a])
    assert len(labels.unique()) == 10  # every class occurs
    with pytest.raises(ValueError, match="min_len"):
        listops.generate(1, 10, 5)


def test_shallow_sparse_task_agrees_and_rests_on_few_digits():
    ops = ("[MAX", "[MIN")
    exprs = listops.generate(300, 32, 512, seed=5, max_depth=1, max_args=1024, operators=ops, informative=3.0)
    assert all(32 <= len(t) <= 512 for t in exprs)
    # Flat: an operator, digits, "]"; the length is the one drawn, so it spans the whole range.
    assert all(t[0] in ops and t[-1] == "]" and all(d.isdigit() for d in t[1:-1]) for t in exprs)
    assert max(map(len, exprs)) > 480 and min(map(len, exprs)) < 64
    informative = []
    for t in exprs:
        assert listops.expression_value(t) == reference_value(t)
        identity = str(listops.IDENTITY[t[0]])
        informative.append(sum(d != identity for d in t[1:-1]))
    # About 3 uniform digits per expression (some equal the identity by chance), whatever the length.
    assert 2.0 < statistics.mean(informative) < 3.5
    labels = torch.tensor([listops.expression_value(t) for t in exprs])
    assert len(labels.unique()) == 10 and float((labels == labels.mode().values).float().mean()) < 0.3


def test_nested_knobs_agree_with_independent_evaluator():
    for kwargs in ({"max_depth": 3, "operators": ("[SM", "[MED"), "root_operators": ("[MAX",)},
                   {"max_depth": 2, "max_args": 40, "operators": ("[MAX", "[MIN", "[SM"), "informative": 2.0}):
        exprs = listops.generate(200, 16, 300, seed=7, **kwargs)
        for t in exprs:
            assert listops.expression_value(t) == reference_value(t)
        steps = [[1 if x.startswith("[") else -1 if x == "]" else 0 for x in t] for t in exprs]
        assert max(max(itertools.accumulate(s)) for s in steps) <= kwargs["max_depth"]
        assert all(tok in listops.OPERATORS or tok == "]" or tok.isdigit() for t in exprs for tok in t)
        if "root_operators" in kwargs:
            assert {t[0] for t in exprs} == {"[MAX"}
            assert {x for t in exprs for x in t[1:] if x.startswith("[")} <= {"[SM", "[MED"}


def test_generator_refuses_bad_knobs():
    with pytest.raises(ValueError, match="operators"):
        listops.generate(1, operators=("[MAX", "[POW"))
    with pytest.raises(ValueError, match="identity"):
        listops.generate(1, operators=("[MED",), informative=2.0)
    with pytest.raises(ValueError, match="at most 12 tokens"):
        listops.generate(1, 32, 64, max_depth=1, max_args=10)
    with pytest.raises(ValueError, match="max_depth"):
        listops.generate(1, max_depth=0)
    with pytest.raises(ValueError, match="informative"):
        listops.generate(1, informative=0.0)
