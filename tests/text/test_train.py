"""Training loop, checkpoints and the command line (train.py, checkpoint.py, plots.py, cli.py)."""
import csv
import io
import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch

from graphattn import cli
from graphattn import patterns as P
from graphattn.text.checkpoint import REQUIRED_KEYS, load_checkpoint, save_checkpoint
from graphattn.text.build import build_model, load_model
from graphattn.text.config import FIELD_ROLES, TrainConfig
from graphattn.text.data import ParallelDataset, flat_collate
from graphattn.nn import CausalLM
from graphattn.text.decoding import greedy_decode
from graphattn.text.evaluation import translate
from graphattn.text.model import Seq2Seq, TorchSeq2Seq
from graphattn.text.numbers import normalize, number_pairs
from graphattn.text.plots import cross_attention
from graphattn.text.train import noam_lambda, sampling_share, scheduled_sampling_inputs, train, train_step
from graphattn.text.tokenizer import BOS_ID, Tokenizer


def tiny(tmp_path, name="run", **changes) -> TrainConfig:
    """A configuration that trains in about a second: 160 pairs, one small layer each side."""
    config = TrainConfig.from_flat(train_size=160, valid_size=8, test_size=8, d_model=32, num_heads=4, layers=1, ff=64,
                                   batch_size=32, warmup=20, lr_factor=2.0, steps=10, eval_every=1000, max_len=24,
                                   out=str(tmp_path / name), progress=False)
    return config.replace(**changes)


