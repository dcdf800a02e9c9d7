"""Flags and input files a user gets wrong: one clear line, exit code 2, before any model loads.

The script tests run real subprocesses with a --base_model that does not exist, so a check that
slipped past the data and flag validation would show up as a model-loading error instead.
"""

from __future__ import annotations

import argparse
import logging
import unicodedata
from pathlib import Path

import pytest
from conftest import run_script

from ragtune.train.arguments import (add_data_args, add_negative_args, add_output_args, add_training_args, validate_negative_args,
                         validate_training_args)
from ragtune.core.errors import UserError
from ragtune.core.models import clamp_max_seq_length, model_position_limit

# ---------------------------------------------------------------------------- scripts, end to end


def _corpus_dir(tmp_path: Path) -> tuple[list[str], str]:
    return ["--corpus", str(tmp_path)], f"--corpus: {tmp_path} is a directory, not a file"


def _cp1252_corpus(tmp_path: Path) -> tuple[list[str], str]:
    path = tmp_path / "corpus.csv"
    path.write_bytes("id,text\n1,Café au lait\n".encode("cp1252"))
    return (["--corpus", str(path)],
            f"--corpus: {path} is not UTF-8 (byte 0xe9 at position 13, line 2); save it as UTF-8 (Excel: Save As > "
            f"CSV UTF-8)")


def _non_object_jsonl(tmp_path: Path) -> tuple[list[str], str]:
    path = tmp_path / "train.jsonl"
    path.write_text('{"query": "q", "pos": ["p"]}\n[1, "abc"]\n', encoding="utf-8")
    return ["--train_data", str(path)], f"--train_data: {path} line 2: expected a JSON object"


def _freeze_minus_one(tmp_path: Path) -> tuple[list[str], str]:
    return ["--freeze_layers", "-1"], "--freeze_layers must be >= 0"


@pytest.mark.parametrize("case", [_freeze_minus_one, _corpus_dir, _cp1252_corpus, _non_object_jsonl],
                         ids=lambda f: f.__name__.strip("_"))
def test_embedding_script_rejects_bad_input_in_one_line_before_loading_a_model(tmp_path, case):
    flags, expected = case(tmp_path)
    out = tmp_path / "out"
    result = run_script("fine_tune_bge_m3.py", "--base_model", str(tmp_path / "no-such-model"), "--output_dir",
                        str(out), *flags, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line or line.startswith("error:")]
    assert len(errors) == 1 and expected in errors[0], result.stderr[-3000:]
    assert not out.exists()


def test_embedding_script_reads_a_corpus_with_nfd_headers(tmp_path):
    """The data passes, so the run gets as far as the (missing) model: the error is about --base_model."""
    path = tmp_path / "corpus.csv"
    rows = "".join(f"{i},passage {i}\n" for i in range(1, 100))
    path.write_text(f"STT,{unicodedata.normalize('NFD', 'Văn bản')}\n{rows}", encoding="utf-8")
    result = run_script("fine_tune_bge_m3.py", "--base_model", str(tmp_path / "no-such-model"), "--output_dir",
                        str(tmp_path / "out"), "--corpus", str(path), timeout=180)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "needs columns" not in result.stderr and "--base_model" in result.stderr, result.stderr[-3000:]


def test_evaluate_rag_rejects_a_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "test.jsonl"
    path.write_text('{"query": "q", "relevant_ids": [1]}\n\n[1, "abc"]\n', encoding="utf-8")
    result = run_script("evaluate_rag.py", "--test_data", str(path), "--output_dir", str(tmp_path / "out"), timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"--test_data: {path} line 3: expected a JSON object" in errors[0], result.stderr
    assert "got a list" in errors[0]


# ---------------------------------------------------------------------------- validate_*_args


def _args(*argv: str, negatives: bool = True, freeze: bool = True) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_data_args(parser)
    add_output_args(parser, default_output_dir="out")
    add_training_args(parser, epochs=1, batch_size=2, lr=1e-5, warmup_steps=0, max_seq_length=64,
                      evaluation_steps=2, checkpoint_save_steps=2)
    if negatives:
        add_negative_args(parser, num_hard_negatives=1)
    if freeze:
        parser.add_argument("--freeze_layers", type=int, default=0)
    return parser.parse_args(list(argv))


def test_defaults_pass_and_each_bad_flag_is_named():
    validate_training_args(_args())
    for argv, message in [(["--freeze_layers", "-1"], "--freeze_layers must be >= 0"),
                          (["--num_hard_negatives", "-1"], "--num_hard_negatives must be >= 0"),
                          (["--hard_negative_range", "5", "2"], "--hard_negative_range")]:
        with pytest.raises(UserError, match=message):
            validate_training_args(_args(*argv))
    with pytest.raises(UserError, match="--hard_negative_range"):
        validate_negative_args(_args("--hard_negative_range", "0", "3"))


def test_a_script_without_negative_or_freeze_flags_gets_its_own_metrics(tmp_path):
    args = _args("--metric_for_best_model", "loss", negatives=False, freeze=False)
    validate_training_args(args, valid_metrics={"loss", "rougeL"})
    with pytest.raises(UserError, match="--metric_for_best_model must be one of loss, rougeL; got 'ndcg@5'"):
        validate_training_args(_args(negatives=False), valid_metrics={"loss", "rougeL"})
    with pytest.raises(UserError, match="--metric_for_best_model"):
        validate_training_args(args)  # the default: ranking metrics


def test_data_paths_name_a_directory_and_a_missing_file(tmp_path):
    with pytest.raises(UserError, match=f"--train_data: {tmp_path} is a directory, not a file"):
        validate_training_args(_args("--train_data", str(tmp_path)))
    with pytest.raises(UserError, match="--corpus: file not found"):
        validate_training_args(_args("--corpus", str(tmp_path / "nope.csv")))


# ---------------------------------------------------------------------------- --max_seq_length vs the model


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
