"""Okapi BM25 over a sparse term matrix: the lexical baseline and hard-negative source.

Why not ``rank_bm25``: it scores every document in a Python loop per query term, which is slow
past a few thousand passages; here the whole corpus is one sparse matrix product per query batch.
Tokens are lower-cased Unicode word characters, so Vietnamese syllables keep their diacritics
(``tokenizer="syllable"``); ``tokenizer="word"`` first joins the syllables of Vietnamese words with
pyvi's word segmenter ("câu lạc bộ" -> one token "câu_lạc_bộ").
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Sequence

import numpy as np
from scipy import sparse

_TOKEN = re.compile(r"\w+", re.UNICODE)


TOKENIZERS = ("syllable", "word")
DEFAULT_TOKENIZER = "syllable"


def tokenize(text: str, tokenizer: str = DEFAULT_TOKENIZER) -> list[str]:
    text = unicodedata.normalize("NFC", text)
    if tokenizer == "word":
        from pyvi import ViTokenizer  # optional dependency, only for word segmentation

        text = ViTokenizer.tokenize(text)
    elif tokenizer != "syllable":
        raise ValueError(f"unknown BM25 tokenizer {tokenizer!r}; one of {', '.join(TOKENIZERS)}")
    return _TOKEN.findall(text.lower())


class BM25Index:
    """BM25 with Lucene's non-negative idf: log(1 + (N - df + 0.5) / (df + 0.5))."""

    def __init__(self, texts: Sequence[str], k1: float = 1.5, b: float = 0.75,
                 tokenizer: str = DEFAULT_TOKENIZER) -> None:
        self.tokenizer = tokenizer
        self.vocabulary: dict[str, int] = {}
        rows, cols, counts = [], [], []
        lengths = np.zeros(len(texts), dtype=np.float64)
        for doc, text in enumerate(texts):
            tokens = tokenize(text, tokenizer)
            lengths[doc] = len(tokens)
            for term, count in Counter(tokens).items():
                rows.append(doc)
                cols.append(self.vocabulary.setdefault(term, len(self.vocabulary)))
                counts.append(count)
        n_docs = len(texts)
        tf = sparse.csr_matrix((np.array(counts, dtype=np.float64), (rows, cols)),
                               shape=(n_docs, max(len(self.vocabulary), 1)))
        df = np.bincount(np.array(cols, dtype=np.int64), minlength=tf.shape[1]).astype(np.float64)
        idf = np.log1p((n_docs - df + 0.5) / (df + 0.5))
        avg_len = lengths.mean() if n_docs and lengths.mean() > 0 else 1.0
        norm = k1 * (1 - b + b * lengths / avg_len)
        tf = tf.tocoo()
        weights = tf.data * (k1 + 1) / (tf.data + norm[tf.row]) * idf[tf.col]
        # Documents x terms, each cell the BM25 contribution of one occurrence-weighted term.
        self.weights = sparse.csr_matrix((weights, (tf.row, tf.col)), shape=tf.shape).T.tocsr()
        self.n_docs = n_docs

    def query_matrix(self, queries: Sequence[str]) -> sparse.csr_matrix:
        rows, cols, vals = [], [], []
        for qi, query in enumerate(queries):
            for term, count in Counter(tokenize(query, self.tokenizer)).items():
                col = self.vocabulary.get(term)
                if col is not None:
                    rows.append(qi)
                    cols.append(col)
                    vals.append(float(count))
        return sparse.csr_matrix((vals, (rows, cols)), shape=(len(queries), self.weights.shape[0]))

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """Dense (queries x documents) score matrix (a few hundred passages per query here: no need for sparse top-k;
        :func:`ragtune.core.ranking.bm25_top_k` ranks it)."""
        return np.asarray((self.query_matrix(queries) @ self.weights).todense())