TINY_FLAGS = ["--train-size", "160", "--valid-size", "8", "--test-size", "8", "--d-model", "32", "--layers", "1",
              "--ff", "64", "--batch-size", "32", "--warmup", "20", "--max-len", "24", "--threads", "1",
              "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run of 60 steps (loss curve, files) whose best.pt the CLI tests translate with."""
    return train(tiny(tmp_path_factory.mktemp("trained"), steps=60, eval_every=30))


def test_loss_drops_and_files_are_written(trained):
    first, last = sum(trained.losses[:5]) / 5, sum(trained.losses[-5:]) / 5
    assert last < 0.7 * first
    assert trained.step == 60 and trained.stopped_by == "steps" and trained.tokens_per_s > 0
    for key in ("last", "best", "log", "curves", "attention"):
        assert trained.paths[key].is_file() and trained.paths[key].stat().st_size > 0
    with open(trained.paths["log"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 61))
    assert [int(r["step"]) for r in rows if r["valid_bleu"]] == [30, 60]
    assert float(rows[0]["lr"]) == pytest.approx(noam_lambda(32, 20, 2.0)(0))
    assert not trained.model.training


def test_resume_equals_continuous(tmp_path):
    # 5 batches an epoch: stopping at step 7 stops inside the second epoch; dropout is on, so the
    # RNG states must come back too.
    whole = train(tiny(tmp_path, "whole", steps=14))
    first = train(tiny(tmp_path, "parts", steps=7))
    # The rest of the config comes from the checkpoint, and a setting that differs from it is refused.
    with pytest.raises(ValueError, match=r"differ from it: --seed 123 \(checkpoint: 0\)"):
        train(tiny(tmp_path, "parts", steps=14, resume=True, seed=123))
    second = train(tiny(tmp_path, "parts", steps=14, resume=True))
    assert second.step == 14 and len(second.losses) == 7
    assert first.losses + second.losses == pytest.approx(whole.losses, abs=1e-6)
    last_whole = load_checkpoint(whole.paths["last"])["model"]
    last_parts = load_checkpoint(second.paths["last"])["model"]
    for name, value in last_whole.items():
        torch.testing.assert_close(last_parts[name], value, rtol=0, atol=1e-6)
    with open(second.paths["log"], newline="") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == list(range(1, 15))


def test_config_stores_pattern_specs_and_reloads_them(tmp_path):
    result = train(tiny(tmp_path, steps=2, encoder_pattern="window:2", decoder_pattern="causal&window:3"))
    ckpt = load_checkpoint(result.paths["last"])
    assert ckpt["config"]["encoder_pattern"] == "window:2"
    assert set(REQUIRED_KEYS) <= set(ckpt)
    model, src_tok, tgt_tok, config = load_model(result.paths["last"])
    assert model.transformer.encoder.layers[0].pattern == P.window(2)
    assert model.transformer.decoder.layers[0].pattern == P.causal() & P.window(3)
    assert src_tok == result.src_tokenizer and tgt_tok == result.tgt_tokenizer


# --- Checkpoint files ---------------------------------------------------------------------------


def payload(value: float) -> dict:
    return {key: {} for key in REQUIRED_KEYS} | {
        "format": "graphattn-checkpoint", "version": 1, "step": 3, "model": {"w": torch.full((4,), value)}}


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(payload(1.0), path)
    real_save = torch.save

    def crash_halfway(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(payload(2.0), path)
    assert os.listdir(tmp_path) == ["last.pt"]  # no temporary file left behind
    torch.testing.assert_close(load_checkpoint(path)["model"]["w"], torch.full((4,), 1.0))


def test_corrupt_checkpoints_raise_clear_errors(tmp_path):
    good = tmp_path / "good.pt"
    save_checkpoint(payload(1.0), good)
    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "random.pt").write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                                       dtype=torch.uint8).numpy().tobytes())
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 3}, tmp_path / "foreign.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    cases = {"truncated.pt": "truncated or corrupt", "random.pt": r"not a torch file \(random bytes",
             "foreign.pt": r"not a graphattn checkpoint: missing keys \['format'", "tensor.pt": "holds a Tensor"}
    for name, message in cases.items():
        with pytest.raises(ValueError, match=message) as info:
            load_checkpoint(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_resume_from_corrupt_checkpoint_keeps_it(tmp_path):
    config = tiny(tmp_path, steps=2, resume=True)
    os.makedirs(config.run.out)
    last = os.path.join(config.run.out, "last.pt")
    with open(last, "wb") as f:
        f.write(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError, match="last.pt"):
        train(config)
    with open(last, "rb") as f:
        assert f.read() == b"PK\x03\x04 not really a zip"


# --- Schedule and scheduled sampling ------------------------------------------------------------


def test_noam_lambda_closed_form():
    d_model, warmup, factor = 64, 10, 2.0
    rate = noam_lambda(d_model, warmup, factor)
    for step in range(1, 40):
        assert rate(step) == pytest.approx(factor * d_model ** -0.5 * min(step ** -0.5, step * warmup ** -1.5))
    assert rate(0) == rate(1) and math.isfinite(rate(0))
    assert max(range(1, 40), key=rate) == warmup
    # In LambdaLR with lr=1.0 the optimizer's lr after k scheduler steps is rate(k).
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, rate)
    for k in range(1, 5):
        optimizer.step()
        scheduler.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(rate(k))
    with pytest.raises(ValueError, match="warmup"):
        noam_lambda(64, 0)


def test_scheduled_sampling_inputs():
    ptr = torch.tensor([0, 3, 7])
    gold = torch.tensor([1, 10, 11, 1, 12, 13, 14])
    guess = torch.tensor([20, 21, 22, 23, 24, 25, 26])  # row i predicts row i + 1
    assert torch.equal(scheduled_sampling_inputs(gold, ptr, guess, 0.0), gold)
    assert scheduled_sampling_inputs(gold, ptr, guess, 1.0).tolist() == [1, 20, 21, 1, 23, 24, 25]
    mixed = scheduled_sampling_inputs(gold, ptr, guess, 0.5, torch.Generator().manual_seed(0))
    assert mixed[0] == 1 and mixed[3] == 1  # BOS stays
    assert sampling_share(0, 11, 0.4) == 0.0 and sampling_share(5, 11, 0.4) == pytest.approx(0.2)
    assert sampling_share(10, 11, 0.4) == pytest.approx(0.4)


