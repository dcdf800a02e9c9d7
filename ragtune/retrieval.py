"""Dense retrieval: encode with the model's own query/passage prompts, top-k by chunked matmul."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

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
                chunk_size: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """Top-k passages per query by dot product, scanning the corpus in chunks.

    Memory is bounded by queries x chunk_size scores, however large the corpus. Ties keep the
    lower passage index first, so rankings are deterministic.
    """
    k = min(k, passage_embeddings.shape[0])
    queries = query_embeddings.float()
    best_scores = torch.full((queries.shape[0], 0), float("-inf"), device=queries.device)
    best_idx = torch.zeros((queries.shape[0], 0), dtype=torch.long, device=queries.device)
    for start in range(0, passage_embeddings.shape[0], chunk_size):
        chunk = passage_embeddings[start:start + chunk_size].to(queries.device).float()
        scores = queries @ chunk.T
        chunk_scores, chunk_idx = torch.topk(scores, min(k, chunk.shape[0]), dim=1)
        best_scores = torch.cat([best_scores, chunk_scores], dim=1)
        best_idx = torch.cat([best_idx, chunk_idx + start], dim=1)
        # Order by score desc, then index asc, and keep k.
        order = np.lexsort((best_idx.cpu().numpy(), -best_scores.cpu().numpy()), axis=1)[:, :k]
        order_t = torch.from_numpy(order).to(queries.device)
        best_scores = torch.gather(best_scores, 1, order_t)
        best_idx = torch.gather(best_idx, 1, order_t)
    return best_idx.cpu().numpy(), best_scores.cpu().numpy()
