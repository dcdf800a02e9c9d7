"""The first stage every later stage sees: BM25, dense or a hybrid of both."""

from __future__ import annotations

import pytest

from ragtune.core.data import SAMPLE_CORPUS, load_corpus
from ragtune.core.errors import UserError
from ragtune.retrieval.first_stage import FirstStage


def test_hybrid_first_stage_needs_an_embedding_model():
    corpus = load_corpus(SAMPLE_CORPUS)
    with pytest.raises(UserError, match="--first_stage hybrid needs --embedding_model"):
        FirstStage(corpus, None, kind="hybrid")