def test_train_step_feeds_predictions_with_scheduled_sampling():
    torch.manual_seed(0)
    pairs = number_pairs(range(20, 30))
    src_vocab, tgt_vocab = Tokenizer.train((s for s, _ in pairs), "word"), Tokenizer.train((t for _, t in pairs), "word")
    batch = flat_collate([ParallelDataset(pairs, src_vocab, tgt_vocab)[i] for i in range(10)])
    model = build_model(TrainConfig.from_flat(d_model=16, num_heads=2, layers=1, ff=32, dropout=0.0), len(src_vocab), len(tgt_vocab))
    seen = []
    model.tgt_embed.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_step(model, batch, optimizer, torch.nn.CrossEntropyLoss(), 1.0, share=0.0)
    assert len(seen) == 1 and torch.equal(seen[0], batch.tgt_in)
    seen.clear()
    with torch.no_grad():
        guess = model.forward_flat(batch.src, batch.ptr_src, batch.tgt_in, batch.ptr_tgt).argmax(-1)
    seen.clear()
    train_step(model, batch, optimizer, torch.nn.CrossEntropyLoss(), 1.0, share=1.0)
    assert len(seen) == 2 and torch.equal(seen[0], batch.tgt_in)  # the teacher-forced pass
    fed = seen[1]
    assert not torch.equal(fed, batch.tgt_in)
    assert torch.equal(fed, scheduled_sampling_inputs(batch.tgt_in, batch.ptr_tgt, guess, 1.0))


# --- The torch reference and attention maps -----------------------------------------------------


@pytest.mark.parametrize("cls", [Seq2Seq, TorchSeq2Seq])
def test_cross_attention_rows_are_distributions(cls):
    torch.manual_seed(0)
    model = cls(12, 12, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=32).eval()
    weights = cross_attention(model, torch.tensor([4, 5, 6, 2]), torch.tensor([BOS_ID, 7, 8]))
    assert weights.shape == (3, 4)
    torch.testing.assert_close(weights.sum(1), torch.ones(3))


def test_reference_torch_trains_and_decodes(tmp_path):
    result = train(tiny(tmp_path, steps=30, reference_torch=True))
    assert isinstance(result.model, TorchSeq2Seq)
    assert sum(result.losses[-5:]) < 0.8 * sum(result.losses[:5])
    graph = build_model(result.config.replace(reference_torch=False), len(result.src_tokenizer),
                        len(result.tgt_tokenizer))
    assert sum(p.numel() for p in graph.parameters()) == sum(p.numel() for p in result.model.parameters())
    src, ptr = torch.tensor([4, 5, 2, 6, 7, 8, 2]), torch.tensor([0, 3, 7])
    cached, plain = (greedy_decode(result.model, src, ptr, 12, use_cache=c) for c in (True, False))
    assert cached.tokens == plain.tokens
    with pytest.raises(ValueError, match="band patterns only"):
        train(tiny(tmp_path, reference_torch=True, encoder_pattern="block:4"))


# --- Command line -------------------------------------------------------------------------------


def test_every_config_field_has_one_flag():
    args = cli.build_parser().parse_args(["train"])
    dests = set(vars(args)) - {"command", "func", "parser", "threads"}  # threads: the entry point's, not the run's
    assert dests == set(FIELD_ROLES) == set(TrainConfig().to_flat())
    # Defaults come marked as not given (what --resume needs to know), and unwrap to TrainConfig's.
    assert TrainConfig.from_flat({name: getattr(args, name).value for name in dests}) == TrainConfig()


