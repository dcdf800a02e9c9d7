"""Answer metrics: ROUGE-L that keeps Vietnamese diacritics, BLEU-4 and string presence."""

from __future__ import annotations

import pytest

from ragtune.core.answer_metrics import UnicodeWordTokenizer, bleu4, rouge_l, string_presence


def test_rouge_l_keeps_vietnamese_diacritics():
    from rouge_score import rouge_scorer

    a = "Người dẫn đầu được thưởng một chiếc cúp."
    b = "Buổi họp diễn ra vào thứ bảy hằng tuần."
    default = rouge_scorer.RougeScorer(["rougeL"]).score(a, b)["rougeL"].fmeasure
    ours = rouge_l(a, b)
    # The stock tokenizer keeps only [a-z0-9]: "người" -> "ng", "i"; fragments of unrelated words match.
    assert default > 0.25
    assert ours == 0.0
    assert rouge_l(a, a) == pytest.approx(1.0)
    assert UnicodeWordTokenizer().tokenize("Được THƯỞNG 30 triệu!") == ["được", "thưởng", "30", "triệu"]
    # NFD input (Word/Excel) equals NFC.
    import unicodedata

    assert rouge_l(unicodedata.normalize("NFD", a), a) == pytest.approx(1.0)


def test_bleu_and_string_presence():
    refs = ["CLB được thành lập ngày 14 tháng 10 năm 2013.", "Phí tham gia là 500.000 đồng mỗi học sinh."]
    assert bleu4(refs, refs) == pytest.approx(1.0)
    assert 0.0 <= bleu4(["Không biết.", "Phí là 500.000 đồng."], refs) < 0.5
    assert string_presence("Theo tài liệu, phí là 500.000 đồng mỗi học sinh!", "500.000 đồng mỗi học sinh") == 1.0
    assert string_presence("Không biết", "500.000 đồng") == 0.0
    assert string_presence("anything", "") == 0.0
