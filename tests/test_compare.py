"""Pattern comparison: statistics against closed forms and a tiny end-to-end run."""
import argparse
import json
import math
import statistics

import pytest
import torch

from graphattn import compare
from graphattn import patterns as P
from graphattn.sequence import local_positions, positional_encoding


def run_args(*argv):
    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_stats_table_path_lengths_equal_closed_forms():
    pats = {"dense": P.dense(), "window:4": P.window(4), "window:16": P.window(16)}
    rows, exponents = compare.stats_table(pats, [33, 64], repeats=1, min_seconds=0, reference_rows=False, progress=False)
    for r in rows:
        if r["pattern"] == "dense":
            assert r["max_path_length"] == 1
        else:
            w = int(r["pattern"].split(":")[1])
            assert r["max_path_length"] == math.ceil((r["n"] - 1) / w)
        assert r["seconds"] > 0 and r["complexity"]
    assert set(exponents) == set(pats)


def test_fit_exponent_and_peak_memory():
    ns = [100, 200, 400, 800]
    assert compare.fit_exponent(ns, [3 * n**2 for n in ns]) == pytest.approx(2.0)
    assert compare.fit_exponent(ns, [n for n in ns]) == pytest.approx(1.0)
    peak = compare.peak_memory_mib(lambda: torch.ones(16, 1024, 1024))  # 64 MiB
    if peak is not None:
        assert 50 < peak < 90


