r"""Multi30k (task 1) English -> German: its files, and the training recipe measured on them.

The corpus is image captions with their German translations, 29,000 training, 1,014 validation
and 1,000 test (``test_2016_flickr``) pairs, as ``{train,val,test_2016_flickr}.{en,de}.gz``
(one sentence a line, UTF-8, gzip) from https://github.com/multi30k/dataset, ``data/task1/raw/``.
:func:`multi30k_files` finds them in a folder and :func:`load_multi30k` reads and checks them;
:func:`recipe_config` is the :class:`~graphattn.text.config.TrainConfig` of
``examples/multi30k.py``, whose choices ``docs/translation.md`` derives from validation runs.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Union

from graphattn.text.config import TrainConfig
from graphattn.text.data import read_parallel
from graphattn.utils.checks import check_int

logger = logging.getLogger(__name__)

__all__ = ["SPLITS", "SOURCE", "ENCODER_PATTERNS", "DECODER_PATTERNS", "multi30k_files", "load_multi30k", "recipe_config",
           "compare_patterns"]

#: split -> (file stem, sentence pairs it holds)
SPLITS = {"train": ("train", 29_000), "valid": ("val", 1_014), "test": ("test_2016_flickr", 1_000)}
#: where the files come from
SOURCE = "https://github.com/multi30k/dataset (data/task1/raw/{train,val,test_2016_flickr}.{en,de}.gz)"


def multi30k_files(root: Union[str, os.PathLike], src: str = "en", tgt: str = "de") -> dict:
    """``{split: (source path, target path)}`` of the Multi30k files in ``root``.

    Raises ``FileNotFoundError`` naming the missing files and where to get them.
    """
    root = Path(root)
    files = {split: (root / f"{stem}.{src}.gz", root / f"{stem}.{tgt}.gz") for split, (stem, _) in SPLITS.items()}
    missing = [str(p) for pair in files.values() for p in pair if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"Multi30k files not found: {', '.join(missing)}; get them from {SOURCE}")
    return files


def load_multi30k(root: Union[str, os.PathLike], src: str = "en", tgt: str = "de", check_counts: bool = True) -> dict:
    """``{"train", "valid", "test"}`` lists of ``(source, target)`` sentence pairs read from ``root``.

    With ``check_counts`` every split must hold its published number of pairs (:data:`SPLITS`),
    else ``ValueError`` naming the file: a truncated download would otherwise train and score quietly
    on less. Files that are not gzip or not UTF-8 raise as :func:`~graphattn.text.data.read_text` says.
    """
    pairs = {}
    for split, (src_path, tgt_path) in multi30k_files(root, src, tgt).items():
        pairs[split] = read_parallel(src_path, tgt_path)
        expected = SPLITS[split][1]
        if check_counts and len(pairs[split]) != expected:
            raise ValueError(f"{str(src_path)!r} and {str(tgt_path)!r} hold {len(pairs[split])} sentence pairs, "
                             f"Multi30k's {split} split has {expected}")
    return pairs


def recipe_config(root: Union[str, os.PathLike], **overrides) -> TrainConfig:
    """The training run of ``examples/multi30k.py`` on the files in ``root``; ``overrides`` replace
    fields by their flat names (``time_limit``, ``seed``, ``out``, ``reference_torch``...: the names of
    ``graphattn train``'s flags, :data:`~graphattn.text.config.FIELD_ROLES`).

    Why each value: ``docs/translation.md`` (validation runs on 1 thread). In short: BPE with
    merges down to pairs seen twice (the 2 % floor suits number words, not captions: it leaves
    ~600 tokens a side and sentences twice as long), batches by tokens (captions vary from 4 to
    40 tokens), validation greedy on a fixed subset at intervals of time so that it stays a small
    share of the budget, and the best checkpoint by that validation BLEU.
    """
    files = multi30k_files(root)
    config = TrainConfig.from_flat(
        src=str(files["train"][0]), tgt=str(files["train"][1]),
        valid_src=str(files["valid"][0]), valid_tgt=str(files["valid"][1]),
        tokenizer="bpe", vocab_size=4000, min_frequency=2, shared_vocab=False,
        d_model=128, num_heads=4, layers=3, ff=512, dropout=0.1, label_smoothing=0.1,
        max_tokens=2500, lr_factor=0.25, warmup=200, clip_norm=1.0, max_len=64,
        steps=1_000_000, time_limit=900.0, eval_every=1_000_000, eval_seconds=120.0, valid_subset=200,
        out="runs/multi30k",
    )
    return config.replace(**overrides)


#: the encoder patterns and decoder patterns the comparison trains (issue 22)
ENCODER_PATTERNS = ("dense", "window:4", "window:8", "bigbird:3:2:3:0", "block:8")
DECODER_PATTERNS = ("causal", "causal&window:8")


def compare_patterns(root: Union[str, os.PathLike], out: Union[str, os.PathLike], time_limit: float = 120.0,
                     seed: int = 0, encoder_patterns=ENCODER_PATTERNS, decoder_patterns=DECODER_PATTERNS,
                     progress: bool = False, check_counts: bool = True, jobs: int = 1, threads: int = 1,
                     **overrides) -> list[dict]:
    """The recipe trained under each encoder pattern (with a causal decoder), then under each
    decoder pattern (with a dense encoder), for ``time_limit`` seconds each.
    ``overrides`` replace recipe fields; ``check_counts`` as in :func:`load_multi30k`.

    With ``jobs=1`` the runs go one after the other in this process (under its thread setting);
    with ``jobs > 1`` that many at a time, each in a fresh process with ``threads`` threads, so
    that ``jobs * threads`` cores do the comparison in ``1 / jobs`` of the time. Runs that share
    the machine slow each other alike: compare their tokens/s within one call.

    Returns one row per run, in the order above: ``encoder``, ``decoder``, ``test_bleu``
    (sacreBLEU, greedy, test 2016), ``valid_bleu`` (the best on the validation subset),
    ``tokens_per_s``, ``steps``, ``peak_mib`` (resident memory the run added:
    :func:`~graphattn.utils.bench.peak_memory_mib`) and ``max_path_length`` (the fewest encoder
    layers after which every source token can have reached every other, on the longest test
    source: 1 for dense; ``inf`` when never).
    """
    jobs, threads = check_int("jobs", jobs, 1), check_int("threads", threads, 1)
    runs = [(e, "causal") for e in encoder_patterns] + [("dense", d) for d in decoder_patterns if d != "causal"]
    tasks = [dict(root=root, out=out, encoder=e, decoder=d, time_limit=time_limit, seed=seed, check_counts=check_counts,
                  progress=progress and jobs == 1, overrides=overrides) for e, d in runs]
    if jobs == 1:
        return [_pattern_run(**task) for task in tasks]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn, not fork: a forked child would inherit this process's torch thread pool and locks.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_threads, initargs=(threads,)) as pool:
        futures = [pool.submit(_pattern_run, **task) for task in tasks]
        rows = []
        try:
            for (encoder, decoder), future in zip(runs, futures):
                rows.append(future.result())
                logger.info("patterns %s / %s: test BLEU %.2f at %.0f tokens/s", encoder, decoder,
                            rows[-1]["test_bleu"], rows[-1]["tokens_per_s"])
        except BaseException:
            # A failed run (a refused run folder, bad data) stops the comparison now, not after the
            # queued runs have trained for their budgets.
            pool.shutdown(cancel_futures=True)
            raise
        return rows


def _worker_threads(threads: int) -> None:
    """Thread count of a comparison worker: a process of ours, made for one run at a time."""
    import torch

    torch.set_num_threads(threads)


def _pattern_run(root, out, encoder: str, decoder: str, time_limit: float, seed: int, check_counts: bool,
                 progress: bool, overrides: dict) -> dict:
    """One row of :func:`compare_patterns`."""
    import torch

    from graphattn import patterns as P
    from graphattn.text.evaluation import translate
    from graphattn.text.metrics import sacrebleu_score
    from graphattn.text.train import train
    from graphattn.utils.bench import peak_memory_mib

    test = load_multi30k(root, check_counts=check_counts)["test"]
    name = f"{encoder}__{decoder}".replace(":", "-").replace("&", "+").replace(",", "_").replace("=", "")
    config = recipe_config(root, encoder_pattern=encoder, decoder_pattern=decoder, time_limit=time_limit,
                           seed=seed, out=str(Path(out) / name), progress=progress, **overrides)
    box = {}
    peak = peak_memory_mib(lambda: box.update(result=train(config)))
    result = box["result"]
    hyps = translate(result.model, result.src_tokenizer, result.tgt_tokenizer, [s for s, _ in test],
                     config.data.max_len)
    longest = max(map(len, result.src_tokenizer.encode_batch([s for s, _ in test])))
    stats = P.parse(encoder).stats(torch.tensor([0, longest]), num_layers=config.model.layers)
    return {"encoder": encoder, "decoder": decoder, "test_bleu": sacrebleu_score(hyps, [t for _, t in test])[0],
            "valid_bleu": result.best_bleu, "tokens_per_s": result.tokens_per_s, "steps": result.step,
            "peak_mib": peak, "max_path_length": stats.get("max_path_length")}
