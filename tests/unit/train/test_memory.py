"""The GPU memory estimate for the encoder templates, which the README and benchmarks/bench_gpu.py quote."""

from __future__ import annotations

import pytest


def test_encoder_parameter_count_matches_the_model():
    """The estimate's parameter formula against real XLM-R modules (tiny config, both heads)."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaModel

    from ragtune.train.memory import XLMR_LARGE, EncoderShape

    config = XLMRobertaConfig(vocab_size=300, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                              intermediate_size=48, max_position_embeddings=130, type_vocab_size=1, num_labels=1)
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert EncoderShape.from_config(config).params() == count(XLMRobertaModel(config))
    assert EncoderShape.from_config(config, head="classifier").params() == count(
        XLMRobertaForSequenceClassification(config))
    assert round(XLMR_LARGE.params() / 1e6) == 568  # BAAI/bge-m3's published size


def test_estimate_follows_the_template_settings():
    from ragtune.train.memory import XLMR_LARGE, estimate_encoder_memory

    forwards = [(8, 32), (8, 384), (8, 384)]
    full = estimate_encoder_memory(XLMR_LARGE, forwards=forwards, frozen_layers=0, gradient_checkpointing=False)
    frozen = estimate_encoder_memory(XLMR_LARGE, forwards=forwards, frozen_layers=4, gradient_checkpointing=False)
    ckpt = estimate_encoder_memory(XLMR_LARGE, forwards=forwards, frozen_layers=4, gradient_checkpointing=True)
    # Freezing the embeddings (256M parameters) and 4 layers removes their gradients and AdamW state.
    assert frozen["optimizer"] < 0.5 * full["optimizer"] and frozen["gradients"] < 0.5 * full["gradients"]
    assert ckpt["activations"] < 0.2 * frozen["activations"]
    assert frozen["total"] == pytest.approx(sum(frozen[k] for k in ("weights", "gradients", "optimizer",
                                                                      "activations")) + 1.0)
