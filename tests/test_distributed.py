"""Data-parallel training (distributed.py, and train.py under torchrun's environment).

Processes are real: the tests start ``tests/dist_worker.py`` once per rank with the variables
torchrun sets, on 127.0.0.1 only (gloo on the loopback interface), and compare what they did
with runs of one process in the test itself. Dropout is off so that steps are deterministic.
"""
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from graphattn import distributed
from graphattn.loader import LengthBucketSampler
from graphattn.text.checkpoint import load_checkpoint
from graphattn.text.config import TrainConfig
from graphattn.text.train import split_batch, train

WORKER = Path(__file__).with_name("dist_worker.py")


def tiny(out, **changes) -> TrainConfig:
    config = TrainConfig.from_flat(train_size=160, valid_size=8, test_size=8, d_model=32, num_heads=4, layers=1, ff=64,
                                   dropout=0.0, batch_size=16, warmup=20, lr_factor=2.0, steps=3, eval_every=3, max_len=24,
                                   out=str(out), progress=False, device="cpu")
    return config.replace(**changes)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_env(rank: int, world_size: int, port: int) -> dict:
    return os.environ | {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size),
                         "LOCAL_WORLD_SIZE": str(world_size), "MASTER_ADDR": "127.0.0.1",
                         "MASTER_PORT": str(port), "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}


def launch(tmp_path, config: TrainConfig, world_size: int = 2, fail=None, wait: float = 90, ranks=None) -> list:
    """Run ``config`` in ``world_size`` worker processes; the result dicts of ``ranks`` (default:
    all; ``None`` for one that had not finished by ``wait`` seconds). The others are then killed,
    as torchrun kills the rest of a job when one process fails."""
    result_dir = tmp_path / "results"
    result_dir.mkdir(exist_ok=True)
    spec = json.dumps({"config": config.to_flat(), "fail": fail, "result_dir": str(result_dir)})
    port = free_port()
    # stderr to files, not pipes: a pipe read only at the end fills up (64 KiB) and blocks a
    # process that logs a lot, as a rank whose peer failed may; the test then saw it as hung.
    procs = [subprocess.Popen([sys.executable, str(WORKER), spec], env=local_env(rank, world_size, port),
                              stdout=subprocess.DEVNULL, stderr=open(result_dir / f"rank{rank}.err", "w"))
             for rank in range(world_size)]
    deadline = time.monotonic() + wait
    results = []
    try:
        for rank in range(world_size) if ranks is None else ranks:
            proc = procs[rank]
            path = result_dir / f"rank{rank}.json"
            while proc.poll() is None and not path.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            results.append(json.loads(path.read_text()) if path.exists() else None)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return results


