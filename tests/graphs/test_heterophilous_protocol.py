"""benchmarks/heterophilous_protocol.py: Platonov et al.'s rule (the layer count of the best mean validation
over the splits run at every count), its job order, a job against fit_full_graph run directly, and --resume."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

from graphattn.graphs.baselines import ResidualGNN
from graphattn.graphs.fit import fit_full_graph, roc_auc

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "heterophilous_protocol.py"


@pytest.fixture(scope="module")
def proto(load_script):
    return load_script("benchmarks/heterophilous_protocol.py")


def run(split, layers, val, test):
    return {"split": split, "layers": layers, "val": val, "test": test, "step": 5, "step_seconds": 0.1}


def test_the_best_mean_validation_picks_the_layers(proto):
    runs = [run(0, 1, 0.90, 0.80), run(1, 1, 0.70, 0.82), run(0, 2, 0.85, 0.90), run(1, 2, 0.80, 0.70),
            run(2, 1, 0.99, 0.99)]  # split 2 ran at one count only: left out of both means
    s = proto.summarise(runs)
    assert s["layers"] == 2 and s["n"] == 2  # mean val 0.825 against 0.80
    assert s["mean"] == pytest.approx(80.0) and s["std"] == pytest.approx(14.142, abs=1e-3)
    assert s["by_layers"] == pytest.approx({1: 81.0, 2: 80.0})
    assert proto.summarise([]) is None


def test_jobs_run_split_by_split(proto):
    todo = proto.jobs(["minesweeper"], ["gcn", "graphattn"], 2, (1, 2))
    assert todo == [("minesweeper", "gcn", 0, 1), ("minesweeper", "gcn", 0, 2), ("minesweeper", "graphattn", 0, None),
                    ("minesweeper", "gcn", 1, 1), ("minesweeper", "gcn", 1, 2), ("minesweeper", "graphattn", 1, None)]


def test_a_job_is_fit_full_graph_on_the_residual_baseline(proto, monkeypatch):
    g = torch.Generator().manual_seed(0)
    n = 60
    data = Data(x=torch.randn(n, 5, generator=g), edge_index=torch.randint(0, n, (2, 200), generator=g),
                y=torch.randint(0, 2, (n,), generator=g))
    data.train_mask, data.val_mask, data.test_mask = (torch.stack([torch.arange(n) % 3 == (k + s) % 3 for s in range(2)], 1)
                                                      for k in range(3))
    monkeypatch.setitem(proto._DATA, "minesweeper", data)
    settings = {**proto.PROTOCOL, "width": 16, "steps": 4, "lr": 1e-2}
    got = proto.run_job("minesweeper", "sage", 1, 2, settings, "cpu")
    torch.manual_seed(1)
    want = fit_full_graph(ResidualGNN(5, 16, 1, 2, "sage", dropout=0.2), data, 1, roc_auc, steps=4, lr=1e-2)
    assert (got["val"], got["test"], got["step"], got["layers"], got["split"]) == (want["val"], want["test"], want["step"], 2, 1)


def test_resume_refuses_another_protocol(tmp_path):
    results = tmp_path / "r.json"
    results.write_text(json.dumps({"protocol": {"width": 8, "dropout": 0.2, "steps": 3, "lr": 3e-5, "layers": [1],
                                                "splits": 10}, "device": "cpu", "runs": {}}))
    data = ROOT.parent / "shared" / "data"  # read before the check: absent data says where the files come from
    done = subprocess.run([sys.executable, str(SCRIPT), "--data", str(data), "--results", str(results), "--resume",
                           "--device", "cpu", "--steps", "4", "--width", "8"], capture_output=True, text=True)
    assert done.returncode != 0
    present = (data / "heterophilous" / "minesweeper.npz").is_file()
    assert ("another protocol" if present else "the files come from") in done.stderr


def test_a_run_never_overwrites_another(tmp_path):
    results = tmp_path / "r.json"
    results.write_text("{}")
    done = subprocess.run([sys.executable, str(SCRIPT), "--data", str(tmp_path), "--results", str(results)],
                          capture_output=True, text=True)
    assert done.returncode != 0 and "holds a run" in done.stderr and results.read_text() == "{}"
