import gzip
import os
from pathlib import Path

import pytest

from graphattn.text.data import read_lines
from graphattn.text.multi30k import SOURCE, SPLITS, load_multi30k, multi30k_files, recipe_config

REAL = Path(os.environ.get("GRAPHATTN_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data")) / "multi30k"


def write_corpus(root: Path, counts: dict, de_line=lambda i: f"Ein Hund läuft {i}.") -> None:
    for split, (stem, _) in SPLITS.items():
        n = counts[split]
        for lang, line in (("en", lambda i: f"A dog runs {i}."), ("de", de_line)):
            with gzip.open(root / f"{stem}.{lang}.gz", "wt", encoding="utf-8") as f:
                f.write("".join(line(i) + "\n" for i in range(n)))


def test_reads_gzip_utf8(tmp_path):
    write_corpus(tmp_path, {"train": 5, "valid": 3, "test": 2})
    pairs = load_multi30k(tmp_path, check_counts=False)
    assert {k: len(v) for k, v in pairs.items()} == {"train": 5, "valid": 3, "test": 2}
    assert pairs["train"][4] == ("A dog runs 4.", "Ein Hund läuft 4.")  # the umlaut survives: UTF-8 decoded
    assert set(multi30k_files(tmp_path)) == {"train", "valid", "test"}


def test_line_counts_checked(tmp_path):
    write_corpus(tmp_path, {"train": 5, "valid": 3, "test": 2})
    with pytest.raises(ValueError, match=r"train\.en\.gz.*hold 5 sentence pairs.*29000"):
        load_multi30k(tmp_path)


def test_mismatched_sides(tmp_path):
    write_corpus(tmp_path, {"train": 5, "valid": 3, "test": 2})
    with gzip.open(tmp_path / "val.de.gz", "wt", encoding="utf-8") as f:
        f.write("nur eine Zeile\n")
    with pytest.raises(ValueError, match="same number of lines"):
        load_multi30k(tmp_path, check_counts=False)


def test_bad_files(tmp_path):
    write_corpus(tmp_path, {"train": 5, "valid": 3, "test": 2})
    (tmp_path / "train.de.gz").write_bytes(b"plain text, not gzip\n")
    with pytest.raises(ValueError, match=r"train\.de\.gz.*not a readable gzip"):
        load_multi30k(tmp_path, check_counts=False)
    with gzip.open(tmp_path / "train.de.gz", "wb") as f:
        f.write(b"ok\n\xff\xfe bad\nok\nok\nok\n")
    with pytest.raises(ValueError, match=r"not UTF-8 text: line 2"):
        load_multi30k(tmp_path, check_counts=False)


def test_missing_files_say_where_they_come_from(tmp_path):
    with pytest.raises(FileNotFoundError, match="github.com/multi30k/dataset"):
        multi30k_files(tmp_path)
    with pytest.raises(FileNotFoundError):
        recipe_config(tmp_path)


def test_recipe_config_points_at_the_files(tmp_path):
    write_corpus(tmp_path, {"train": 5, "valid": 3, "test": 2})
    config = recipe_config(tmp_path, time_limit=60.0, seed=3)
    assert (config.data.src, config.data.valid_tgt) == (str(tmp_path / "train.en.gz"), str(tmp_path / "val.de.gz"))
    assert (config.run.time_limit, config.run.seed, config.data.min_frequency) == (60.0, 3, 2)


