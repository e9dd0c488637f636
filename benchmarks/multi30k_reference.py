"""graphattn's layers against torch.nn.Transformer's on Multi30k EN->DE, at equal wall clock.

Usage: python benchmarks/multi30k_reference.py [--data DIR] [--time-limit 600] [--seeds 0 1] [--beam 4] [--out DIR]

Runs ``examples/multi30k.py`` once per model (graphattn, then ``--reference-torch``) and seed,
each in its own process (so that each peak memory is its own), with the same recipe, data,
tokenizers, loop and budget, one after the other; with ``--parallel`` the two models of a seed run
at the same time, one thread each, so that both see the same load on a shared machine (each then
has one core of two: compare the ratios, not the absolute tokens/s). Prints a markdown table: validation BLEU (all 1,014 pairs, greedy), test 2016 sacreBLEU
(greedy with --beam 1, else beam search with length penalty 0.6), steps, tokens/s, the share of the loop validation took and the peak
resident memory; then the means over the seeds and graphattn / torch ratios. The per-run numbers
stay in OUT/<model>-s<seed>/results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="Multi30k folder (default: examples/multi30k.py's)")
    parser.add_argument("--time-limit", type=float, default=600.0, help="seconds of training per run (default: 600)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--beam", type=int, default=4, help="test beam size (default: 4)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/multi30k-reference"))
    parser.add_argument("--parallel", action="store_true",
                        help="run graphattn and torch of a seed at the same time (needs 2 free cores)")
    return parser.parse_args()


def start(args: argparse.Namespace, model: str, seed: int) -> tuple[subprocess.Popen, Path]:
    out = args.out / f"{model}-s{seed}"
    command = [sys.executable, str(ROOT / "examples" / "multi30k.py"), "--time-limit", str(args.time_limit),
               "--seed", str(seed), "--beam", str(args.beam), "--threads", str(args.threads), "--out", str(out),
               "--no-progress"] + (["--data", args.data] if args.data else []) + (["--reference-torch"] if model == "torch" else [])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "stdout.txt", "w") as log:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT), out


def finish(process: subprocess.Popen, out: Path) -> dict:
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(process.args)} failed (exit {process.returncode}): see {out / 'stdout.txt'}")
    return json.loads((out / "results.json").read_text())


def run_all(args: argparse.Namespace) -> list[dict]:
    results = []
    for seed in args.seeds:
        if args.parallel:
            started = [start(args, model, seed) for model in ("graphattn", "torch")]
            results += [finish(*s) for s in started]
        else:
            results += [finish(*start(args, model, seed)) for model in ("graphattn", "torch")]
    return results


def row(r: dict) -> str:
    share = 100 * r["valid_seconds"] / (r["train_seconds"] + r["valid_seconds"])
    return (f"| {r['model']} | {r['seed']} | {r['valid_bleu']:.2f} | {r['test_bleu']:.2f} | {r['steps']} | "
            f"{r['tokens_per_s']:,.0f} | {share:.1f}% | {r['peak_memory_mb']:.0f} |")


def main() -> None:
    args = parse_args()
    results = run_all(args)
    print(f"{args.time_limit:.0f} s of training per run, {args.threads} thread(s)"
          f"{', graphattn and torch side by side' if args.parallel else ''}; test: beam {args.beam}, "
          f"length penalty 0.6; signature {results[0]['signature']}\n")
    print("| model | seed | valid BLEU | test BLEU | steps | tokens/s | validation share | peak memory (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(row(r))
    mean = {m: {k: statistics.mean(r[k] for r in results if r["model"] == m)
                for k in ("valid_bleu", "test_bleu", "tokens_per_s", "peak_memory_mb")} for m in ("graphattn", "torch")}
    for m, v in mean.items():
        spread = [r["test_bleu"] for r in results if r["model"] == m]
        print(f"\n{m}: mean valid BLEU {v['valid_bleu']:.2f}, test BLEU {v['test_bleu']:.2f} "
              f"(seeds {min(spread):.2f}..{max(spread):.2f}), {v['tokens_per_s']:,.0f} tokens/s, {v['peak_memory_mb']:.0f} MB")
    print(f"graphattn / torch: tokens/s {mean['graphattn']['tokens_per_s'] / mean['torch']['tokens_per_s']:.2f}x, "
          f"test BLEU {mean['graphattn']['test_bleu'] - mean['torch']['test_bleu']:+.2f}")


if __name__ == "__main__":
    main()