def test_tiny_train_run_writes_every_output(tmp_path, capsys):
    args = run_args("--train", "--quick", "--steps", "2", "--seeds", "2", "--patterns", "dense,window:4,span:8",
                    "--max-len", "24", "--out", str(tmp_path), "--no-progress", "--threads", "1")
    assert compare.run(args) == 0
    for name in ("train.csv", "train.json", "train.md", "train_runs.csv", "train_runs.json", "train_settings.json",
                 "lra.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "train.json").read_text())
    assert [r["pattern"] for r in summary] == ["dense", "window:4", "span:8"]
    for key in compare.TRAIN_COLUMNS + ["accuracy", "accuracy_std"]:
        assert key in summary[0] or key == "learned_span_text", key
    assert summary[0]["relative_speed"] == 1.0 and summary[0]["seeds"] == 2
    runs = json.loads((tmp_path / "train_runs.json").read_text())
    acc = [r["accuracy"] for r in runs if r["pattern"] == "dense"]
    assert summary[0]["accuracy_std"] == pytest.approx(statistics.stdev(acc))
    assert summary[0]["accuracy_text"] == f"{statistics.mean(acc):.1f} ± {statistics.stdev(acc):.1f}"
    spans = summary[2]["learned_spans"]
    assert len(spans) == 2 and len(spans[0]) == 2 and len(spans[0][0]) == 4  # seeds, layers, heads
    assert summary[2]["learned_span_text"].startswith("L1 ") and "; L2 " in summary[2]["learned_span_text"]
    settings = json.loads((tmp_path / "train_settings.json").read_text())
    assert settings["steps"] == 2 and settings["seeds"] == [0, 1] and 0 < settings["majority_class_accuracy"] <= 100
    assert torch.get_num_threads() == 1
    out = capsys.readouterr().out
    assert "| pattern | accuracy % (mean ± std) |" in out and "L1 " in out
    assert (tmp_path / "train.md").read_text().startswith("| pattern | accuracy % (mean ± std) |")


def test_train_settings_follow_the_options():
    cfg = compare.train_settings(run_args())
    assert (cfg.max_len, cfg.min_len, cfg.steps, cfg.task) == (512, 32, 200, compare.LISTOPS_TASK)
    cfg = compare.train_settings(run_args("--quick", "--task", "lra", "--steps", "7", "--max-len", "20"))
    assert (cfg.max_len, cfg.min_len, cfg.steps, cfg.task) == (20, 20, 7, compare.LRA_TASK)


def test_batches_bucket_by_length_and_use_each_example_once():
    data = [(torch.full((n,), n), n) for n in torch.randint(2, 60, (200,)).tolist()]
    batches = list(compare._batches(data, 8, torch.Generator().manual_seed(0), bucket=4))
    assert len(batches) == 200 // 8
    seen = sorted(y for _, _, labels in batches for y in labels.tolist())
    assert seen == sorted(y for _, y in data)  # every example once (200 is a multiple of 8)
    # Within a batch lengths are close: each run of 4 batches is one sorted chunk.
    spread = statistics.mean(float(ptr.diff().max() - ptr.diff().min()) for _, ptr, _ in batches)
    assert spread < 20  # unsorted batches of 8 from 2..59 spread ~45


def test_classifier_caches_edges_and_span_distance_without_changing_outputs():
    torch.manual_seed(0)
    tokens = torch.randint(2, 10, (50,))
    ptr = torch.tensor([0, 20, 50])
    for kwargs in ({"pattern": P.bigbird(2, 1, 1, seed=0)}, {"learned_span": 6}):
        model = compare.SequenceClassifier(20, 10, dropout=0.0, **kwargs).eval()
        out = model(tokens, ptr)
        # The reference: every layer builds its own edges and span bias.
        x = model.embed(tokens) * math.sqrt(model.d_model)
        x = x + positional_encoding(local_positions(ptr), model.d_model)
        for i, layer in enumerate(model.layers):
            ei = model.pattern.edge_index(ptr) if model.spans is not None else None
            bias = None if model.spans is None else model.spans[i](ei, ptr)
            x = layer(x, ptr, ei, attn_bias=bias)
        torch.testing.assert_close(out, model.head(model.norm(x)[ptr[:-1]]))


def test_tiny_stats_run(tmp_path):
    args = run_args("--stats", "--patterns", "dense,window:8", "--lengths", "32,64", "--out", str(tmp_path), "--no-progress")
    assert compare.run(args) == 0
    rows = json.loads((tmp_path / "stats.json").read_text())
    assert {r["pattern"] for r in rows} == {"dense", "window:8", "lstm", "conv1d"}
    assert (tmp_path / "scaling.png").exists() and (tmp_path / "exponents.json").exists()
    assert "Exponents k of time and memory" in (tmp_path / "stats.md").read_text()


def test_stats_reach_is_searched_only_up_to_reach_max_len():
    pats = {"window:4": P.window(4), "dilated:2:2": P.dilated(2, 2)}
    rows, _ = compare.stats_table(pats, [16, 40], repeats=1, min_seconds=0, reach_max_len=20, reference_rows=False,
                                  progress=False)
    by = {(r["pattern"], r["n"]): r for r in rows}
    assert by[("dilated:2:2", 16)]["max_path_length"] == math.inf  # residues never mix
    assert by[("dilated:2:2", 40)]["max_path_length"] is None  # a search past reach_max_len: skipped
    assert by[("dilated:2:2", 40)]["edges"] == P.dilated(2, 2).edge_index(torch.tensor([0, 40])).size(1)
    assert by[("window:4", 40)]["max_path_length"] == 10  # closed form: always computed


def test_fastest_seconds_repeats_short_calls():
    calls = []
    assert compare.fastest_seconds(lambda: calls.append(1), repeats=2, min_seconds=0.01, max_repeats=7) >= 0
    assert len(calls) == 7  # far shorter than min_seconds: repeated up to max_repeats


def test_window_wider_than_sequence_is_dense_and_bad_settings_refused():
    ptr = torch.tensor([0, 10])
    assert torch.equal(P.parse("window:50").edge_index(ptr), P.dense().edge_index(ptr))
    with pytest.raises(ValueError, match="w must"):
        compare.run(run_args("--train", "--patterns", "window:0"))
    with pytest.raises(ValueError, match="unknown pattern"):
        compare.run(run_args("--train", "--patterns", "windw:3"))
    with pytest.raises(ValueError, match="--steps"):
        compare.run(run_args("--train", "--steps", "0"))
    with pytest.raises(ValueError, match="span"):
        compare.run(run_args("--train", "--patterns", "span:x"))
    with pytest.raises(ValueError, match="--threads"):
        compare.run(run_args("--train", "--threads", "0"))


def test_cli_compare_errors_are_one_line(capsys):
    from graphattn.cli import main

    for argv in (["compare", "--train", "--patterns", "window:0"], ["compare", "--train", "--patterns", "nope:1"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "error" in err


def test_keep_freed_memory_asks_glibc():
    import platform

    kept = compare.keep_freed_memory()
    assert isinstance(kept, bool)
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert kept