def example_overrides():
    """``overrides`` of examples/multi30k.py, the parser of its ``--set FIELD=VALUE``."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / "multi30k.py"
    spec = importlib.util.spec_from_file_location("multi30k_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.overrides


def test_example_set_flat_fields_reach_their_roles(tmp_path):
    write_corpus(tmp_path, {"train": 5, "valid": 3, "test": 2})
    overrides = example_overrides()(["d_model=64", "num_heads=8", "eval_seconds=30", "warmup=50",
                                     "encoder_pattern=window:4", "valid_subset=null", "shared_vocab=true"])
    config = recipe_config(tmp_path, **overrides)
    assert (config.model.d_model, config.model.num_heads, config.model.encoder_pattern) == (64, 8, "window:4")
    assert (config.run.eval_seconds, config.run.valid_subset, config.optim.warmup) == (30, None, 50)
    assert config.data.shared_vocab is True and config.data.vocab_size == 4000  # the recipe's, untouched
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['nhead'\] \(nhead is now num_heads\)"):
        recipe_config(tmp_path, **example_overrides()(["nhead=8"]))


@pytest.mark.skipif(not REAL.is_dir(), reason=f"Multi30k not found at {REAL} (set GRAPHATTN_DATA); files: {SOURCE}")
def test_real_files():
    pairs = load_multi30k(REAL)  # the published counts: 29,000 / 1,014 / 1,000
    assert [len(pairs[s]) for s in ("train", "valid", "test")] == [29_000, 1_014, 1_000]
    # Cross-checked with the standard library's gzip reader, independent of read_text.
    with gzip.open(REAL / "test_2016_flickr.de.gz", "rt", encoding="utf-8") as f:
        first = f.readline().strip()
    assert pairs["test"][0][1] == " ".join(first.split())
    assert read_lines(REAL / "val.en.gz")[0] == pairs["valid"][0][0]


def test_compare_patterns_on_a_tiny_corpus(tmp_path, one_thread):
    from graphattn.compare.translation import translation_report
    from graphattn.text.multi30k import compare_patterns

    write_corpus(tmp_path, {"train": 40, "valid": 6, "test": 5})
    options = dict(time_limit=60.0, encoder_patterns=["dense", "window:2"], decoder_patterns=["causal", "causal&window:2"],
                   check_counts=False, steps=2, d_model=16, num_heads=2, layers=2, ff=32, vocab_size=300, max_tokens=200)
    rows = compare_patterns(tmp_path, tmp_path / "runs", **options)
    # Two at a time in worker processes: the same runs, row for row (only the clock differs).
    parallel = compare_patterns(tmp_path, tmp_path / "runs2", jobs=2, **options)
    same = ("encoder", "decoder", "test_bleu", "valid_bleu", "steps", "max_path_length")
    assert [{k: r[k] for k in same} for r in parallel] == [{k: r[k] for k in same} for r in rows]
    with pytest.raises(ValueError, match="jobs"):
        compare_patterns(tmp_path, tmp_path / "runs3", jobs=0, **options)
    assert [(r["encoder"], r["decoder"]) for r in rows] == [("dense", "causal"), ("window:2", "causal"),
                                                              ("dense", "causal&window:2")]
    assert all(r["steps"] == 2 and r["tokens_per_s"] > 0 and 0 <= r["test_bleu"] <= 100 for r in rows)
    # Path lengths by hand: dense reaches everything in one layer; window:2 moves 2 positions a layer
    # across the longest test source ("A dog runs N." + <eos>, as many tokens as the tokenizer makes).
    from graphattn.text.build import load_model
    _, src_tok, _, _ = load_model(tmp_path / "runs" / "window-2__causal" / "best.pt")
    longest = max(len(src_tok.encode(f"A dog runs {i}.", add_eos=False)) + 1 for i in range(5))
    assert rows[0]["max_path_length"] == 1
    assert rows[1]["max_path_length"] == -(-(longest - 1) // 2)
    text = translation_report(rows, tmp_path / "report", {"time_limit": 60.0})
    assert text.count("\n| `") == 3 and "| 1.00x |" in text
    assert (tmp_path / "report" / "multi30k.png").stat().st_size > 0


def test_cli_compare_multi30k_needs_data(capsys):
    from graphattn import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", "--task", "multi30k"])
    assert exit_info.value.code == 2
    assert "--data" in capsys.readouterr().err


def test_cli_compare_refuses_jobs_where_it_does_not_apply(capsys):
    from graphattn import cli

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compare", "--stats", "--jobs", "2"])
    assert exit_info.value.code == 2
    assert "--jobs" in capsys.readouterr().err
