import pytest
import sacrebleu

from graphattn.text.metrics import sacrebleu_score

HYPS = ["Ein Mann fährt Fahrrad.", "Zwei Hunde spielen im Schnee .", "eine Frau"]
REFS = ["Ein Mann fährt ein Fahrrad.", "Zwei Hunde spielen im Schnee.", "Eine Frau singt."]


def test_sacrebleu_score_and_signature():
    score, signature = sacrebleu_score(HYPS, REFS)
    assert score == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score)
    # The signature that makes the number reproducible: one reference, cased, 13a, this version.
    for part in ("nrefs:1", "case:mixed", "tok:13a", "smooth:exp", f"version:{sacrebleu.__version__}"):
        assert part in signature


def test_cased():
    lower, _ = sacrebleu_score([h.lower() for h in HYPS], REFS)
    assert lower < sacrebleu_score(HYPS, REFS)[0]


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        sacrebleu_score(HYPS, REFS[:2])