def log_rows(out) -> list:
    with open(Path(out) / "log.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_same_weights(path_a, path_b, atol=1e-6):
    """Equal parameters, except the bias of the key projection.

    Adding a constant to every key's score leaves a softmax unchanged, so that bias has a
    gradient of exactly zero in exact arithmetic; in floating point it gets rounding noise
    (~1e-10) that Adam's normalisation turns into steps of +-lr, different for any other order
    of summation (as for ``nn.MultiheadAttention``). It cannot change the output.
    """
    a, b = load_checkpoint(path_a)["model"], load_checkpoint(path_b)["model"]
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        if name.endswith("in_proj_bias"):
            d = x.numel() // 3
            x, y = torch.cat([x[:d], x[2 * d:]]), torch.cat([y[:d], y[2 * d:]])
        torch.testing.assert_close(x, y, rtol=0, atol=atol, msg=name)


# --- Pure pieces -------------------------------------------------------------------------------


@pytest.mark.parametrize("n,world_size", [(100, 2), (97, 3), (16, 4)])
def test_sampler_shares_are_the_global_batches(n, world_size):
    lengths = torch.randint(1, 40, (n,), generator=torch.Generator().manual_seed(n)).tolist()
    full = list(LengthBucketSampler(lengths, batch_size=8, seed=3))
    shares = [list(LengthBucketSampler(lengths, batch_size=8, seed=3, num_replicas=world_size, rank=r))
              for r in range(world_size)]
    assert len({len(s) for s in shares}) == 1  # every rank the same number of steps
    covered = sorted(i for s in shares for b in s for i in b)
    assert covered == list(range(n))  # disjoint, nothing lost, nothing repeated
    assert all(b for s in shares for b in s)  # no empty share
    if all(len(b) >= world_size for b in full):  # no merging needed: step i is full batch i
        for i, batch in enumerate(full):
            assert sorted(j for s in shares for j in s[i]) == sorted(batch)


def test_split_batch_deals_interleaved():
    assert split_batch(list(range(7)), 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert split_batch([5], 3) == [[5]]  # empty micro-batches are dropped
    assert split_batch([1, 2], 1) == [[1, 2]]


def test_gather_shards_and_all_sum_in_one_process():
    ctx = distributed.Context()
    assert distributed.gather_shards([1, 2, 3], ctx) == [1, 2, 3]
    assert distributed.all_sum([1, 2.5], ctx) == [1.0, 2.5]


def test_init_without_torchrun_is_one_process(monkeypatch):
    for name in distributed.ENV:
        monkeypatch.delenv(name, raising=False)
    ctx = distributed.init("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)


def test_init_errors(monkeypatch):
    with pytest.raises(ValueError, match="device"):
        distributed.init("tpu")
    with pytest.raises(ValueError, match="timeout"):
        distributed.init("cpu", timeout=0)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="torchrun"):
        distributed.init("cpu")
    monkeypatch.setenv("RANK", "two")
    with pytest.raises(ValueError, match="RANK"):
        distributed.init("cpu")
    if not torch.cuda.is_available():
        monkeypatch.delenv("WORLD_SIZE")
        monkeypatch.delenv("RANK")
        with pytest.raises(ValueError, match="no GPU"):
            distributed.init("cuda")


def test_config_refuses_bad_distributed_options(tmp_path):
    for changes, message in [({"accumulate": 0}, "accumulate"), ({"device": "gpu"}, "device"),
                             ({"precision": "fp16"}, "precision"), ({"dist_timeout": 0}, "dist_timeout")]:
        with pytest.raises(ValueError, match=message):
            train(tiny(tmp_path, **changes))


# --- One process: accumulation and precision ------------------------------------------------------


def test_accumulation_equals_the_large_batch(tmp_path):
    large = train(tiny(tmp_path / "large", batch_size=32, steps=4, eval_every=4))
    accumulated = train(tiny(tmp_path / "acc", batch_size=16, accumulate=2, steps=4, eval_every=4))
    assert accumulated.losses == pytest.approx(large.losses, abs=1e-6)
    assert_same_weights(large.paths["last"], accumulated.paths["last"])
    small = train(tiny(tmp_path / "small", batch_size=16, steps=4, eval_every=4))
    assert small.losses[1:] != pytest.approx(large.losses[1:], abs=1e-3)  # the comparison can fail


def test_bf16_autocast_trains_close_to_fp32(tmp_path):
    fp32 = train(tiny(tmp_path / "fp32", steps=8, eval_every=8))
    bf16 = train(tiny(tmp_path / "bf16", steps=8, eval_every=8, precision="bf16"))
    assert all(torch.isfinite(torch.tensor(bf16.losses)))
    # bfloat16 keeps 8 bits of mantissa: the losses agree to about 1%, not to 1e-6.
    assert bf16.losses == pytest.approx(fp32.losses, rel=0.03)
    assert bf16.losses != fp32.losses
    ckpt = load_checkpoint(bf16.paths["last"])
    assert all(v.dtype == torch.float32 for v in ckpt["model"].values() if v.is_floating_point())


# --- Several processes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """3 steps of 2 processes with batch 16 each, validated and checkpointed at step 3."""
    tmp = tmp_path_factory.mktemp("ddp")
    config = tiny(tmp / "ddp")
    results = launch(tmp, config)
    return config, results


def test_two_processes_equal_one_process_with_twice_the_batch(two_process_run, tmp_path):
    config, results = two_process_run
    assert all(r is not None and "error" not in r for r in results), results
    one = train(tiny(tmp_path / "one", batch_size=32))
    for r in results:  # every rank reports the global loss and the gathered validation
        assert r["step"] == 3
        assert r["losses"] == pytest.approx(one.losses, abs=1e-6)
        assert r["valid"] == pytest.approx(one.valid)
    assert_same_weights(one.paths["last"], Path(config.run.out) / "last.pt")
    ranks_ckpt = load_checkpoint(Path(config.run.out) / "last.pt")
    assert ranks_ckpt["data"]["world_size"] == 2 and ranks_ckpt["data"]["global_batch"]["batch_size"] == 32
    assert len(ranks_ckpt["rng_ranks"]) == 2
    assert [r["valid_bleu"] for r in log_rows(config.run.out)] == [r["valid_bleu"] for r in log_rows(one.paths["log"].parent)]


def test_only_rank_zero_writes(two_process_run):
    config, results = two_process_run
    assert results[1]["writes"] == []
    assert {"save_checkpoint", "plot_curves", "plot_attention", "_open_log"} <= set(results[0]["writes"])
    assert [int(r["step"]) for r in log_rows(config.run.out)] == [1, 2, 3]  # one writer: no duplicate rows


def test_two_process_checkpoint_resumes_in_one_process(two_process_run, tmp_path):
    config, _ = two_process_run
    out = tmp_path / "resumed"
    shutil.copytree(config.run.out, out)
    # The global batch (32) comes from the checkpoint: one process now takes all of it, as
    # --accumulate 2 with micro-batches of 16 would.
    resumed = train(tiny(out, steps=6, resume=True, accumulate=2))
    continuous = train(tiny(tmp_path / "continuous", batch_size=32, steps=6, eval_every=3))
    assert resumed.step == 6 and len(resumed.losses) == 3
    assert resumed.losses == pytest.approx(continuous.losses[3:], abs=1e-6)
    assert_same_weights(continuous.paths["last"], resumed.paths["last"])


@pytest.mark.parametrize("how", ["hang", "crash"])
def test_a_failed_process_fails_the_run_instead_of_hanging(tmp_path, how):
    config = tiny(tmp_path / how, steps=4, eval_every=4, dist_timeout=4.0)
    results = launch(tmp_path, config, fail={"rank": 1, "step": 2, "how": how}, wait=60,
                     ranks=[0] if how == "hang" else [0, 1])
    assert results[0] is not None, "rank 0 hung"
    # The crashed rank's own error reaches its caller, except in a rare race (about 1 run in 10
    # under load) where a gloo thread holds the GIL while its peer has already left, and the
    # process stalls in torch's teardown; under torchrun the agent then ends it with rank 0.
    if how == "crash" and results[1] is not None:
        assert results[1]["error"] == "RuntimeError" and results[1]["message"] == "injected failure"
    assert results[0]["error"] == "DistributedError"
    assert "rank 0 of 2" in results[0]["message"] and "timeout" in results[0]["message"]
    # Rank 0's result arriving at all bounds its wall time by ``wait``; the whole launch may take
    # that long only because the stalled crashed rank above is waited for, which is not rank 0 hanging.
    assert results[0]["seconds"] < 40


def torchrun_command() -> list:
    # torchrun's own module, so the test runs wherever torch does (no script on PATH needed).
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
            f"--master-port={free_port()}"]


def test_torchrun_runs_a_graph_example_unchanged(tmp_path):
    example = Path(__file__).parents[1] / "examples" / "long_range.py"
    cmd = torchrun_command() + [str(example), "--depths", "2", "--train", "64", "--test", "16", "--epochs", "2",
                                "--patterns", "graph", "--baselines", "gcn", "--out", str(tmp_path / "t.md"),
                                "--plot", str(tmp_path / "t.png")]
    env = os.environ | {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("depth 2  ") == 2  # one line per model, from rank 0 only
    assert (tmp_path / "t.md").read_text().count("| graphattn graph |") == 1 and (tmp_path / "t.png").is_file()


def test_torchrun_runs_the_cli_unchanged(tmp_path):
    flags = ["--train-size", "160", "--valid-size", "8", "--test-size", "8", "--d-model", "32", "--layers", "1",
             "--ff", "64", "--dropout", "0", "--batch-size", "16", "--warmup", "20", "--max-len", "24",
             "--threads", "1", "--no-progress", "--steps", "2", "--eval-every", "2", "--device", "cpu",
             "--out", str(tmp_path / "cli")]
    env = os.environ | {"GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    cmd = torchrun_command() + ["-m", "graphattn.cli", "train", *flags]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # rank 0 only: the result on stdout, the library's messages through logging on stderr
    assert proc.stdout.count("best validation BLEU") == 1 and proc.stderr.count("step 2: valid BLEU") == 1
    ckpt = load_checkpoint(tmp_path / "cli" / "last.pt")
    assert ckpt["step"] == 2 and ckpt["data"]["world_size"] == 2
