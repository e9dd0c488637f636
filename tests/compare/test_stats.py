"""Pattern statistics and the measured cost of one layer, against closed forms."""
import json
import math

import torch

from graphattn import compare
from graphattn import patterns as P
from graphattn.compare.stats import layer_step


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
        assert r["edges"] == pats[r["pattern"]].edge_index(torch.tensor([0, r["n"]])).size(1)
    assert set(exponents) == set(pats)


def test_stats_reach_is_searched_only_up_to_reach_max_len():
    pats = {"window:4": P.window(4), "dilated:2:2": P.dilated(2, 2)}
    rows, _ = compare.stats_table(pats, [16, 40], repeats=1, min_seconds=0, reach_max_len=20, reference_rows=False,
                                  progress=False)
    by = {(r["pattern"], r["n"]): r for r in rows}
    assert by[("dilated:2:2", 16)]["max_path_length"] == math.inf  # residues never mix
    assert by[("dilated:2:2", 40)]["max_path_length"] is None  # a search past reach_max_len: skipped
    assert by[("dilated:2:2", 40)]["edges"] == P.dilated(2, 2).edge_index(torch.tensor([0, 40])).size(1)
    assert by[("window:4", 40)]["max_path_length"] == 10  # closed form: always computed


def test_stats_report_writes_every_output(tmp_path):
    table = compare.stats_report({"dense": P.dense(), "window:8": P.window(8)}, [32, 64], tmp_path, progress=False)
    rows = json.loads((tmp_path / "stats.json").read_text())
    assert {r["pattern"] for r in rows} == {"dense", "window:8", "lstm", "conv1d"}
    assert (tmp_path / "scaling.png").stat().st_size > 0 and (tmp_path / "stats.csv").stat().st_size > 0
    exponents = json.loads((tmp_path / "exponents.json").read_text())
    assert set(exponents) == {"dense", "window:8", "lstm", "conv1d"}
    assert "Exponents k of time and memory" in table and (tmp_path / "stats.md").read_text() == table + "\n"


def test_default_patterns_are_named_in_the_grammar():
    for name, pattern in compare.default_stats_patterns(16).items():
        assert P.parse(name) == pattern and P.parse(repr(pattern)) == pattern
    for name, pattern in compare.default_train_patterns(128).items():
        assert P.parse(name) == pattern


def test_layer_step_leaves_the_global_generator_as_it_was():
    torch.manual_seed(123)
    expected = torch.rand(3)
    for kind, pattern in (("attention", P.window(2)), ("attention", P.dense()), ("lstm", None), ("conv1d", None)):
        torch.manual_seed(123)
        layer_step(kind, pattern, 12, 8, 2)()
        assert torch.equal(torch.rand(3), expected), kind
