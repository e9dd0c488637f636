"""Translation metrics of detokenised text."""
from __future__ import annotations

from typing import Sequence

__all__ = ["bleu", "bleu_tokenize", "sacrebleu_score", "exact_match"]

#: BLEU's longest n-gram
MAX_ORDER = 4

def _check_corpora(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"hypotheses and references must have the same length, got "
                         f"{len(hypotheses)} and {len(references)}")
    if not hypotheses:
        raise ValueError("hypotheses and references must not be empty")


def bleu_tokenize(references: Sequence[str]) -> str:
    """sacrebleu's tokenization for ``references``: ``"13a"`` (words and punctuation, its
    default), or ``"char"`` when the references average fewer than 4 words.

    Word 4-gram BLEU of a corpus whose sentences are one or two words (languages that write a
    number, or any compound, as one word: German, Dutch, Japanese...) has no 3- and 4-grams to
    count and is 0 even for perfect translations; BLEU over characters still measures them.
    """
    words = sum(len(r.split()) for r in references)
    return "char" if words < MAX_ORDER * len(references) else "13a"


def bleu(hypotheses: Sequence[str], references: Sequence[str], tokenize: str = "auto") -> float:
    """Corpus BLEU in ``[0, 100]`` of detokenised text with sacrebleu; ``tokenize`` is one of
    sacrebleu's tokenizers (``"13a"``, ``"char"``, ``"zh"``...) or ``"auto"`` (:func:`bleu_tokenize`)."""
    import sacrebleu  # imported here: only evaluation needs it

    _check_corpora(hypotheses, references)
    tokenize = bleu_tokenize(references) if tokenize == "auto" else tokenize
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score)


def sacrebleu_score(hypotheses: Sequence[str], references: Sequence[str]) -> tuple[float, str]:
    """``(BLEU, signature)``: sacrebleu's corpus BLEU of detokenised, cased text with its default
    ``13a`` tokenizer and one reference, and the signature that says so
    (``nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:...``), to report beside the score."""
    import sacrebleu

    _check_corpora(hypotheses, references)
    metric = sacrebleu.metrics.BLEU()
    score = metric.corpus_score(list(hypotheses), [list(references)])
    return float(score.score), str(metric.get_signature())


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Percentage ``[0, 100]`` of hypotheses equal to their reference (after stripping ends)."""
    _check_corpora(hypotheses, references)
    return 100.0 * sum(h.strip() == r.strip() for h, r in zip(hypotheses, references)) / len(hypotheses)
