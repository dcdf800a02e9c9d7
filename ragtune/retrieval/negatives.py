"""Hard-negative mining from BM25 and a dense model, never returning a labelled-relevant passage.

Why not ``sentence_transformers.util.mine_hard_negatives``: it has no lexical (BM25) or hybrid
source, and it works on texts only (since 6.x it does exclude every positive of a repeated query,
but it returns texts, not the passage ids that the reranker's examples, the dev first stage and the
batch sampler need, and it encodes the corpus again on each call). Here each query's candidates come
from the run's one first stage (:class:`ragtune.retrieval.first_stage.FirstStage`: one BM25 index, one
dense encoding of the corpus, the hybrid fused as everywhere else), cut to a rank window, with every
passage labelled relevant to the query removed.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from typing import Sequence

from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.errors import UserError
from ragtune.retrieval.first_stage import FirstStage

logger = logging.getLogger(__name__)

NEGATIVE_SOURCES = ("bm25", "dense", "both", "hybrid", "none")


def mining_source(first_stage: str | None, hard_negative_source: str) -> str:
    """Where hard negatives come from: the ``--first_stage`` when one is given, else ``--hard_negative_source``."""
    return first_stage or hard_negative_source


@dataclass
class NegativeCandidates:
    """Per query, candidate hard negatives in rank order (BM25 and dense interleaved)."""

    per_query: list[list[str]]
    sources: list[str] = field(default_factory=list)


def mine_candidates(queries: Sequence[LabelledQuery], stage: FirstStage, source: str = "both",
                    rank_range: tuple[int, int] = (3, 50)) -> NegativeCandidates:
    """Candidates from ranks ``rank_range[0]``..``rank_range[1]`` (1-based, inclusive) of each source.

    The window skips the very top ranks, where unlabelled true positives hide in small domain corpora.
    ``stage`` is the first stage whose index, passage embeddings and hybrid fusion the ranks come from;
    ``both`` interleaves BM25's and the dense model's ranks, ``hybrid`` takes the stage's fused ranking.
    Without a dense model, dense sources fall back to BM25 (with a warning).
    """
    lo, hi = rank_range
    if lo < 1 or hi < lo:
        raise UserError(f"--hard_negative_range must be two ranks 1 <= MIN <= MAX, got {lo} {hi}")
    if source in ("dense", "hybrid") and stage.embedding_model is None:
        logger.warning("%s hard-negative mining needs a dense model; mining from BM25 alone", source.capitalize())
        source = "bm25"
    kinds = {"both": ("bm25", "dense") if stage.embedding_model is not None else ("bm25",)}.get(source, (source,))
    texts = [q.query for q in queries]
    rankings = {kind: stage.rankings(texts, hi, kind) for kind in kinds}
    per_query = [_interleave([ranked[qi] for ranked in rankings.values()], query, lo, hi)
                 for qi, query in enumerate(queries)]
    return NegativeCandidates(per_query=per_query, sources=list(rankings))


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
