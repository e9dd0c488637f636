r"""The configuration of a text training run, by role: its data, its model, its optimisation and
the run itself (how long, where, on what device).

``graphattn train`` has one flag per field, and a flag's name is the field's flat name
(``--d-model`` is ``d_model``, a field of :class:`ModelConfig`); :data:`FIELD_ROLES` says which
role holds each. :meth:`TrainConfig.from_flat` builds a configuration from flat names (the flags,
a checkpoint's config, ``recipe_config``'s overrides), :meth:`TrainConfig.to_flat` gives them
back, and :meth:`TrainConfig.replace` changes fields by flat name.

Two kinds of run share the fields, and :attr:`TrainConfig.kind` says which, once:
``"translation"`` (the numbers task, or parallel files ``src``/``tgt``) trains a
:class:`~graphattn.text.model.Seq2Seq`, ``"lm"`` (``task="lm"``) trains a
:class:`~graphattn.nn.CausalLM` on the text files ``text``. What a configuration builds (its data,
tokenizers and model) and the model a checkpoint holds: :mod:`graphattn.text.build`.

A checkpoint stores the configuration as the flat dict of :meth:`TrainConfig.to_flat`, the same
dict as before the fields had roles; :func:`config_from_dict` reads it back, including the dicts of
earlier versions (:data:`RETIRED_FIELDS` dropped, :data:`RENAMED_FIELDS` renamed, missing fields
at their defaults).
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Mapping, Optional

from graphattn import patterns as P
from graphattn.nn.causal_lm import POSITIONALS
from graphattn.text.tokenizer import KINDS
from graphattn.utils.checks import check_file

__all__ = ["DataConfig", "ModelConfig", "OptimConfig", "RunConfig", "TrainConfig", "KINDS_OF_RUN", "TEXT_TASKS",
           "TOKENIZERS", "FIELD_ROLES", "RUN_FIELDS", "RETIRED_FIELDS", "RENAMED_FIELDS", "PRECISIONS",
           "check_config", "config_from_dict", "tokenizer_kind"]

#: what ``TrainConfig.kind`` may be: the model a run trains
KINDS_OF_RUN = ("translation", "lm")
#: the values of ``task``: the built-in translation task (when ``src``/``tgt`` are not given), or a language model
TEXT_TASKS = ("numbers-en-fr", "lm")
TOKENIZERS = ("auto",) + KINDS
# On --resume these come from the command line; everything else from the checkpoint's config.
RUN_FIELDS = ("steps", "time_limit", "out", "resume", "overwrite", "progress", "accumulate", "device", "precision",
              "dist_timeout")
#: fields of earlier versions, ignored when their checkpoints load
RETIRED_FIELDS = ("threads",)
#: fields of earlier versions under their new names (old name -> new name), renamed when their checkpoints load
RENAMED_FIELDS = {"nhead": "num_heads"}
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class DataConfig:
    """Where the text comes from, how it is split and tokenized, and how long its sequences are."""

    task: str = "numbers-en-fr"  # built-in translation task (when src/tgt are not given), or "lm" (needs text)
    src: Optional[str] = None  # source side of a parallel text, one sentence a line
    tgt: Optional[str] = None  # target side: line i translates line i of src
    valid_src: Optional[str] = None  # validation source file (default: split off src/tgt)
    valid_tgt: Optional[str] = None  # validation target file
    text: Optional[list] = None  # lm: text files to learn, one document each
    valid_text: Optional[list] = None  # lm: validation text files (default: documents split off text)
    valid_fraction: float = 0.05  # share of src/tgt (or of text's documents) held out for validation
    train_size: int = 20_000  # numbers task: training pairs (at least its ~130 core numbers)
    valid_size: int = 500  # numbers task: validation pairs
    test_size: int = 1_000  # numbers task: test pairs, uniform and round (what `graphattn evaluate` scores)
    tokenizer: str = "auto"  # bpe, unigram, char or word, trained on the training text; auto: word for numbers, else bpe
    vocab_size: Optional[int] = None  # most tokens a tokenizer holds (4 specials included); default: bpe/unigram 8000 (BPE merges need 2% of the lines), word/char all
    shared_vocab: bool = False  # translation: one tokenizer for both sides, trained on both
    min_frequency: Optional[int] = None  # bpe: merge only pairs seen this often (default: 2% of the lines, at least 2)
    max_len: int = 64  # translation: longest sentence in tokens (longer ones are cut) and most tokens generated
    context: int = 256  # lm: tokens in a training sequence

    @property
    def numbers_task(self) -> bool:
        """Whether the data is the built-in numbers task (translation without files)."""
        return self.task != "lm" and self.src is None


@dataclass(frozen=True)
class ModelConfig:
    """The network: its attention patterns and sizes."""

    encoder_pattern: str = "dense"  # encoder self-attention, a patterns.parse spec ("window:16")
    decoder_pattern: str = "causal"  # decoder (or lm) self-attention ("causal&window:16"); must be causal
    positional: str = "sinusoidal"  # lm: sinusoidal positions, or a learned relative-position bias ("relative")
    d_model: int = 128  # model width
    num_heads: int = 4  # attention heads
    layers: int = 3  # encoder layers and decoder layers (each)
    ff: int = 512  # feed-forward width
    dropout: float = 0.1  # dropout everywhere, embeddings included
    reference_torch: bool = False  # torch.nn.Transformer layers in place of the graph layers


@dataclass(frozen=True)
class OptimConfig:
    """The loss, the batches and the optimizer's schedule."""

    label_smoothing: float = 0.1  # of the cross-entropy
    steps: int = 1_000  # optimizer steps; scheduled sampling ramps over them
    batch_size: Optional[int] = None  # pairs (lm: sequences) a batch, per process and micro-batch (default 128, lm 16)
    max_tokens: Optional[int] = None  # padded tokens a batch, per process and micro-batch (LengthBucketSampler counts)
    accumulate: int = 1  # micro-batches whose gradients are summed before each optimizer step
    lr_factor: float = 1.0  # Noam: lr = factor * d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)
    warmup: int = 400  # Noam warm-up steps (the lr peaks there)
    clip_norm: float = 1.0  # clip the global gradient L2 norm to this (0: no clipping)
    scheduled_sampling: float = 0.0  # final share of decoder inputs replaced by model predictions


