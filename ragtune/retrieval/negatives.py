"""Hard-negative mining from BM25 and a dense model, never returning a labelled-relevant passage.

Why not ``sentence_transformers.util.mine_hard_negatives``: it has no lexical (BM25) or hybrid
source, and it works on texts only (since 6.x it does exclude every positive of a repeated query,
but it returns texts, not the passage ids that the reranker's examples, the dev first stage and the
batch sampler need, and it encodes the corpus again on each call). Here each query's candidates come from one BM25 index
and one dense encoding of the corpus (built once per run), cut to a rank window, with every
passage labelled relevant to the query removed. ``hybrid`` mines from the fused BM25 + dense
ranking (:mod:`ragtune.core.fusion`), the first stage a hybrid RAG pipeline retrieves with.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Sequence

from ragtune.core.bm25 import BM25Index
from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.errors import UserError
from ragtune.core.fusion import fuse_all, ranking, runs_from_top_k
from ragtune.core.ranking import bm25_top_k, dense_top_k, tie_ranks

logger = logging.getLogger(__name__)

NEGATIVE_SOURCES = ("bm25", "dense", "both", "hybrid", "none")
FIRST_STAGES = ("bm25", "dense", "hybrid")
# Dense weight of the hybrid ranking when none was chosen on dev queries: the even mix.
DEFAULT_DENSE_WEIGHT = 0.5


def mining_source(first_stage: str | None, hard_negative_source: str) -> str:
    """Where hard negatives come from: the ``--first_stage`` when one is given, else ``--hard_negative_source``."""
    return first_stage or hard_negative_source


@dataclass
class NegativeCandidates:
    """Per query, candidate hard negatives in rank order (BM25 and dense interleaved)."""

    per_query: list[list[str]]
    sources: list[str] = field(default_factory=list)


def mine_candidates(queries: Sequence[LabelledQuery], corpus: Corpus, source: str = "both",
                    rank_range: tuple[int, int] = (3, 50), dense_model=None,
                    batch_size: int = 32, bm25_index: BM25Index | None = None,
                    passage_embeddings=None, dense_weight: float = DEFAULT_DENSE_WEIGHT) -> NegativeCandidates:
    """Candidates from ranks ``rank_range[0]``..``rank_range[1]`` (1-based, inclusive) of each source.

    The window skips the very top ranks, where unlabelled true positives hide in small domain corpora.
    A caller that also retrieves with the same corpus (e.g. a reranker's first stage) passes its
    ``bm25_index`` and the dense model's ``passage_embeddings`` so the corpus is indexed only once.
    ``hybrid`` ranks by :func:`ragtune.core.fusion.weighted_fusion` of the dense and BM25 scores with
    ``dense_weight``; without a dense model it falls back to BM25 (with a warning).
    """
    lo, hi = rank_range
    if lo < 1 or hi < lo:
        raise UserError(f"--hard_negative_range must be two ranks 1 <= MIN <= MAX, got {lo} {hi}")
    if source == "hybrid" and dense_model is None:
        logger.warning("Hybrid hard-negative mining needs a dense model; mining from BM25 alone")
        source = "bm25"
    texts = [q.query for q in queries]
    tie_rank = tie_ranks(corpus.ids)
    top_k: dict[str, tuple] = {}  # (corpus indices, scores) per query, of each source used
    if source in ("bm25", "both", "hybrid"):
        top_k["bm25"] = bm25_top_k(bm25_index if bm25_index is not None else BM25Index(corpus.texts), texts, hi,
                                   tie_rank)
    if source in ("dense", "both", "hybrid") and dense_model is not None:
        top_k["dense"] = _dense_top_k(dense_model, texts, corpus, hi, tie_rank, batch_size, passage_embeddings)
    if source == "hybrid":
        fused = fuse_all(runs_from_top_k(corpus.ids, *top_k["dense"]), runs_from_top_k(corpus.ids, *top_k["bm25"]),
                         dense_weight)
        rankings = {"hybrid": [ranking(run)[:hi] for run in fused]}
    else:
        rankings = {name: [[corpus.ids[i] for i in row] for row in idx] for name, (idx, _) in top_k.items()}
    per_query = [_interleave([ranked[qi] for ranked in rankings.values()], query, lo, hi)
                 for qi, query in enumerate(queries)]
    return NegativeCandidates(per_query=per_query, sources=list(rankings))


def _dense_top_k(model, texts: Sequence[str], corpus: Corpus, k: int, tie_rank, batch_size: int,
                 passage_embeddings=None) -> tuple:
    """The dense model's top ``k`` per query text; the corpus is encoded unless its embeddings are given."""
    # Imported here: ragtune.retrieval.encoding imports torch, which BM25-only mining never needs.
    from ragtune.retrieval.encoding import encode_passages, encode_queries

    q_emb = encode_queries(model, texts, batch_size=batch_size)
    if passage_embeddings is None:
        passage_embeddings = encode_passages(model, corpus.texts, batch_size=batch_size,
                                             show_progress_bar=len(corpus) > 1000)
    return dense_top_k(q_emb, passage_embeddings, k, tie_rank)


def _interleave(rankings: Sequence[Sequence[str]], query: LabelledQuery, lo: int, hi: int) -> list[str]:
    """The query's given negatives, then the sources' ranks ``lo``..``hi`` interleaved rank by rank (so each source
    contributes its hardest candidates first), without duplicates and without any passage relevant to the query."""
    relevant = set(query.relevant_ids)
    merged: list[str] = list(query.given_negative_ids)
    for rank in range(lo - 1, hi):
        for row in rankings:
            if rank < len(row) and row[rank] not in relevant and row[rank] not in merged:
                merged.append(row[rank])
    return [pid for pid in merged if pid not in relevant]


def draw_negatives(candidates: Sequence[str], count: int, rng: random.Random,
                   exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """Draw ``count`` distinct negatives from ``candidates``, favouring the harder (earlier) half."""
    pool = [pid for pid in candidates if pid not in exclude]
    if count <= 0 or not pool:
        return []
    if len(pool) <= count:
        return list(pool)
    # Sampling from the window (FlagEmbedding's practice) avoids always showing the same few
    # negatives; sampling weighted towards the top keeps them hard.
    weights = [1.0 / (1 + i) ** 0.5 for i in range(len(pool))]
    chosen: list[str] = []
    while len(chosen) < count:
        pick = rng.choices(range(len(pool)), weights=weights)[0]
        if pool[pick] not in chosen:
            chosen.append(pool[pick])
            weights[pick] = 0.0
    return chosen


def draw_random_negatives(corpus: Corpus, count: int, rng: random.Random, exclude: set[str]) -> list[str]:
    """Uniform negatives from the whole corpus, excluding the given ids."""
    pool = [pid for pid in corpus.ids if pid not in exclude]
    return rng.sample(pool, min(count, len(pool)))
