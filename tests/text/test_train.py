"""Training loop, checkpoints and the command line (train.py, checkpoint.py, plots.py, cli.py)."""
import csv
import dataclasses
import io
import math
import os

import pytest
import torch

from graphattn import cli
from graphattn import patterns as P
from graphattn.text.checkpoint import REQUIRED_KEYS, load_checkpoint, save_checkpoint
from graphattn.text.config import TrainConfig, build_model, load_model
from graphattn.text.data import ParallelDataset, flat_collate
from graphattn.text.decoding import greedy_decode
from graphattn.text.model import Seq2Seq, TorchSeq2Seq
from graphattn.text.numbers import number_pairs
from graphattn.text.plots import cross_attention
from graphattn.text.train import noam_lambda, sampling_share, scheduled_sampling_inputs, train, train_step
from graphattn.text.vocab import BOS_ID, Vocab


def tiny(tmp_path, name="run", **changes) -> TrainConfig:
    """A configuration that trains in about a second: 160 pairs, one small layer each side."""
    config = TrainConfig(train_size=160, valid_size=8, test_size=8, d_model=32, nhead=4, layers=1, ff=64,
                         batch_size=32, warmup=20, lr_factor=2.0, steps=10, eval_every=1000, max_len=24,
                         out=str(tmp_path / name), progress=False)
    return dataclasses.replace(config, **changes)


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
    # The rest of the config comes from the checkpoint: a different seed here must not matter.
    second = train(tiny(tmp_path, "parts", steps=14, resume=True, seed=123))
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
    model, src_vocab, tgt_vocab, config = load_model(result.paths["last"])
    assert model.transformer.encoder.layers[0].pattern == P.window(2)
    assert model.transformer.decoder.layers[0].pattern == P.causal() & P.window(3)
    assert src_vocab.itos == result.src_vocab.itos and tgt_vocab.itos == result.tgt_vocab.itos


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
    cases = {"truncated.pt": "truncated or corrupt", "random.pt": "truncated or corrupt",
             "foreign.pt": r"not a graphattn checkpoint: missing keys \['format'", "tensor.pt": "holds a Tensor"}
    for name, message in cases.items():
        with pytest.raises(ValueError, match=message) as info:
            load_checkpoint(tmp_path / name)
        assert name in str(info.value)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_resume_from_corrupt_checkpoint_keeps_it(tmp_path):
    config = tiny(tmp_path, steps=2, resume=True)
    os.makedirs(config.out)
    last = os.path.join(config.out, "last.pt")
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
    src_vocab, tgt_vocab = Vocab.build(s for s, _ in pairs), Vocab.build(t for _, t in pairs)
    batch = flat_collate([ParallelDataset(pairs, src_vocab, tgt_vocab)[i] for i in range(10)])
    model = build_model(TrainConfig(d_model=16, nhead=2, layers=1, ff=32, dropout=0.0), len(src_vocab), len(tgt_vocab))
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
    model = cls(12, 12, d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=2, dim_feedforward=32).eval()
    weights = cross_attention(model, torch.tensor([4, 5, 6, 2]), torch.tensor([BOS_ID, 7, 8]))
    assert weights.shape == (3, 4)
    torch.testing.assert_close(weights.sum(1), torch.ones(3))


def test_reference_torch_trains_and_decodes(tmp_path):
    result = train(tiny(tmp_path, steps=30, reference_torch=True))
    assert isinstance(result.model, TorchSeq2Seq)
    assert sum(result.losses[-5:]) < 0.8 * sum(result.losses[:5])
    graph = build_model(dataclasses.replace(result.config, reference_torch=False), len(result.src_vocab),
                        len(result.tgt_vocab))
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
    assert dests == {f.name for f in dataclasses.fields(TrainConfig)}
    assert TrainConfig(**{name: getattr(args, name) for name in dests}) == TrainConfig()


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
    (["evaluate", "--checkpoint", "{tmp}/garbage.pt"], "truncated or corrupt"),
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