@dataclass(frozen=True)
class RunConfig:
    """How long the run goes, how it validates, where it writes and on what it runs."""

    time_limit: Optional[float] = None  # stop after this many wall-clock seconds of the loop, validation included
    eval_every: int = 200  # steps between validations (each also writes last.pt)
    eval_seconds: Optional[float] = None  # also validate when this many seconds passed since the last validation
    valid_subset: Optional[int] = None  # translation: validate (in the loop) on this many fixed pairs, not all
    out: str = "runs/train"  # directory of checkpoints, log and plots
    seed: int = 0  # model init, batch order and the numbers task's split
    resume: bool = False  # continue exactly from out/last.pt
    overwrite: bool = False  # a new run may replace the run in out (its files go once the new run's first checkpoint is written)
    progress: bool = True  # show a tqdm progress bar
    device: str = "auto"  # cpu, cuda (the LOCAL_RANK-th GPU) or auto (a GPU if there is one)
    precision: str = "fp32"  # fp32, or bf16 (autocast; weights, optimizer and attention sums stay fp32)
    dist_timeout: float = 600.0  # seconds a process waits for the others before the run fails


_ROLES = {"data": DataConfig, "model": ModelConfig, "optim": OptimConfig, "run": RunConfig}
#: flat field name (the flag's name) -> the role that holds it
FIELD_ROLES = {f.name: role for role, cls in _ROLES.items() for f in fields(cls)}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on, by role; each field of a role is one ``graphattn train`` flag.

    Build one from flat field names with :meth:`from_flat` (``TrainConfig.from_flat(d_model=64,
    steps=500)``), or from its roles (``TrainConfig(model=ModelConfig(d_model=64))``). Process-wide
    settings (torch threads, logging) belong to the entry point, not to the run: ``graphattn train
    --threads`` sets them before calling :func:`~graphattn.text.train.train`.
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        for role, cls in _ROLES.items():
            if not isinstance(getattr(self, role), cls):
                raise TypeError(f"{role} must be a {cls.__name__}, got {type(getattr(self, role)).__name__}")

    @property
    def kind(self) -> str:
        """``"translation"`` or ``"lm"``: the one place that says which kind of model the run
        trains (from ``data.task``)."""
        return "lm" if self.data.task == "lm" else "translation"

    @classmethod
    def from_flat(cls, values: Optional[Mapping] = None, /, **more) -> "TrainConfig":
        """A configuration from flat field names (``values`` and keywords); fields not named keep
        their defaults. ``ValueError`` names a field that no role holds."""
        flat = {**(values or {}), **more}
        _check_names(flat)
        parts = {role: cls_(**{n: v for n, v in flat.items() if FIELD_ROLES[n] == role}) for role, cls_ in _ROLES.items()}
        return cls(**parts)

    def to_flat(self) -> dict:
        """``{flat field name: value}`` of every field of every role (what a checkpoint stores)."""
        return {f.name: getattr(getattr(self, role), f.name) for role, cls in _ROLES.items() for f in fields(cls)}

    def replace(self, **flat) -> "TrainConfig":
        """A copy with the fields named by their flat names changed (``config.replace(out="runs/b")``)."""
        _check_names(flat)
        parts = {role: replace(getattr(self, role), **{n: v for n, v in flat.items() if FIELD_ROLES[n] == role})
                 for role in _ROLES}
        return TrainConfig(**parts)


