"""Pattern comparison: statistics against closed forms and a tiny end-to-end run."""
import argparse
import json
import math

import pytest
import torch

from graphattn import compare
from graphattn import patterns as P


def run_args(*argv):
    parser = argparse.ArgumentParser()
    compare.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_stats_table_path_lengths_equal_closed_forms():
    pats = {"dense": P.dense(), "window:4": P.window(4), "window:16": P.window(16)}
    rows, exponents = compare.stats_table(pats, [33, 64], repeats=1, reference_rows=False, progress=False)
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
    args = run_args("--train", "--quick", "--steps", "2", "--patterns", "dense,window:4,span:8", "--max-len", "24",
                    "--out", str(tmp_path), "--no-progress")
    assert compare.run(args) == 0
    for name in ("train.csv", "train.json", "train_runs.csv", "train_runs.json", "lra.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    summary = json.loads((tmp_path / "train.json").read_text())
    assert [r["pattern"] for r in summary] == ["dense", "window:4", "span:8"]
    for key in ("accuracy", "accuracy_std", "tokens_per_s", "relative_speed", "peak_mib", "edges_per_example", "max_path_length"):
        assert key in summary[0], key
    assert summary[0]["relative_speed"] == 1.0
    assert len(summary[2]["learned_spans"]) == 2  # layers
    out = capsys.readouterr().out
    assert "| pattern | accuracy |" in out and "learned spans" in out


def test_tiny_stats_run(tmp_path):
    args = run_args("--stats", "--patterns", "dense,window:8", "--lengths", "32,64", "--out", str(tmp_path), "--no-progress")
    assert compare.run(args) == 0
    rows = json.loads((tmp_path / "stats.json").read_text())
    assert {r["pattern"] for r in rows} == {"dense", "window:8", "lstm", "conv1d"}
    assert (tmp_path / "scaling.png").exists() and (tmp_path / "exponents.json").exists()


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


def test_cli_compare_errors_are_one_line(capsys):
    from graphattn.cli import main

    for argv in (["compare", "--train", "--patterns", "window:0"], ["compare", "--train", "--patterns", "nope:1"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "error" in err
