"""Speed-up of data-parallel training on the demo task: 2 processes against 1.

Runs ``graphattn train`` with the demo's model (d_model 128, 3+3 layers, global batch 128) for
``--steps`` steps as one process with one thread, one process with two threads, and two processes
(``torchrun --nproc-per-node=2``, gloo on 127.0.0.1) with one thread and batch 64 each, and reports
training tokens/s (validation excluded) and the ratio to one process with one thread.

    python benchmarks/distributed.py [--steps 150] [--repeats 2]
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

MODEL = ["--d-model", "128", "--num-heads", "4", "--layers", "3", "--ff", "512", "--lr-factor", "0.7", "--warmup", "200",
         "--valid-size", "50", "--device", "cpu", "--no-progress"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(name: str, steps: int, out: Path) -> float:
    """Training tokens/s of one configuration (the figure ``graphattn train`` prints)."""
    common = MODEL + ["--steps", str(steps), "--eval-every", str(steps), "--out", str(out / name), "--overwrite"]  # repeats reuse the folder
    env = os.environ | {"GLOO_SOCKET_IFNAME": "lo"}
    if name == "2 processes x 1 thread":
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        cmd = [torchrun, "--nproc-per-node=2", "--master-addr=127.0.0.1", f"--master-port={free_port()}",
               "-m", "graphattn.cli", "train", "--batch-size", "64", "--threads", "1", *common]
        env["OMP_NUM_THREADS"] = "1"
    else:
        threads = "2" if "2 threads" in name else "1"
        cmd = [sys.executable, "-m", "graphattn.cli", "train", "--batch-size", "128", "--threads", threads, *common]
        env["OMP_NUM_THREADS"] = threads
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return float(re.search(r"([\d,]+) tokens/s", proc.stdout).group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    names = ["1 process x 1 thread", "1 process x 2 threads", "2 processes x 1 thread"]
    speeds: dict = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved, so that drifts in machine load hit all alike
            for name in names:
                speeds[name].append(run(name, args.steps, Path(tmp)))
                print(f"{name:24s} {speeds[name][-1]:8,.0f} tokens/s", flush=True)
    base = statistics.median(speeds[names[0]])
    print(f"\n| configuration (global batch 128, {args.steps} steps) | tokens/s (median of {args.repeats}) | vs 1 process x 1 thread |")
    print("|---|---:|---:|")
    for name in names:
        median = statistics.median(speeds[name])
        print(f"| {name} | {median:,.0f} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
