"""--max_seq_length against the model: the position limit of each architecture, and clamping to it."""

from __future__ import annotations

import argparse
import logging

import pytest

from ragtune.core.models import clamp_max_seq_length, model_position_limit

LONG_TEXT = "Câu lạc bộ Lập trình PTIT được thành lập với nhiều hoạt động " * 120  # >512 tokens


def test_max_seq_length_above_the_position_limit_is_clamped_and_long_texts_encode(tiny_st, caplog):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(tiny_st), device="cpu")
    limit = model_position_limit(model)
    assert limit == 512
    with caplog.at_level(logging.WARNING):
        model.max_seq_length = clamp_max_seq_length(2048, limit)
    assert model.max_seq_length == 512
    assert "--max_seq_length 2048" in caplog.text and "512" in caplog.text
    assert model.encode([LONG_TEXT]).shape == (1, 32)
    model.max_seq_length = 2048  # what the scripts did before: the first long text crashes
    with pytest.raises(Exception):
        model.encode([LONG_TEXT])


def test_reranker_limit_and_a_short_setting_is_kept(tiny_cross_encoder, caplog):
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(tiny_cross_encoder), num_labels=1, max_length=64, device="cpu")
    limit = model_position_limit(model)
    assert limit == 512
    model.max_seq_length = clamp_max_seq_length(4096, limit, flag="--reranker_max_length")
    assert "--reranker_max_length 4096" in caplog.text
    assert model.predict([("q", LONG_TEXT)]).shape == (1,)
    caplog.clear()
    assert clamp_max_seq_length(384, limit) == 384 and clamp_max_seq_length(384, None) == 384
    assert not caplog.text


def test_position_limit_of_xlm_roberta_excludes_the_padding_offset():
    """bge-m3 is XLM-R: 8194 position rows hold 8192 tokens (positions start after padding_idx)."""
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, XLMRobertaConfig, XLMRobertaModel

    small = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16, vocab_size=50)
    assert model_position_limit(XLMRobertaModel(XLMRobertaConfig(max_position_embeddings=514, **small))) == 512
    assert model_position_limit(BertModel(BertConfig(max_position_embeddings=128, **small))) == 128
    llama = LlamaForCausalLM(LlamaConfig(max_position_embeddings=2048, num_key_value_heads=2, **small))
    assert model_position_limit(llama) == 2048  # rotary: the configured maximum


def test_tokenizer_limit_is_the_fallback_when_the_config_has_none():
    import torch

    class Bare(torch.nn.Module):
        config = argparse.Namespace()

    assert model_position_limit(Bare(), tokenizer=argparse.Namespace(model_max_length=1024)) == 1024
    assert model_position_limit(Bare(), tokenizer=argparse.Namespace(model_max_length=int(1e30))) is None
    assert model_position_limit(Bare()) is None
