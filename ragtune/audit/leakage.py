"""Train/test leakage: a held-out query that is a (near) copy of a training query.

Similarity is the Jaccard index of the two queries' token SETS after case, accent and punctuation folding
(:func:`ragtune.audit.text.fold`), so word order, diacritics and "?" do not matter.

Threshold 0.8 - why: a copy with one word changed, added or dropped scores 0.85-0.93 at the usual query
length (10-16 tokens); reordering scores 1.0. Measured on the 100 NeoRAG train queries
(train_data_proptit.xlsx): the closest pair of genuinely different questions scores 0.62 ("CLB có những hình
thức khen thưởng nào cho thành viên xuất sắc?" vs "... nào ngoài 'Thành viên tiêu biểu'?"), 16 of 4950
pairs score >= 0.5 and none >= 0.7. rapidfuzz's token_set_ratio was rejected: it gives 100 whenever one
query's words are a subset of the other's and 88-92 to those different NeoRAG questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import sparse

from ragtune.audit.text import tokens
from ragtune.core.data import LabelledQuery

LEAK_THRESHOLD = 0.8
CHUNK_ROWS = 2000


@dataclass(frozen=True)
class LeakedPair:
    train_index: int
    test_index: int
    similarity: float
    exact: bool  # same token set (identical up to case, accents, punctuation and word order)


def _token_sets(texts: Sequence[str]) -> list[frozenset[str]]:
    return [frozenset(tokens(text)) for text in texts]


def _incidence(sets: Sequence[frozenset[str]], vocab: dict[str, int]) -> sparse.csr_matrix:
    rows, cols = [], []
    for i, token_set in enumerate(sets):
        for token in token_set:
            rows.append(i)
            cols.append(vocab.setdefault(token, len(vocab)))
    data = np.ones(len(rows), dtype=np.float32)
    return sparse.csr_matrix((data, (rows, cols)), shape=(len(sets), max(len(vocab), 1)))


def similar_pairs(left: Sequence[str], right: Sequence[str] | None = None,
                  threshold: float = LEAK_THRESHOLD) -> list[tuple[int, int, float]]:
    """(i, j, jaccard) for every pair at or above ``threshold``; ``right=None`` compares ``left`` with itself (i < j).

    Sparse token incidence products give every pair's intersection at once, so 10k x 10k queries take a
    second rather than a Python double loop.
    """
    left_sets = _token_sets(left)
    right_sets = left_sets if right is None else _token_sets(right)
    vocab: dict[str, int] = {}
    a = _incidence(left_sets, vocab)
    b = a if right is None else _incidence(right_sets, vocab)
    a.resize((a.shape[0], len(vocab) or 1))
    b.resize((b.shape[0], len(vocab) or 1))
    sizes_a = np.asarray([len(s) for s in left_sets], dtype=np.float64)
    sizes_b = np.asarray([len(s) for s in right_sets], dtype=np.float64)
    b_t = b.T.tocsc()
    pairs = []
    # Row blocks bound the memory of the product: common words ("là", "của", "CLB") make it dense.
    for lo in range(0, a.shape[0], CHUNK_ROWS):
        inter = (a[lo:lo + CHUNK_ROWS] @ b_t).tocoo()
        rows = inter.row.astype(np.int64) + lo
        cols = inter.col.astype(np.int64)
        shared = inter.data.astype(np.float64)
        union = sizes_a[rows] + sizes_b[cols] - shared
        scores = np.divide(shared, union, out=np.ones_like(shared), where=union > 0)
        keep = scores >= threshold
        if right is None:
            keep &= rows < cols
        pairs.extend(zip(rows[keep].tolist(), cols[keep].tolist(), scores[keep].tolist()))
    # Two empty token sets (queries of punctuation only) are equal too.
    empty_a = [i for i, s in enumerate(left_sets) if not s]
    empty_b = [j for j, s in enumerate(right_sets) if not s]
    pairs.extend((i, j, 1.0) for i in empty_a for j in empty_b if right is not None or i < j)
    pairs.sort(key=lambda p: (-p[2], p[0], p[1]))
    return pairs


def find_leakage(train: Sequence[LabelledQuery], test: Sequence[LabelledQuery],
                 threshold: float = LEAK_THRESHOLD) -> list[LeakedPair]:
    """Every (train, test) query pair that is the same question up to case, accents, punctuation and order."""
    if not train or not test:
        return []
    pairs = similar_pairs([q.query for q in train], [q.query for q in test], threshold)
    return [LeakedPair(i, j, round(score, 4), score >= 1.0) for i, j, score in pairs]


def near_duplicate_queries(queries: Sequence[LabelledQuery],
                           threshold: float = LEAK_THRESHOLD) -> list[tuple[int, int, float]]:
    """Near-copies inside one query set: they straddle any random dev split and leak into it."""
    return similar_pairs([q.query for q in queries], None, threshold)


def near_duplicate_groups(texts: Sequence[str], threshold: float = LEAK_THRESHOLD) -> list[list[int]]:
    """Every text's index in exactly one group; texts linked by near-copy pairs, also through others, share a group.

    Why transitive: when A is a near-copy of B and B of C, a split that keeps each pair together must keep all
    three together, even if A and C score below the threshold. Groups are sorted inside and by their first index.
    """
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in similar_pairs(texts, None, threshold):
        a, b = root(i), root(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for i in range(len(texts)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())
