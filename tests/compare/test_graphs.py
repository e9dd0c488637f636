"""The graph pattern comparison: runs, summary, files and the command line, at tiny sizes."""
import json

import pytest
import torch

from graphattn.cli import main
from graphattn.compare.graphs import graph_report
from graphattn.graphs.comparison import GraphCompareSettings, compare_graph_patterns, summarise_graph_runs

TINY = GraphCompareSettings(depth=2, num_trees=36, tree_epochs=1, social_nodes=120, social_epochs=1, hidden=8,
                            heads=2, num_neighbors=(3, 2), dense_max_pairs=1000)


def test_every_pattern_runs_on_both_tasks_and_dense_only_where_it_fits(tmp_path):
    patterns = ["graph", "graph|expander:4:0|virtual:1", "dense"]
    runs = compare_graph_patterns(patterns, TINY, seeds=[0, 1], progress=False)
    assert len(runs) == 2 * 3 * 2
    dense_social = [r for r in runs if r["task"] == "social" and r["pattern"] == "dense"]
    assert all("does not fit" in r["note"] and "accuracy" not in r for r in dense_social)  # 120^2 > 1000 pairs
    trees = [r for r in runs if r["task"] == "neighbors_match"]
    assert all(0 <= r["accuracy"] <= 100 and r["per_second"] > 0 for r in trees)
    by = {(r["task"], r["pattern"]): r for r in runs}
    assert by[("neighbors_match", "dense")]["max_path_length"] == 1
    assert by[("social", "graph|expander:4:0|virtual:1")]["max_path_length"] == 2  # through the virtual node
    assert by[("neighbors_match", "graph")]["max_path_length"] == float("inf")  # tree edges point to the root
    summary = summarise_graph_runs(runs)
    graph_row = next(r for r in summary if r["task"] == "social" and r["pattern"] == "graph")
    assert graph_row["relative_speed"] == 1.0 and graph_row["seeds"] == 2
    table = graph_report(summary, runs, {"seeds": [0, 1]}, tmp_path)
    assert "does not fit" in table and "graph\\|expander:4:0\\|virtual:1" in table
    for name in ("graphs.md", "graphs.csv", "graphs.json", "graph_runs.csv", "graph_settings.json",
                 "graphs_neighbors_match.png", "graphs_social.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert len(json.loads((tmp_path / "graphs.json").read_text())) == 6


def test_command_line_refuses_a_bad_pattern_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", "--graphs", "--patterns", "graph,grpah", "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and "unknown pattern 'grpah'" in capsys.readouterr().err
    assert not (tmp_path / "graphs.md").exists()


def test_runs_leave_the_global_generator_as_it_was():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = compare_graph_patterns(["graph"], TINY, seeds=[0], tasks=("neighbors_match",), progress=False)
    assert torch.equal(torch.rand(3), expected)
    # A run seeds itself: another state of the caller's generator gives the same accuracy.
    torch.manual_seed(7)
    again = compare_graph_patterns(["graph"], TINY, seeds=[0], tasks=("neighbors_match",), progress=False)
    assert again[0]["accuracy"] == first[0]["accuracy"]


@pytest.mark.parametrize("argv, message", [
    (["--graphs", "--steps", "3"], "--graphs trains for epochs, not steps: use --epochs"),
    (["--train", "--epochs", "3"], "--epochs counts the epochs of --graphs"),
    (["--graphs", "--epochs", "0"], "--epochs must be >= 1, got 0"),
])
def test_graphs_count_epochs_and_train_counts_steps(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["compare", *argv, "--out", str(tmp_path)])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before any training


def test_epochs_reach_both_tasks(tmp_path, monkeypatch):
    seen = {}

    class Stop(Exception):
        pass

    def capture(specs, settings, seeds, progress=True):
        seen.update(tree=settings.tree_epochs, social=settings.social_epochs, seeds=seeds)
        raise Stop

    monkeypatch.setattr("graphattn.graphs.comparison.compare_graph_patterns", capture)
    with pytest.raises(Stop):
        main(["compare", "--graphs", "--quick", "--epochs", "3", "--threads", "1", "--out", str(tmp_path)])
    assert seen == {"tree": 3, "social": 3, "seeds": [0]}
