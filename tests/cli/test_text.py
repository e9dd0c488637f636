"""``graphattn train / translate / evaluate / generate`` as a user runs them: a process in a
temporary folder, its exit status, its one-line errors, and the files that must survive it."""
import csv
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from graphattn.text.checkpoint import load_checkpoint, save_checkpoint
from graphattn.text.config import TrainConfig
from graphattn.text.train import train

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--train-size", "160", "--valid-size", "8", "--test-size", "8", "--d-model", "32", "--layers", "1", "--ff", "64",
        "--batch-size", "32", "--warmup", "20", "--max-len", "24", "--threads", "1"]


def cli(*args, cwd, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "graphattn.cli", *map(str, args)], cwd=cwd, input=stdin, text=True,
                          capture_output=True, env=env, timeout=600)


def one_line_error(proc, message: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    assert message in lines[0], lines[0]


def digests(folder) -> dict:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny translation run and a tiny language model, trained in this process."""
    root = tmp_path_factory.mktemp("runs")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig.from_flat(train_size=160, valid_size=8, test_size=8, d_model=32, num_heads=4, layers=1, ff=64,
                                    batch_size=32, warmup=20, steps=4, eval_every=2, max_len=24, out=str(root / "mt"),
                                    progress=False))
        text = []
        for i in range(4):
            (root / f"m{i}.py").write_text("".join(f"def f{i}_{j}(x):\n    return x + {j}\n" for j in range(10)))
            text.append(str(root / f"m{i}.py"))
        train(TrainConfig.from_flat(task="lm", text=text, context=16, d_model=16, num_heads=2, layers=1, ff=32, steps=2,
                                    eval_every=2, vocab_size=270, valid_fraction=0.25, out=str(root / "lm"), progress=False))
    finally:
        torch.set_num_threads(threads)
    return root


def copy_run(src, dst) -> Path:
    dst.mkdir(parents=True)
    for p in Path(src).iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_train_refuses_a_folder_that_holds_a_run(runs, tmp_path):
    out = copy_run(runs / "mt", tmp_path / "old")
    before = digests(out)
    proc = cli("train", *TINY, "--steps", "2", "--out", "old", cwd=tmp_path)
    one_line_error(proc, "'old' holds a run: pass --resume to continue it, or --overwrite to replace it")
    assert digests(out) == before


def test_overwrite_replaces_the_run_and_progress_in_a_file_is_lines(runs, tmp_path):
    out = copy_run(runs / "mt", tmp_path / "old")
    old_id = load_checkpoint(out / "last.pt")["run_id"]
    proc = cli("train", *TINY, "--steps", "6", "--eval-every", "3", "--seed", "1", "--overwrite", "--out", "old",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    new_id = load_checkpoint(out / "last.pt")["run_id"]
    assert new_id != old_id and load_checkpoint(out / "best.pt")["run_id"] == new_id
    with open(out / "log.csv", newline="") as f:
        assert [(r["step"], r["run"]) for r in csv.DictReader(f)] == [(str(s), new_id) for s in range(1, 7)]
    # stderr is a pipe, not a terminal: progress comes as lines, no carriage-return frames
    assert "\r" not in proc.stderr and "step 6/6: loss" in proc.stderr
    assert "step 3: valid BLEU" in proc.stderr.splitlines()[2]


def test_resume_refuses_changed_settings(runs, tmp_path):
    out = copy_run(runs / "mt", tmp_path / "old")
    before = digests(out)
    proc = cli("train", "--resume", "--out", "old", "--steps", "8", "--d-model", "64", "--tokenizer", "char",
               "--max-len", "24", cwd=tmp_path)  # --max-len as trained: not a change
    one_line_error(proc, "differ from it: --tokenizer 'char' (checkpoint: 'auto'), --d-model 64 (checkpoint: 32). ")
    assert "--max-len" not in proc.stderr.split("safe to change")[0] and "--eval-every" in proc.stderr
    assert digests(out) == before
    proc = cli("train", "--resume", "--out", "old", "--steps", "6", "--eval-every", "3", "--threads", "1",
               "--no-progress", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("6 steps"), proc.stderr


def test_resume_refuses_a_log_of_another_run(runs, tmp_path):
    out = copy_run(runs / "mt", tmp_path / "old")
    with open(out / "log.csv") as f:
        rows = f.read().replace(load_checkpoint(out / "last.pt")["run_id"], "0123456789ab")
    (out / "log.csv").write_text(rows)
    before = digests(out)
    one_line_error(cli("train", "--resume", "--out", "old", "--steps", "6", cwd=tmp_path),
                   "holds rows of another run (0123456789ab)")
    assert digests(out) == before


def bad_files(folder: Path, runs: Path) -> None:
    (folder / "random.pt").write_bytes(torch.randint(0, 256, (3000,), generator=torch.Generator().manual_seed(0),
                                                     dtype=torch.uint8).numpy().tobytes())
    ckpt = load_checkpoint(runs / "mt" / "best.pt")
    state = ckpt["model"]
    names = list(state)
    state["extra.weight"] = torch.zeros(1)
    for name in names[:5]:
        del state[name]
    state[names[6]] = torch.zeros(3)
    save_checkpoint(ckpt, folder / "mismatch.pt")
    (folder / "nul.txt").write_bytes(b"\x00" * 64)
    (folder / "ok.txt").write_text("one\ntwo\nthree\n")
    (folder / "a_dir").mkdir()


@pytest.mark.parametrize("args, stdin, message", [
    (["generate", "--checkpoint", "{lm}"], "", "no prompt: give prompts as arguments or one a line on stdin"),
    (["translate", "--checkpoint", "random.pt", "one"], "", "'random.pt' is not a readable checkpoint: not a torch file"),
    (["translate", "--checkpoint", "mismatch.pt", "one"], "",
     "5 missing keys (transformer.encoder.layers.0.self_attn.in_proj_weight, "),
    (["translate", "--checkpoint", "a_dir", "one"], "", "'a_dir' is a directory, not a checkpoint file"),
    (["train", "--src", "a_dir", "--tgt", "ok.txt"], "", "src: 'a_dir' is a directory, not a file"),
    (["train", "--src", "nul.txt", "--tgt", "ok.txt"], "", "'nul.txt' holds NUL bytes (line 1): a binary file"),
    (["train", "--encoder-pattern", "graph"], "", "encoder_pattern 'graph' follows a graph's edges, and text has none: "
                                                  "use a sequence pattern"),
    (["train", "--valid-fraction", "0"], "", "valid_fraction must be in (0, 1), got 0.0"),
    (["train", "--task", "lm", "--src", "ok.txt", "--tgt", "ok.txt", "--text", "ok.txt"], "",
     "task 'lm' learns text files (--text), not parallel files (--src/--tgt)"),
    (["generate", "--checkpoint", "{lm}", "x", "--top-p", "1.5"], "", "top_p must be in (0, 1], got 1.5"),
    (["compare", "--patterns", ""], "", "--patterns must be comma-separated pattern specs (e.g. dense,window:16), "
                                        "got ''"),
])
def test_bad_input_is_one_clear_line(runs, tmp_path, args, stdin, message):
    bad_files(tmp_path, runs)
    args = [a.replace("{lm}", str(runs / "lm" / "best.pt")) for a in args]
    before = digests(tmp_path)
    one_line_error(cli(*args, cwd=tmp_path, stdin=stdin), message)
    assert digests(tmp_path) == before and "Please" not in message


def test_translate_keeps_empty_lines_and_warns_once(runs, tmp_path):
    long = " ".join(["one hundred and"] * 12) + " one"
    proc = cli("translate", "--checkpoint", runs / "mt" / "best.pt", "--max-len", "8", cwd=tmp_path,
               stdin=f"\n{long}\n  \nzorglub two\n{long}\n")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.split("\n")
    assert len(out) == 6 and out[0] == "" and out[2] == "" and out[5] == ""  # five lines, the blank ones blank
    warnings = proc.stderr.strip().splitlines()
    assert sum("2 of 3 sentences are longer than --max-len (8) tokens" in w for w in warnings) == 1
    assert sum("1 of 3 sentences hold 1 token(s) the source tokenizer does not know" in w for w in warnings) == 1
