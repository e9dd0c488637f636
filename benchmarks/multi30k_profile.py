"""Where a training step's time goes on Multi30k, and what the tokenizer choices do to lengths.

Usage: python benchmarks/multi30k_profile.py [--data DIR] [--steps 20] [--threads 1]

Prints (1) for BPE tokenizers of several settings, tokens per sentence and training seconds;
(2) with the recipe's tokenizers and model (graphattn.text.multi30k.recipe_config), the time of
the parts of training: tokenising the corpus (done once per run, not per step), building a
batch, one optimizer step, and greedy validation of the recipe's subset; (3) padding: the
tokens a padded batch would compute with length-bucketed batches (LengthBucketSampler, what the
loop uses) and with random batches of the same number of sentences, against the real tokens
(the flat batches of the loop compute no padding at all).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from multi30k import default_data  # noqa: E402  (the example's --data default)

from graphattn.loader import LengthBucketSampler  # noqa: E402
from graphattn.text.build import build_model, build_tokenizers, load_task  # noqa: E402
from graphattn.text.data import ParallelDataset, flat_collate  # noqa: E402
from graphattn.text.evaluation import translation_scores  # noqa: E402
from graphattn.text.multi30k import recipe_config  # noqa: E402
from graphattn.text.tokenizer import PAD_ID, Tokenizer  # noqa: E402
from graphattn.text.train import noam_lambda, train_step  # noqa: E402


def tokenizer_table(pairs: list) -> None:
    src, tgt = [s for s, _ in pairs], [t for _, t in pairs]
    print(f"{len(pairs):,} training pairs; words a sentence: en {sum(len(s.split()) for s in src) / len(src):.1f}, "
          f"de {sum(len(t.split()) for t in tgt) / len(tgt):.1f}")
    print("| BPE | min_frequency | vocab en/de | tokens a sentence en/de | longest en/de | seconds |")
    print("|---|---|---|---|---|---|")
    for vocab, min_frequency, joint in ((8000, None, False), (8000, 2, False), (8000, 2, True), (4000, 2, False),
                                        (16000, 2, True)):
        tic = time.perf_counter()
        if joint:
            a = b = Tokenizer.train(src + tgt, "bpe", vocab, min_frequency)
        else:
            a, b = Tokenizer.train(src, "bpe", vocab, min_frequency), Tokenizer.train(tgt, "bpe", vocab, min_frequency)
        ls, lt = [len(x) for x in a.encode_batch(src)], [len(x) for x in b.encode_batch(tgt)]
        print(f"| {'joint' if joint else 'per side'} {vocab} | {min_frequency or '2% of lines'} | {len(a)}/{len(b)} | "
              f"{sum(ls) / len(ls):.1f}/{sum(lt) / len(lt):.1f} | {max(ls)}/{max(lt)} | {time.perf_counter() - tic:.1f} |")


def padding(dataset: ParallelDataset, batches: list) -> str:
    real = padded = 0
    for items in batches:
        s = [len(dataset.src[i]) for i in items]
        t = [len(dataset.tgt[i]) + 1 for i in items]
        real += sum(s) + sum(t)
        padded += len(items) * (max(s) + max(t))
    return f"{padded / real:.2f}x the real tokens"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = recipe_config(args.data)
    data = load_task(config)
    tokenizer_table(data["train"])

    tic = time.perf_counter()
    src_tok, tgt_tok = build_tokenizers(config, data)
    trained = time.perf_counter() - tic
    tic = time.perf_counter()
    dataset = ParallelDataset(data["train"], src_tok, tgt_tok, config.data.max_len)
    encoded = time.perf_counter() - tic
    sampler = LengthBucketSampler(dataset.lengths, max_tokens=config.optim.max_tokens, seed=0)
    batches = list(sampler)
    random = torch.randperm(len(dataset)).split(max(1, round(len(dataset) / len(batches))))
    print(f"\nTokenizers trained in {trained:.1f} s; the corpus encoded once in {encoded:.1f} s "
          f"(per step it would cost {encoded / len(batches) * 1000:.0f} ms); {len(batches)} batches an epoch")
    print(f"Padded batches would compute: length-bucketed {padding(dataset, batches)}, random "
          f"{padding(dataset, [b.tolist() for b in random])}; the flat batches compute none")

    model = build_model(config, len(src_tok), len(tgt_tok))
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9)
    rate = noam_lambda(config.model.d_model, config.optim.warmup, config.optim.lr_factor)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    loss_fn = nn.CrossEntropyLoss(ignore_index=PAD_ID, label_smoothing=config.optim.label_smoothing)
    collate_s = step_s = tokens = 0.0
    for items in batches[: args.steps]:
        tic = time.perf_counter()
        batch = flat_collate([dataset[i] for i in items])
        collate_s += time.perf_counter() - tic
        tic = time.perf_counter()
        train_step(model, batch, optimizer, loss_fn, config.optim.clip_norm)
        scheduler.step()
        step_s += time.perf_counter() - tic
        tokens += batch.num_tokens
    n = min(args.steps, len(batches))
    print(f"Per step ({n} steps, {tokens / n:.0f} tokens each): batch building {collate_s / n * 1000:.1f} ms, "
          f"forward+backward+update {step_s / n * 1000:.0f} ms ({tokens / step_s:,.0f} tokens/s)")
    tic = time.perf_counter()
    translation_scores(model, src_tok, tgt_tok, data["valid"][: config.run.valid_subset], config.data.max_len)
    print(f"Greedy validation of {config.run.valid_subset} pairs after {n} steps: {time.perf_counter() - tic:.1f} s "
          f"(an untrained model decodes to max_len; a trained one stops at EOS)")


if __name__ == "__main__":
    main()
