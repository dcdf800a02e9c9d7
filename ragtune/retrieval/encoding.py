"""Query and passage embeddings as tensors, with the model's own prompts: for training, mining and the first stage.

Top-k is :func:`ragtune.core.ranking.dense_top_k`, the one ``evaluate_rag.py`` uses, with the corpus'
``tie_ranks`` so that tied scores are ordered as trec_eval orders them.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
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


def load_embedding_model(name: str | None, flag: str = "--embedding_model", device: str | None = None):
    """An optional embedding model named by a flag (a SentenceTransformer), or None when the flag is unset."""
    if not name:
        return None
    # Imported here: torch and sentence-transformers take seconds that a script's flag checks should not wait for.
    from sentence_transformers import SentenceTransformer

    from ragtune.core.models import load_or_explain

    return load_or_explain(SentenceTransformer, name, flag, device=device)