def _check_names(flat: Mapping) -> None:
    """``ValueError`` naming the flat names that no role holds (and the new name of a renamed one)."""
    unknown = sorted(set(flat) - set(FIELD_ROLES))
    if unknown:
        renamed = [f"{n} is now {RENAMED_FIELDS[n]}" for n in unknown if n in RENAMED_FIELDS]
        raise ValueError(f"unknown TrainConfig fields {unknown}" + (f" ({'; '.join(renamed)})" if renamed else ""))


def check_config(config: TrainConfig) -> None:
    """Raise ``ValueError`` (or ``FileNotFoundError``) naming the first bad field of ``config``."""
    flat = config.to_flat()
    minimum = dict.fromkeys(("d_model", "num_heads", "layers", "ff", "steps", "warmup", "eval_every", "train_size",
                             "accumulate", "context"), 1) | {"valid_size": 0, "test_size": 0, "max_len": 2}
    for name, lowest in minimum.items():
        value = flat[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest:
            raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")
    for name, lowest in (("batch_size", 1), ("max_tokens", 1), ("vocab_size", 5), ("min_frequency", 1),
                         ("valid_subset", 1)):
        value = flat[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lowest):
            raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")
    model, optim, run = config.model, config.optim, config.run
    if model.d_model % model.num_heads:
        raise ValueError(f"d_model ({model.d_model}) must be divisible by num_heads ({model.num_heads})")
    for name, lo, hi in (("dropout", 0, 1), ("label_smoothing", 0, 1)):
        if not lo <= flat[name] < hi:
            raise ValueError(f"{name} must be in [{lo}, {hi}), got {flat[name]}")
    if not 0 < config.data.valid_fraction < 1:  # 0 would leave nothing to validate on
        raise ValueError(f"valid_fraction must be in (0, 1), got {config.data.valid_fraction}")
    if not 0 <= optim.scheduled_sampling <= 1:
        raise ValueError(f"scheduled_sampling must be in [0, 1], got {optim.scheduled_sampling}")
    if not optim.lr_factor > 0 or optim.clip_norm < 0:
        raise ValueError(f"need lr_factor > 0 and clip_norm >= 0, got {optim.lr_factor} and {optim.clip_norm}")
    for name in ("time_limit", "eval_seconds"):
        if flat[name] is not None and not flat[name] > 0:
            raise ValueError(f"{name} must be > 0 seconds, got {flat[name]}")
    if run.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {run.device!r}")
    if run.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {run.precision!r}")
    if not run.dist_timeout > 0:
        raise ValueError(f"dist_timeout must be > 0 seconds, got {run.dist_timeout}")
    for name, choices in (("tokenizer", TOKENIZERS), ("positional", POSITIONALS)):
        if flat[name] not in choices:
            raise ValueError(f"{name} must be one of {list(choices)}, got {flat[name]!r}")
    kind = tokenizer_kind(config)
    if kind in ("bpe", "unigram") and config.data.vocab_size is not None and config.data.vocab_size < 260:
        raise ValueError(f"vocab_size must be >= 260 for a byte-level {kind} tokenizer "
                         f"(4 specials and 256 bytes), got {config.data.vocab_size}")
    _check_patterns(config.model)
    _check_data(config)


def _check_patterns(model: ModelConfig) -> None:
    for name in ("encoder_pattern", "decoder_pattern"):
        pattern = P.parse(getattr(model, name))  # ValueError naming the unknown pattern
        if not pattern.position_based:
            raise ValueError(f"{name} {getattr(model, name)!r} follows a graph's edges, and text has none: "
                             f"use a sequence pattern (dense, causal, window:16, block:8, bigbird:3:1:2:0, ...)")
        if model.reference_torch and pattern.as_band() is None:
            raise ValueError(f"{name} {getattr(model, name)!r}: the torch reference computes band patterns only")
    decoder = P.parse(model.decoder_pattern)
    if not decoder.is_causal_band:
        raise ValueError(f"decoder_pattern must be a causal band ('causal' or 'causal&window:W'), got {decoder!r}")


def _check_data(config: TrainConfig) -> None:
    """The fields that say where the data comes from agree with each other and with the kind of
    run, and the files exist."""
    data = config.data
    if data.task not in TEXT_TASKS:
        raise ValueError(f"unknown task {data.task!r}; choose one of {list(TEXT_TASKS)} or give src and tgt files")
    if (data.src is None) != (data.tgt is None) or (data.valid_src is None) != (data.valid_tgt is None):
        raise ValueError("give src and tgt together, and valid_src and valid_tgt together")
    if data.src is None and data.valid_src is not None:
        raise ValueError("valid_src/valid_tgt need src/tgt")
    if config.kind == "lm":
        if data.src is not None:
            raise ValueError("task 'lm' learns text files (--text), not parallel files (--src/--tgt): drop --task lm "
                             "to translate, or --src/--tgt to learn a language model")
        if not data.text:
            raise ValueError("task 'lm' needs text files to learn (--text FILE ...)")
        for name, value in (("reference_torch", config.model.reference_torch), ("shared_vocab", data.shared_vocab),
                            ("scheduled_sampling", config.optim.scheduled_sampling)):
            if value:
                raise ValueError(f"{name} is an option of translation, not of task 'lm'")
    elif data.text or data.valid_text:
        raise ValueError("text and valid_text are the files of task 'lm' (--task lm)")
    files = [("src", data.src), ("tgt", data.tgt), ("valid_src", data.valid_src), ("valid_tgt", data.valid_tgt)]
    files += [(name, path) for name in ("text", "valid_text") for path in (getattr(data, name) or [])]
    for name, path in files:
        if path is not None:
            check_file(path, name)


def config_from_dict(d: Mapping) -> TrainConfig:
    """The configuration a checkpoint stores (the flat dict of :meth:`TrainConfig.to_flat`).

    Fields that older versions stored and this one no longer has (:data:`RETIRED_FIELDS`) are
    dropped, renamed ones (:data:`RENAMED_FIELDS`) take their new names, and fields they lacked
    take their defaults, so their checkpoints still load. ``ValueError`` for anything else: a
    dict that is not one, or fields this version does not know (a newer graphattn wrote it?).
    """
    if not isinstance(d, Mapping):
        raise ValueError(f"its config is a {type(d).__name__}, not a dict of TrainConfig fields")
    flat = {RENAMED_FIELDS.get(k, k): v for k, v in d.items() if k not in RETIRED_FIELDS}
    unknown = sorted(set(flat) - set(FIELD_ROLES))
    if unknown:
        raise ValueError(f"its config holds fields this version of graphattn does not know: {unknown} "
                         f"(written by a newer graphattn?)")
    return TrainConfig.from_flat(flat)


def tokenizer_kind(config: TrainConfig) -> str:
    """The tokenizer ``config`` trains: its ``tokenizer``, with ``"auto"`` resolved (word tokens for
    the numbers task, whose words all repeat; byte-level BPE for any other text)."""
    if config.data.tokenizer != "auto":
        return config.data.tokenizer
    return "word" if config.data.numbers_task else "bpe"
