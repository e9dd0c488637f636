"""The ListOps generator against an independent recursive evaluator."""
import statistics

import pytest
import torch

from graphattn import listops


def reference_value(tokens):
    """Recursive descent, written apart from listops.evaluate's stack machine."""
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
        assert listops.evaluate(tokens) == reference_value(tokens)


def test_known_values():
    assert listops.evaluate("[MAX 4 3 [MIN 2 3 ] 1 0 ]".split()) == 4
    assert listops.evaluate("[MED 1 5 8 9 2 ]".split()) == 5
    assert listops.evaluate("[MED 1 4 ]".split()) == 2  # lower middle of an even count
    assert listops.evaluate("[SM 9 8 [MAX 7 ] ]".split()) == 4
    with pytest.raises(ValueError):
        listops.evaluate("[MAX 1 2".split())


def test_lengths_determinism_and_encoding():
    a = listops.generate(200, 32, 128, seed=0)
    assert a == listops.generate(200, 32, 128, seed=0)
    assert a != listops.generate(200, 32, 128, seed=1)
    assert all(32 <= len(t) <= 128 for t in a)
    ids = listops.encode(a[0])
    assert ids[0] == listops.VOCAB.index("<cls>") and ids.numel() == len(a[0]) + 1
    labels = torch.tensor([listops.evaluate(t) for t in a])
    assert len(labels.unique()) == 10  # every class occurs
    with pytest.raises(ValueError, match="min_len"):
        listops.generate(1, 10, 5)
