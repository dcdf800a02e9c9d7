"""The reranker to fine-tune: a one-logit CrossEncoder, with a new head when the base has none.

The reranker reads (query, passage) pairs and outputs one logit. It is trained pointwise with
binary cross-entropy on every labelled positive (label 1) and, per positive, mined hard negatives
and uniform random negatives (label 0), never a passage labelled relevant to the query. On the dev
split it reorders the top-N candidates of a first stage (BM25, or a fine-tuned embedding model),
the way it is used in a RAG pipeline.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ragtune.core.models import load_or_explain, load_with_max_length

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- model


def load_reranker(name: str, max_seq_length: int, flag: str = "--base_model", device: str | None = None):
    """A one-logit CrossEncoder in fp32 (AMP, if any, is the Trainer's job), with a new head if needed.

    A plain encoder (BertModel, XLMRobertaModel, a sentence-transformers embedding model) has no
    sequence-classification head: transformers adds a randomly initialised one, which we say.
    """
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig

    config = load_or_explain(AutoConfig.from_pretrained, name, flag)
    architectures = list(getattr(config, "architectures", None) or [])
    has_head = any(a.endswith("ForSequenceClassification") for a in architectures)
    generative = any(a.endswith("ForCausalLM") for a in architectures)  # yes/no-logit rerankers (Qwen3-Reranker)
    model_kwargs: dict[str, Any] = {"dtype": torch.float32}  # never half: checkpoints saved in fp16 load as fp32
    if has_head and getattr(config, "num_labels", 1) != 1:
        logger.warning("%s %s has a %d-label classification head; replacing it with a new 1-logit reranker head, "
                       "which starts untrained", flag, name, config.num_labels)
        model_kwargs["ignore_mismatched_sizes"] = True
    elif not has_head and not generative:
        logger.warning("%s %s has no sequence-classification head (architectures: %s): adding a new 1-logit head, "
                       "which starts untrained (the 'base' dev metrics are those of a random head)", flag, name,
                       ", ".join(architectures) or "none recorded")
    return load_with_max_length(CrossEncoder, name, flag, max_seq_length, num_labels=1, max_length=max_seq_length,
                                model_kwargs=model_kwargs, device=device)


# ---------------------------------------------------------------------------- dev evaluator


# ---------------------------------------------------------------------------- outputs



