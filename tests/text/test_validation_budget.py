"""What validation costs inside a time budget (TrainConfig's eval_seconds and valid_subset), and
the BPE min_frequency option that real text needs."""
import csv

import pytest

from graphattn.text.build import build_tokenizers, load_task
from graphattn.text.config import TrainConfig, check_config
from graphattn.text.evaluation import translation_scores
from graphattn.text.tokenizer import Tokenizer
from graphattn.text.train import train


def tiny(tmp_path, **changes) -> TrainConfig:
    config = TrainConfig.from_flat(train_size=160, valid_size=8, test_size=8, d_model=32, num_heads=4, layers=1, ff=64,
                                   batch_size=32, warmup=20, lr_factor=2.0, steps=6, eval_every=1000, max_len=24,
                                   out=str(tmp_path / "run"), progress=False)
    return config.replace(**changes)


def validated_steps(config: TrainConfig) -> list:
    with open(f"{config.run.out}/log.csv", newline="") as f:
        return [int(r["step"]) for r in csv.DictReader(f) if r["valid_bleu"]]


def test_valid_subset_scores_the_first_pairs(tmp_path, one_thread):
    config = tiny(tmp_path, valid_subset=3, eval_every=3)
    result = train(config)
    assert result.valid["n"] == 3
    assert validated_steps(config) == [3, 6]
    # The last validation scored the last weights on the first 3 pairs; the best checkpoint was
    # chosen by that score: evaluating its weights on the same pairs gives the best score back.
    pairs = load_task(config)["valid"][:3]
    scores = translation_scores(result.model, result.src_tokenizer, result.tgt_tokenizer, pairs, config.data.max_len)
    assert scores["bleu"] == pytest.approx(result.best_bleu)


@pytest.mark.parametrize("eval_seconds, expected", [(None, [6]), (1e-9, [1, 2, 3, 4, 5, 6])])
def test_eval_seconds(tmp_path, one_thread, eval_seconds, expected):
    config = tiny(tmp_path, eval_seconds=eval_seconds)
    result = train(config)
    assert validated_steps(config) == expected
    assert 0 < result.valid_seconds
    assert result.train_seconds > 0


@pytest.mark.parametrize("field, value", [("eval_seconds", 0.0), ("valid_subset", 0), ("min_frequency", 0)])
def test_bad_values(tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        check_config(tiny(tmp_path, **{field: value}))


def test_min_frequency_reaches_the_tokenizers(tmp_path):
    src = [f"a small dog number {i % 7} runs in the park" for i in range(200)]
    tgt = [f"ein kleiner Hund Nummer {i % 7} rennt im Park" for i in range(200)]
    for name, lines in (("s.txt", src), ("t.txt", tgt)):
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = tiny(tmp_path, src=str(tmp_path / "s.txt"), tgt=str(tmp_path / "t.txt"), tokenizer="bpe", min_frequency=50)
    data = load_task(config)
    src_tok, tgt_tok = build_tokenizers(config, data)
    assert src_tok == Tokenizer.train([s for s, _ in data["train"]], "bpe", None, min_frequency=50)
    assert tgt_tok == Tokenizer.train([t for _, t in data["train"]], "bpe", None, min_frequency=50)
    default, _ = build_tokenizers(config.replace(min_frequency=None), data)
    assert len(default) != len(src_tok)
