"""Translation metrics of detokenised text."""
from __future__ import annotations

from typing import Sequence

__all__ = ["bleu", "exact_match"]

def _check_corpora(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"hypotheses and references must have the same length, got "
                         f"{len(hypotheses)} and {len(references)}")
    if not hypotheses:
        raise ValueError("hypotheses and references must not be empty")


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU in ``[0, 100]`` of detokenised text, with sacrebleu's defaults (13a tokens)."""
    import sacrebleu  # imported here: only evaluation needs it

    _check_corpora(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)


def exact_match(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Percentage ``[0, 100]`` of hypotheses equal to their reference (after stripping ends)."""
    _check_corpora(hypotheses, references)
    return 100.0 * sum(h.strip() == r.strip() for h, r in zip(hypotheses, references)) / len(hypotheses)
