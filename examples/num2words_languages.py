"""English number words into several languages through ``graphattn train --src/--tgt``, as a new user would.

Usage: python examples/num2words_languages.py [--languages fr,de,nl,ja] [--time-limit 240] [--out DIR]

For each language, ``num2words`` writes the same numbers as the numbers demo (20 000 training,
500 validation, and two test sets of 1 000 never seen in training: uniform draws, and numbers
with a round thousands or units part) into plain parallel text files, one sentence a line. Then
the command line trains on them with its defaults for files (a byte-level BPE tokenizer per side,
trained on the training text) and the demo's model and schedule, and ``graphattn evaluate``
scores both test files. Several of these languages write every number as one compound word
(German "zweihunderteinundsiebzigtausend", Dutch, Japanese "二十七万千八百二十八"), which word
tokens cannot learn at all (every test sentence is a word never seen), and whose BLEU is
counted over characters (word 4-grams of one-word sentences do not exist).

Prints a table of steps, training time, tokens/s, BLEU and exact match per language; the files,
checkpoints and logs stay in ``--out``. One torch thread per run (``--threads``).
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

from graphattn.text.numbers import normalize, number_splits

#: languages whose num2words writes a whole number (or each of its thousands) as one word
COMPOUND = {"de", "nl", "ja", "it", "hu"}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--languages", default="fr,de,nl,ja", help="num2words codes (default: fr,de,nl,ja)")
    parser.add_argument("--time-limit", type=float, default=240.0, help="seconds of training each (default: 240)")
    parser.add_argument("--steps", type=int, default=800, help="step limit each (default: 800)")
    parser.add_argument("--tokenizer", default="bpe", help="graphattn train --tokenizer (default: bpe)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each run (default: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/languages", help="files, checkpoints, logs (default: runs/languages)")
    return parser.parse_args()


def write_files(lang: str, folder: Path, seed: int) -> dict:
    """``{split: (english file, target file)}`` of the numbers demo's splits in language ``lang``."""
    from num2words import num2words

    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, numbers in number_splits(seed).items():
        src, tgt = folder / f"{split}.en", folder / f"{split}.{lang}"
        src.write_text("".join(normalize(num2words(n, lang="en")) + "\n" for n in numbers), encoding="utf-8")
        tgt.write_text("".join(normalize(num2words(n, lang=lang)) + "\n" for n in numbers), encoding="utf-8")
        files[split] = (str(src), str(tgt))
    return files


def graphattn(*argv: str) -> str:
    """Run the ``graphattn`` command line in a fresh process; its stdout (stderr goes through)."""
    proc = subprocess.run([sys.executable, "-m", "graphattn.cli", *argv], stdout=subprocess.PIPE, text=True)
    if proc.returncode:
        raise RuntimeError(f"graphattn {' '.join(argv[:1])} failed with status {proc.returncode}")
    return proc.stdout


def scores(output: str) -> tuple[float, str, float]:
    """``(BLEU, its tokenization, exact match)`` from ``graphattn evaluate``'s line."""
    bleu, unit, em = re.search(r"BLEU ([\d.]+)(?: \((\w+)\))?\s+exact match ([\d.]+)%", output).groups()
    return float(bleu), unit or "words", float(em)


def main() -> None:
    args = parse_args()
    rows = []
    for lang in args.languages.split(","):
        start = time.perf_counter()
        folder = Path(args.out) / lang
        files = write_files(lang, folder, args.seed)
        print(f"\n== en -> {lang}: e.g. {Path(files['test'][1]).read_text(encoding='utf-8').splitlines()[0]!r}",
              flush=True)
        out = graphattn("train", "--src", files["train"][0], "--tgt", files["train"][1],
                        "--valid-src", files["valid"][0], "--valid-tgt", files["valid"][1],
                        "--tokenizer", args.tokenizer, "--d-model", "128", "--num-heads", "4", "--layers", "3",
                        "--ff", "512", "--batch-size", "128", "--lr-factor", "0.7", "--warmup", "200",
                        "--eval-every", "100", "--steps", str(args.steps), "--time-limit", str(args.time_limit),
                        "--seed", str(args.seed), "--threads", str(args.threads), "--no-progress",
                        "--out", str(folder / "run"), "--overwrite")  # its own folder: a rerun replaces it
        print(out, end="", flush=True)
        steps, seconds, tokens = re.search(r"(\d+) steps \((\d+) s, ([\d,]+) tokens/s", out).groups()
        best = str(folder / "run" / "best.pt")
        uniform = scores(graphattn("evaluate", "--checkpoint", best, "--src", files["test"][0], "--tgt", files["test"][1],
                                   "--threads", str(args.threads)))
        rounds = scores(graphattn("evaluate", "--checkpoint", best, "--src", files["test_round"][0],
                                  "--tgt", files["test_round"][1], "--threads", str(args.threads)))
        rows.append((lang, "yes" if lang in COMPOUND else "no", int(steps), int(seconds), tokens, *uniform, *rounds,
                     time.perf_counter() - start))
        print(f"test BLEU ({uniform[1]}) {uniform[0]:.2f}, exact match {uniform[2]:.1f}%; round numbers BLEU "
              f"{rounds[0]:.2f}, exact match {rounds[2]:.1f}%", flush=True)

    print(f"\nEnglish -> X through `graphattn train --src/--tgt` (--tokenizer {args.tokenizer}, d_model 128, "
          f"3+3 layers, {args.threads} thread(s), at most {args.steps} steps or {args.time_limit:.0f} s of training):\n")
    print("| language | one word a number | steps | training (s) | tokens/s | test BLEU | exact match | round BLEU | "
          "round exact match | wall (s) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for lang, comp, steps, seconds, tokens, bleu, unit, em, rbleu, _, rem, wall in rows:
        print(f"| {lang} | {comp} | {steps} | {seconds} | {tokens} | {bleu:.2f} ({unit}) | {em:.1f}% | {rbleu:.2f} | "
              f"{rem:.1f}% | {wall:.0f} |")


if __name__ == "__main__":
    main()
