"""The classifier trained under each pattern: a tiny end-to-end run, batching, caching."""
import json
import math
import statistics

import pytest
import torch

from graphattn import compare
from graphattn import patterns as P
from graphattn.compare.training import TRAIN_COLUMNS, _batches, span_name
from graphattn.nn import positional_encoding
from graphattn.utils import local_positions


def test_tiny_train_run_writes_every_output(tmp_path):
    settings = compare.TrainSettings(steps=2, max_len=24, min_len=24, num_train=64, num_test=32)
    table = compare.train_report({"dense": "dense", "window:4": P.window(4)}, [0, 1], settings, tmp_path,
                                 learned_spans=[8], progress=False)
    for name in ("train.csv", "train.json", "train.md", "train_runs.csv", "train_runs.json", "train_settings.json",
                 "lra.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "train.json").read_text())
    assert [r["pattern"] for r in summary] == ["dense", "window:4", span_name(8)]
    for key in TRAIN_COLUMNS + ["accuracy", "accuracy_std"]:
        assert key in summary[0] or key == "learned_span_text", key
    assert summary[0]["relative_speed"] == 1.0 and summary[0]["seeds"] == 2
    runs = json.loads((tmp_path / "train_runs.json").read_text())
    acc = [r["accuracy"] for r in runs if r["pattern"] == "dense"]
    assert summary[0]["accuracy_std"] == pytest.approx(statistics.stdev(acc))
    assert summary[0]["accuracy_text"] == f"{statistics.mean(acc):.1f} ± {statistics.stdev(acc):.1f}"
    spans = summary[2]["learned_spans"]
    assert len(spans) == 2 and len(spans[0]) == 2 and len(spans[0][0]) == 4  # seeds, layers, heads
    assert summary[2]["learned_span_text"].startswith("L1 ") and "; L2 " in summary[2]["learned_span_text"]
    settings_out = json.loads((tmp_path / "train_settings.json").read_text())
    assert settings_out["steps"] == 2 and settings_out["seeds"] == [0, 1] and settings_out["learned_spans"] == [8]
    assert 0 < settings_out["majority_class_accuracy"] <= 100
    assert table.startswith("| pattern | accuracy % (mean ± std) |") and "L1 " in table
    assert (tmp_path / "train.md").read_text() == table + "\n"


def test_training_leaves_the_global_generator_as_it_was(tmp_path):
    settings = compare.TrainSettings(steps=1, max_len=16, min_len=16, num_train=16, num_test=16)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    compare.train_table({"dense": P.dense()}, [0], settings, progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_batches_bucket_by_length_and_use_each_example_once():
    data = [(torch.full((n,), n), n) for n in torch.randint(2, 60, (200,)).tolist()]
    batches = _batches(data, 8, seed=0)
    epoch = [next(batches) for _ in range(200 // 8)]
    seen = sorted(y for _, _, labels in epoch for y in labels.tolist())
    assert seen == sorted(y for _, y in data)  # every example once per epoch (200 is a multiple of 8)
    spread = statistics.mean(float(ptr.diff().max() - ptr.diff().min()) for _, ptr, _ in epoch)
    assert spread < 20  # unsorted batches of 8 from 2..59 spread ~45


def test_classifier_caches_edges_and_span_distance_without_changing_outputs():
    torch.manual_seed(0)
    tokens = torch.randint(2, 10, (50,))
    ptr = torch.tensor([0, 20, 50])
    for kwargs in ({"pattern": P.bigbird(2, 1, 1, seed=0)}, {"pattern": "window:3"}, {"learned_span": 6}):
        model = compare.SequenceClassifier(20, 10, dropout=0.0, **kwargs).eval()
        out = model(tokens, ptr)
        # The reference: every layer attends its pattern and builds its own span bias.
        x = model.embed(tokens) * math.sqrt(model.d_model)
        x = x + positional_encoding(local_positions(ptr), model.d_model)
        for i, layer in enumerate(model.layers):
            bias = None if model.spans is None else model.spans[i](model.pattern.edge_index(ptr), ptr)
            x = layer(x, ptr, attn_bias=bias)
        torch.testing.assert_close(out, model.head(model.norm(x)[ptr[:-1]]))


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="w must"):
        compare.train_table({"window:-1": "window:-1"}, [0], compare.TrainSettings(steps=1), progress=False)
    with pytest.raises(ValueError, match="unknown pattern"):
        compare.train_table({"x": "windw:3"}, [0], compare.TrainSettings(steps=1), progress=False)
    with pytest.raises(ValueError, match="readout"):
        compare.SequenceClassifier(20, 10, readout="max")
