"""Dense retrieval during training: encode with the model's own query/passage prompts, then top-k.

Top-k is :func:`ragtune.ranking.dense_top_k`, the one ``evaluate_rag.py`` uses: pass the corpus'
``tie_ranks`` so that tied scores are ordered as trec_eval orders them.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from .ranking import dense_top_k

logger = logging.getLogger(__name__)


def encode_queries(model, texts: Sequence[str], batch_size: int = 32, show_progress_bar: bool = False) -> torch.Tensor:
    """Queries through ``encode_query`` so the prompt saved in the model is applied."""
    return model.encode_query(list(texts), batch_size=batch_size, convert_to_tensor=True,
                              normalize_embeddings=True, show_progress_bar=show_progress_bar)


def encode_passages(model, texts: Sequence[str], batch_size: int = 32, show_progress_bar: bool = False) -> torch.Tensor:
    """Passages through ``encode_document`` so the passage prompt saved in the model is applied."""
    return model.encode_document(list(texts), batch_size=batch_size, convert_to_tensor=True,
                                 normalize_embeddings=True, show_progress_bar=show_progress_bar)


def top_k_dense(query_embeddings: torch.Tensor, passage_embeddings: torch.Tensor, k: int,
                tie_rank: np.ndarray | None = None, chunk_size: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Top-k passages per query by dot product, as (queries x k) index and score arrays.

    ``tie_rank``: :func:`ragtune.ranking.tie_ranks` of the corpus ids (trec_eval's order of tied
    scores). Without it, tied passages keep corpus order: only for callers that have no ids.
    """
    n_passages = len(passage_embeddings)
    k = min(k, n_passages)
    if tie_rank is None:
        tie_rank = np.arange(n_passages, dtype=np.int64)
    idx, scores = dense_top_k(query_embeddings, passage_embeddings, k, tie_rank, chunk_size=chunk_size)
    if not idx:
        return np.zeros((0, k), dtype=np.int64), np.zeros((0, k))
    return np.stack(idx), np.stack(scores)
