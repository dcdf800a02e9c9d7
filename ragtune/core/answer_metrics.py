"""Answer metrics against a reference answer: ROUGE-L, BLEU-4 and string presence, shared by training and evaluation."""

from __future__ import annotations

import re
import threading
import unicodedata
from typing import Sequence

# Metrics of an answer against the reference answer (no judge): the generator's dev metrics.
REFERENCE_ANSWER_METRICS = ("rouge_l", "bleu4", "string_presence")

# The ROUGE scorer, built once on first use (rouge_score is only imported then) and shared by threads.
_SCORER = None
_SCORER_LOCK = threading.Lock()


class UnicodeWordTokenizer:
    """rouge_score tokenizer: NFC, lower case, Unicode word characters (``\\w+``), so "được" stays "được"."""

    _word = re.compile(r"\w+", re.UNICODE)

    def tokenize(self, text: str) -> list[str]:
        return self._word.findall(unicodedata.normalize("NFC", text or "").lower())


def _rouge_scorer():
    global _SCORER
    with _SCORER_LOCK:
        if _SCORER is None:
            from rouge_score import rouge_scorer

            _SCORER = rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeWordTokenizer())
    return _SCORER


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 between two texts with :class:`UnicodeWordTokenizer`."""
    return float(_rouge_scorer().score(reference or "", prediction or "")["rougeL"].fmeasure)


def bleu4(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU-4 with sacrebleu's defaults (13a tokenizer, exp smoothing), in [0, 1]."""
    import sacrebleu

    if not predictions:
        return 0.0
    preds = [unicodedata.normalize("NFC", p or "") for p in predictions]
    refs = [unicodedata.normalize("NFC", r or "") for r in references]
    return float(sacrebleu.corpus_bleu(preds, [refs]).score) / 100.0


def normalize_answer(text: str) -> str:
    text = unicodedata.normalize("NFC", text or "").lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


def string_presence(prediction: str, reference: str) -> float:
    ref = normalize_answer(reference)
    return 1.0 if ref and ref in normalize_answer(prediction) else 0.0

