"""The embedding model to fine-tune: loaded, its sequence length clamped, its prompts set, its bottom layers frozen."""

from __future__ import annotations

import argparse

from ragtune.core.models import freeze_bottom_layers, load_with_max_length


def load_embedding_model(args: argparse.Namespace):
    """``--base_model`` as a SentenceTransformer, checked before the output dir is touched.

    ``--query_prompt`` / ``--passage_prompt`` are saved in the model (``encode_query`` / ``encode_document``
    apply them); ``--freeze_layers`` freezes the embeddings and the bottom N encoder layers.
    """
    from sentence_transformers import SentenceTransformer

    model = load_with_max_length(SentenceTransformer, args.base_model, "--base_model", args.max_seq_length)
    if args.query_prompt is not None:
        model.prompts["query"] = args.query_prompt
    if args.passage_prompt is not None:
        model.prompts["document"] = args.passage_prompt
    freeze_bottom_layers(model, args.freeze_layers)
    return model


def training_prompts(model, negatives_per_row: int) -> dict[str, str] | None:
    """The Trainer's per-column prompts: the model's query prompt on anchors, its passage prompt on the rest."""
    query_prompt, passage_prompt = model.prompts.get("query") or "", model.prompts.get("document") or ""
    if not (query_prompt or passage_prompt):
        return None
    return {"anchor": query_prompt, "positive": passage_prompt,
            **{f"negative_{j + 1}": passage_prompt for j in range(negatives_per_row)}}
