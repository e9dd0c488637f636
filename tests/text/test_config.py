"""TrainConfig by role (config.py): flat names, the kind of run, and checkpoints of earlier versions."""
import dataclasses

import pytest
import torch

from graphattn import cli
from graphattn import patterns as P
from graphattn.text.build import load_model
from graphattn.text.checkpoint import FORMAT, rng_state, save_checkpoint
from graphattn.text.config import (FIELD_ROLES, DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig,
                                   check_config, config_from_dict)
from graphattn.text.model import Seq2Seq
from graphattn.text.numbers import number_pairs
from graphattn.text.tokenizer import Tokenizer

ROLES = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "run": RunConfig}


def test_every_field_has_one_role_and_flat_names_round_trip():
    names = [f.name for cls in ROLES.values() for f in dataclasses.fields(cls)]
    assert len(names) == len(set(names)) == len(FIELD_ROLES)  # no flat name in two roles
    for role, cls in ROLES.items():
        assert {f.name for f in dataclasses.fields(cls)} == {n for n, r in FIELD_ROLES.items() if r == role}
    config = TrainConfig.from_flat(d_model=64, num_heads=8, steps=7, out="runs/x", max_len=30, text=None)
    assert (config.model.d_model, config.model.num_heads, config.optim.steps, config.run.out, config.data.max_len) == \
        (64, 8, 7, "runs/x", 30)
    assert TrainConfig.from_flat(config.to_flat()) == config
    assert config.replace(seed=3).run.seed == 3 and config.replace(seed=3).model == config.model
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.model.d_model = 1


def test_unknown_and_renamed_flat_names_are_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['nhead'\] \(nhead is now num_heads\)"):
        TrainConfig.from_flat(nhead=4)
    with pytest.raises(ValueError, match=r"unknown TrainConfig fields \['widht'\]"):
        TrainConfig().replace(widht=3)
    with pytest.raises(TypeError, match="model must be a ModelConfig"):
        TrainConfig(model=DataConfig())


@pytest.mark.parametrize("flat, kind", [
    ({}, "translation"),  # the numbers task
    ({"src": "a", "tgt": "b"}, "translation"),
    ({"task": "lm", "text": ["a"]}, "lm"),
])
def test_kind_is_derived_once_from_the_task(flat, kind):
    config = TrainConfig.from_flat(flat)
    assert config.kind == kind
    assert config.replace(task="lm").kind == "lm" and config.replace(task="numbers-en-fr").kind == "translation"
    assert config.data.numbers_task == (not flat)


def test_lm_with_parallel_files_is_refused(tmp_path):
    (tmp_path / "a").write_text("x\n")
    config = TrainConfig.from_flat(task="lm", src=str(tmp_path / "a"), tgt=str(tmp_path / "a"))
    with pytest.raises(ValueError, match="task 'lm' learns text files"):
        check_config(config)


def test_cli_flags_are_the_flat_names():
    parser = cli.build_parser()
    for flag in ("--num-heads", "--nhead"):  # --nhead: torch's name, the same flag
        args = parser.parse_args(["train", flag, "8", "--steps", "5"])
        assert (args.num_heads, args.steps) == (8, 5)


# --- Checkpoints written before the fields had roles ------------------------------------------------

#: TrainConfig's flat fields as a checkpoint of the release before roles stored them (``asdict``),
#: written out here rather than imported: "nhead" (now num_heads) and the retired "threads" included.
OLD_FLAT = dict(
    task="numbers-en-fr", src=None, tgt=None, valid_src=None, valid_tgt=None, text=None, valid_text=None,
    valid_fraction=0.05, train_size=160, valid_size=8, test_size=8, tokenizer="auto", vocab_size=None,
    shared_vocab=False, min_frequency=None, encoder_pattern="window:3", decoder_pattern="causal",
    positional="sinusoidal", context=256, d_model=16, nhead=2, layers=1, ff=32, dropout=0.0, label_smoothing=0.1,
    steps=10, time_limit=None, batch_size=32, max_tokens=None, accumulate=1, lr_factor=1.0, warmup=400,
    clip_norm=1.0, scheduled_sampling=0.0, eval_every=200, eval_seconds=None, valid_subset=None, max_len=24,
    out="runs/old", seed=5, resume=False, overwrite=False, reference_torch=False, progress=False, device="auto",
    precision="fp32", dist_timeout=600.0, threads=1,
)


def old_checkpoint(path, config: dict):
    """A checkpoint as the release before roles wrote it: the flat config dict, a Seq2Seq built
    directly from those fields (not through build_model) and word tokenizers."""
    pairs = number_pairs(range(40))
    src = Tokenizer.train([s for s, _ in pairs], "word")
    tgt = Tokenizer.train([t for _, t in pairs], "word")
    torch.manual_seed(0)
    model = Seq2Seq(len(src), len(tgt), config["d_model"], config["nhead"], config["layers"], config["layers"],
                    config["ff"], config["dropout"], encoder_pattern=P.parse(config["encoder_pattern"]),
                    decoder_pattern=P.parse(config["decoder_pattern"])).eval()
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    save_checkpoint({"format": FORMAT, "version": 2, "step": 10, "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng_state(),
                     "rng_ranks": [rng_state()], "data": {"epoch": 0, "batch": 10, "world_size": 1},
                     "config": config, "vocab": {"src": src.to_dict(), "tgt": tgt.to_dict()},
                     "best": {"metric": "bleu", "value": 0.0}, "valid": {}}, path)
    return model, src


def test_checkpoint_with_the_flat_config_of_earlier_releases_loads(tmp_path):
    saved, src = old_checkpoint(tmp_path / "old.pt", OLD_FLAT)
    model, src_tok, tgt_tok, config = load_model(tmp_path / "old.pt")
    assert config.kind == "translation"
    assert (config.model.num_heads, config.model.d_model, config.model.encoder_pattern) == (2, 16, "window:3")
    assert (config.run.seed, config.data.max_len, config.optim.batch_size) == (5, 24, 32)
    assert src_tok == src
    ids = torch.tensor([src.encode("twenty one"), src.encode("thirty two")])
    tgt_in = torch.tensor([[1, 4, 5], [1, 6, 7]])
    torch.testing.assert_close(model(ids, tgt_in), saved(ids, tgt_in), rtol=0, atol=0)
    # What the current release writes is the same flat dict, renamed field and all.
    assert config.to_flat() == {("num_heads" if k == "nhead" else k): v for k, v in OLD_FLAT.items() if k != "threads"}


@pytest.mark.parametrize("config, message", [
    ({**OLD_FLAT, "attention_sink": 4}, r"fields this version of graphattn does not know: \['attention_sink'\]"),
    ([1, 2], "its config is a list, not a dict"),
])
def test_checkpoint_whose_config_cannot_load_fails_clearly(tmp_path, config, message):
    old_checkpoint(tmp_path / "bad.pt", OLD_FLAT)
    ckpt = torch.load(tmp_path / "bad.pt", weights_only=True)
    save_checkpoint({**ckpt, "config": config}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"'.*bad\.pt' holds an inconsistent checkpoint: .*" + message):
        load_model(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=message):
        config_from_dict(config)