def test_cli_train_translate_evaluate(tmp_path, capsys, monkeypatch, trained):
    out = tmp_path / "cli"
    assert cli.main(["train", *TINY_FLAGS, "--steps", "3", "--out", str(out)]) == 0
    assert "3 steps" in capsys.readouterr().out
    assert load_checkpoint(out / "best.pt")["step"] == 3
    best = str(trained.paths["best"])
    assert cli.main(["translate", "--checkpoint", best, "Twenty-One", "four hundred and twelve"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(isinstance(line, str) for line in lines)
    monkeypatch.setattr("sys.stdin", io.StringIO("one\ntwo\nthree\n"))
    assert cli.main(["translate", "--checkpoint", best, "--beam", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert cli.main(["evaluate", "--checkpoint", best]) == 0
    assert "(8 sentences, the numbers-en-fr test split)" in capsys.readouterr().out
    src, tgt = tmp_path / "test.en", tmp_path / "test.fr"
    src.write_text("twenty-one\nthree hundred\n")
    tgt.write_text("vingt et un\ntrois cents\n")
    assert cli.main(["evaluate", "--checkpoint", best, "--src", str(src), "--tgt", str(tgt)]) == 0
    assert "BLEU" in capsys.readouterr().out


def test_cli_trains_on_files_and_resumes(tmp_path, capsys):
    pairs = number_pairs(range(0, 400, 3))
    src, tgt = tmp_path / "train.en", tmp_path / "train.fr"
    src.write_text("\n".join(s for s, _ in pairs) + "\n")
    tgt.write_text("\n".join(t for _, t in pairs) + "\n")
    out = str(tmp_path / "files")
    base = ["train", "--src", str(src), "--tgt", str(tgt), "--valid-fraction", "0.1", *TINY_FLAGS, "--out", out]
    assert cli.main([*base, "--steps", "2"]) == 0
    assert cli.main([*base, "--steps", "4", "--resume"]) == 0
    assert "4 steps" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--checkpoint", os.path.join(out, "last.pt")])
    assert "give the test files" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--encoder-pattern", "nope"], "unknown pattern 'nope'"),
    (["train", "--decoder-pattern", "window:"], "integer"),
    (["train", "--src", "missing.en", "--tgt", "missing.fr"], "no such file"),
    (["train", "--steps", "0"], "steps must be an integer >= 1, got 0"),
    (["train", "--steps", "many"], "invalid int value"),
    (["train", "--d-model", "30", "--nhead", "4"], "divisible"),
    (["train", "--task", "chess"], "unknown task"),
    (["train", "--resume", "--out", "{tmp}/empty"], "no checkpoint at"),
    (["translate", "--checkpoint", "{tmp}/missing.pt", "one"], "no checkpoint at"),
    (["evaluate", "--checkpoint", "{tmp}/garbage.pt"], "not a torch file"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_cli_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    (tmp_path / "garbage.pt").write_bytes(b"\x00" * 100)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "error:" in err and message in err and "Traceback" not in err


# --- Tokenizers, language models, warnings and bad files -----------------------------------------

DATA = Path(__file__).parent / "data"


def test_version_one_checkpoint_loads_and_translates_as_before():
    # numbers_v1.pt was written by graphattn before subword tokenizers (version 1, word lists),
    # numbers_v1.json holds what that release's code translated with it.
    expected = json.loads((DATA / "numbers_v1.json").read_text())
    ckpt = load_checkpoint(DATA / "numbers_v1.pt")
    assert ckpt["version"] == 1 and "tokens" in ckpt["vocab"]["src"]
    model, src_tok, tgt_tok, config = load_model(DATA / "numbers_v1.pt")
    assert src_tok.kind == tgt_tok.kind == "word"
    assert [src_tok.encode(s) for s in expected["sentences"]] == expected["src_ids"]
    assert translate(model, src_tok, tgt_tok, expected["sentences"], 24) == expected["translations"]


def test_version_one_checkpoint_resumes_as_version_two(tmp_path):
    out = tmp_path / "old"
    out.mkdir()
    shutil.copy(DATA / "numbers_v1.pt", out / "last.pt")
    old = load_checkpoint(out / "last.pt")
    # The settings are the checkpoint's: only the steps are given.
    result = train(TrainConfig.from_flat(out=str(out), steps=old["step"] + 2, resume=True, progress=False))
    new = load_checkpoint(result.paths["last"])
    assert new["version"] == 2 and new["step"] == old["step"] + 2
    assert Tokenizer.from_dict(new["vocab"]["tgt"]) == Tokenizer.from_dict(old["vocab"]["tgt"])
    assert new["best"]["metric"] == "bleu"


def test_unknown_checkpoint_versions_fail_clearly(tmp_path):
    ckpt = load_checkpoint(DATA / "numbers_v1.pt")
    save_checkpoint(ckpt | {"version": 7}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match=r"version 7, expected 'graphattn-checkpoint' version 1 or 2"):
        load_model(tmp_path / "future.pt")


def write_pairs(tmp_path, pairs, stem="train"):
    src, tgt = tmp_path / f"{stem}.src", tmp_path / f"{stem}.tgt"
    src.write_text("\n".join(s for s, _ in pairs) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(t for _, t in pairs) + "\n", encoding="utf-8")
    return str(src), str(tgt)


@pytest.mark.parametrize("flags, kinds, shared", [([], ("bpe", "bpe"), False),
                                                  (["--tokenizer", "unigram", "--shared-vocab"], ("unigram", "unigram"), True),
                                                  (["--tokenizer", "char"], ("char", "char"), False)])
def test_files_train_subword_tokenizers_by_default(tmp_path, flags, kinds, shared):
    src, tgt = write_pairs(tmp_path, number_pairs(range(0, 300, 3)))
    out = tmp_path / "run"
    assert cli.main(["train", "--src", src, "--tgt", tgt, *TINY_FLAGS, "--steps", "1", "--vocab-size", "300",
                     "--out", str(out), *flags]) == 0
    vocab = load_checkpoint(out / "last.pt")["vocab"]
    assert (vocab["src"]["kind"], vocab["tgt"]["kind"]) == kinds
    assert (vocab["src"] == vocab["tgt"]) == shared


def warnings_of(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_warnings_about_unlearnable_data_are_given_once(tmp_path, caplog):
    # English -> Dutch number words: each Dutch number is one compound word, unknown to word tokens.
    from num2words import num2words

    numbers = list(range(100, 400, 2))
    pairs = [(normalize(num2words(n, lang="en")), num2words(n, lang="nl")) for n in numbers]
    src, tgt = write_pairs(tmp_path, pairs)
    base = ["train", "--src", src, "--tgt", tgt, *TINY_FLAGS, "--steps", "4", "--eval-every", "2",
            "--valid-fraction", "0.2"]  # the last --max-len given counts
    with caplog.at_level("WARNING"):
        assert cli.main([*base, "--tokenizer", "word", "--max-len", "6", "--out", str(tmp_path / "word")]) == 0
    err = warnings_of(caplog)
    assert err.count("of the target validation tokens are unknown (<unk>) to the word tokenizer") == 1
    assert "100.0% of the target" in err and "source validation" not in err  # English words repeat
    assert err.count("training pairs are longer than --max-len (6) tokens and were cut") == 1
    assert err.count("translations are empty") <= 1  # two validations, one warning at the end
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert cli.main([*base, "--vocab-size", "300", "--out", str(tmp_path / "bpe")]) == 0
    assert "unknown (<unk>)" not in warnings_of(caplog)


def test_empty_translations_are_reported(tmp_path, capsys, caplog, trained):
    ckpt = load_checkpoint(trained.paths["best"])
    ckpt["model"]["generator.bias"][2] = 1e4  # <eos> first, always
    save_checkpoint(ckpt, tmp_path / "mute.pt")
    with caplog.at_level("WARNING"):
        assert cli.main(["translate", "--checkpoint", str(tmp_path / "mute.pt"), "one", "two", "three"]) == 0
    assert capsys.readouterr().out == "\n\n\n"
    assert warnings_of(caplog).count("3 of 3 translations are empty") == 1


@pytest.mark.parametrize("bad", ["undecodable", "empty", "lines"])
def test_bad_files_are_refused_before_a_checkpoint_is_touched(tmp_path, bad):
    src, tgt = write_pairs(tmp_path, number_pairs(range(0, 300, 3)))
    config = tiny(tmp_path, "run", src=src, tgt=tgt, vocab_size=300, steps=2)
    train(config)
    before = {p.name: p.read_bytes() for p in Path(config.run.out).iterdir()}
    good = Path(tgt).read_bytes()
    if bad == "undecodable":  # a byte that starts no UTF-8 character, in the line "soixante"
        Path(tgt).write_bytes(good.replace("soixante".encode(), b"soix\xe2nte", 1))
        message = r"train.tgt' is not UTF-8 text: line \d+, byte 5 is b'\\xe2'"
    elif bad == "empty":
        Path(tgt).write_text("\n")
        message = "train.tgt' is empty"
    else:
        Path(tgt).write_bytes(good + b"un de trop\n")
        message = "same number of lines"
    for resume in (False, True):  # a new run replacing the one in the directory, and a resumed one
        with pytest.raises(ValueError, match=message):
            train(config.replace(resume=resume, overwrite=not resume, steps=4))
        assert {p.name: p.read_bytes() for p in Path(config.run.out).iterdir()} == before


def write_code(tmp_path, count=6):
    paths = []
    for i in range(count):
        lines = [f"def f{i}_{j}(x):\n    return x * {j} + {i}\n" for j in range(12)]
        path = tmp_path / f"mod{i}.py"
        path.write_text("".join(lines), encoding="utf-8")
        paths.append(str(path))
    return paths


def lm_config(tmp_path, name="lm", **changes) -> TrainConfig:
    config = TrainConfig.from_flat(task="lm", text=write_code(tmp_path), valid_fraction=0.2, context=16, d_model=32, num_heads=4,
                                   layers=1, ff=64, batch_size=8, warmup=10, lr_factor=2.0, steps=12, eval_every=6,
                                   vocab_size=300, out=str(tmp_path / name), progress=False,
                                   decoder_pattern="causal&window:8", positional="relative")
    return config.replace(**changes)


def test_language_model_trains_validates_and_resumes(tmp_path):
    whole = train(lm_config(tmp_path, "whole"))
    assert isinstance(whole.model, CausalLM) and whole.metric == "perplexity" and whole.src_tokenizer is None
    assert whole.model.pattern == P.causal() & P.window(8) and whole.model.positional == "relative"
    assert sum(whole.losses[-3:]) < 0.8 * sum(whole.losses[:3])
    assert whole.best == min(whole.best, whole.valid["perplexity"]) and whole.best < len(whole.tokenizer)
    assert math.isnan(whole.best_bleu) and "attention" not in whole.paths and whole.paths["curves"].is_file()
    with open(whole.paths["log"], newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows if r["valid_ppl"]] == ["6", "12"]
    ckpt = load_checkpoint(whole.paths["best"])
    assert ckpt["vocab"]["text"]["kind"] == "bpe" and ckpt["best"]["metric"] == "perplexity"
    first = train(lm_config(tmp_path, "parts", steps=6))
    second = train(lm_config(tmp_path, "parts", resume=True))
    assert first.losses + second.losses == pytest.approx(whole.losses, abs=1e-6)


def test_cli_language_model_generate_and_evaluate(tmp_path, capsys):
    text = write_code(tmp_path)
    out = tmp_path / "cli-lm"
    assert cli.main(["train", "--task", "lm", "--text", *text, "--context", "16", "--d-model", "32", "--layers", "1",
                     "--ff", "64", "--batch-size", "8", "--steps", "3", "--vocab-size", "300", "--threads", "1",
                     "--no-progress", "--out", str(out)]) == 0
    assert "best validation perplexity" in capsys.readouterr().out
    best = str(out / "best.pt")
    assert cli.main(["generate", "--checkpoint", best, "def f", "--max-new-tokens", "5", "--seed", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("def f")
    assert cli.main(["evaluate", "--checkpoint", best, "--text", text[0]]) == 0
    assert "perplexity" in capsys.readouterr().out
    for argv, message in [(["translate", "--checkpoint", best, "one"], "holds a language model: use graphattn generate"),
                          (["generate", "--checkpoint", str(DATA / "numbers_v1.pt"), "x"], "holds a translation model"),
                          (["train", "--task", "lm"], "needs text files"),
                          (["train", "--text", text[0]], "text and valid_text are the files of task 'lm'")]:
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert message in capsys.readouterr().err
