"""A run's folder belongs to one run (runs.py), through train() in this process."""
import csv
import hashlib
import os
from pathlib import Path

import pytest
import torch

from graphattn.text import train as T
from graphattn.text.checkpoint import load_checkpoint, save_checkpoint
from graphattn.text.config import TrainConfig
from graphattn.text.runs import SAFE_ON_RESUME, check_out, resume_config
from graphattn.text.train import train

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(out, **changes) -> TrainConfig:
    config = TrainConfig.from_flat(train_size=160, valid_size=8, test_size=8, d_model=32, num_heads=4, layers=1, ff=64,
                                   batch_size=32, warmup=20, lr_factor=2.0, steps=4, eval_every=2, max_len=24, out=str(out),
                                   progress=False)
    return config.replace(**changes)


def digests(folder) -> dict:
    """md5 of every file in ``folder``, hidden ones included."""
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir())}


def log_runs(folder) -> list:
    with open(Path(folder) / "log.csv", newline="") as f:
        return [row["run"] for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def old_run(tmp_path_factory):
    """A finished run whose files the tests below must not lose."""
    out = tmp_path_factory.mktemp("old") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(tiny(out))
    finally:
        torch.set_num_threads(threads)
    return out


def copy_of(old_run, tmp_path) -> Path:
    out = tmp_path / "run"
    out.mkdir(parents=True)
    for p in old_run.iterdir():
        (out / p.name).write_bytes(p.read_bytes())
    return out


def test_a_new_run_refuses_a_folder_that_holds_one(old_run, tmp_path):
    out = copy_of(old_run, tmp_path)
    before = digests(out)
    with pytest.raises(ValueError, match=r"'.*run' holds a run: pass --resume to continue it, or --overwrite to "
                                         r"replace it$"):
        train(tiny(out, seed=1))
    assert digests(out) == before
    with pytest.raises(ValueError, match="give one of them"):
        check_out(tiny(out, resume=True, overwrite=True))


class Stop(Exception):
    pass


def test_overwrite_touches_nothing_before_the_first_checkpoint(old_run, tmp_path, monkeypatch):
    out = copy_of(old_run, tmp_path)
    before = digests(out)
    calls = []
    real_step = T.train_step

    def stop_at_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # before the first validation, at step 2
            raise Stop
        return real_step(*args, **kwargs)

    monkeypatch.setattr(T, "train_step", stop_at_second)
    with pytest.raises(Stop):
        train(tiny(out, seed=1, overwrite=True))
    assert digests(out) == before  # and no hidden log is left behind
    monkeypatch.undo()
    result = train(tiny(out, seed=1, overwrite=True, eval_every=3))
    run_id = load_checkpoint(out / "last.pt")["run_id"]
    assert load_checkpoint(out / "best.pt")["run_id"] == run_id != load_checkpoint(old_run / "last.pt")["run_id"]
    assert log_runs(out) == [run_id] * 4 and result.step == 4
    assert sorted(p.name for p in out.iterdir()) == ["attention.png", "best.pt", "curves.png", "last.pt", "log.csv"]


def test_a_stale_best_checkpoint_goes_when_the_new_run_writes_none(old_run, tmp_path, monkeypatch):
    out = copy_of(old_run, tmp_path)
    monkeypatch.setattr(T, "_validate", _never_better(T._validate))
    train(tiny(out, seed=1, overwrite=True, steps=2))
    assert load_checkpoint(out / "last.pt")["run_id"] != load_checkpoint(old_run / "last.pt")["run_id"]
    assert not (out / "best.pt").exists()  # the old run's best went with it: it is not this run's


def _never_better(validate):
    def wrapped(run):
        run.best = float("inf")  # no score beats it: best.pt is never written by this run
        return validate(run)
    return wrapped


def test_resume_refuses_a_log_or_best_checkpoint_of_another_run(old_run, tmp_path):
    other = tmp_path / "other"
    train(tiny(other, seed=1))
    out = copy_of(old_run, tmp_path)
    (out / "log.csv").write_bytes((other / "log.csv").read_bytes())
    before = digests(out)
    with pytest.raises(ValueError, match="holds rows of another run .* resuming would splice two runs"):
        train(tiny(out, steps=6, resume=True))
    assert digests(out) == before
    out = copy_of(old_run, tmp_path / "b")
    (out / "best.pt").write_bytes((other / "best.pt").read_bytes())
    with pytest.raises(ValueError, match="best.pt' belongs to run"):
        train(tiny(out, steps=6, resume=True))


def test_resume_lists_each_changed_setting_and_takes_the_safe_ones(old_run, tmp_path):
    out = copy_of(old_run, tmp_path)
    before = digests(out)
    with pytest.raises(ValueError) as info:
        train(tiny(out, resume=True, d_model=64, num_heads=8, tokenizer="char", steps=6))
    message = str(info.value)
    for part in ("--d-model 64 (checkpoint: 32)", "--num-heads 8 (checkpoint: 4)", "--tokenizer 'char' (checkpoint: 'auto')",
                 "safe to change on resume: --steps, --time-limit", "--eval-every", "--threads"):
        assert part in message
    assert "--steps 6" not in message and digests(out) == before
    # given: the fields set on the command line, even where they equal TrainConfig's defaults
    saved = tiny(out)
    with pytest.raises(ValueError, match=r"--d-model 128 \(checkpoint: 32\)"):
        resume_config(saved, TrainConfig.from_flat(out=str(out), resume=True), given=["d_model"])
    merged = resume_config(saved, TrainConfig.from_flat(out=str(out), resume=True, steps=9, eval_every=3), given=["steps", "eval_every"])
    assert (merged.optim.steps, merged.run.eval_every, merged.model.d_model) == (9, 3, 32)
    assert resume_config(saved, TrainConfig.from_flat(out=str(out), resume=True), given=[]).run.eval_every == 2
    assert {"steps", "time_limit", "eval_every"} <= set(SAFE_ON_RESUME)
    result = train(tiny(out, resume=True, steps=6, eval_every=3))
    assert result.step == 6 and len(set(log_runs(out))) == 1 and len(log_runs(out)) == 6


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_checkpoints_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = save_checkpoint({"w": torch.zeros(2)}, tmp_path / "c.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_progress_outside_a_terminal_is_log_lines(tmp_path, caplog, capsys):
    with caplog.at_level("INFO", logger="graphattn"):
        train(tiny(tmp_path / "p", progress=True, steps=40, eval_every=20))
    lines = [r.getMessage() for r in caplog.records if "tokens/s" in r.getMessage()]
    assert [line.split(":")[0] for line in lines] == [f"step {s}/40" for s in range(2, 41, 2)]
    assert "\r" not in capsys.readouterr().err  # no bar frames where no terminal is
    caplog.clear()
    with caplog.at_level("INFO", logger="graphattn"):
        train(tiny(tmp_path / "q", progress=False, steps=4))
    assert not [r for r in caplog.records if "tokens/s" in r.getMessage()]


def test_resume_refuses_a_file_that_is_no_log(old_run, tmp_path):
    out = copy_of(old_run, tmp_path)
    (out / "log.csv").write_text("not,a\nlog,at all\n")
    with pytest.raises(ValueError, match="log.csv' is not a training log"):
        train(tiny(out, steps=6, resume=True))
