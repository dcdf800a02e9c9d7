"""Honest model cards, for the three model kinds, as a tiny training run leaves them and as evaluate_rag.py publishes
them (a dry run with the real ragtune.evaluate.hub): Hub metadata parsed with ``huggingface_hub.ModelCard``, the main
metric as the headline, BM25 and the hybrid in the evaluation table with intervals, the saved fusion weight with a
snippet that runs, the data audit, no absolute path, no training example when personal information was left in the
data, and an adapter card whose load snippet runs and builds the training prompt."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_script
from huggingface_hub import ModelCard

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TEST, SAMPLE_TRAIN
from ragtune.core.model_card import has_absolute_path
from ragtune.generation.prompt import format_user_message

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
QUICK = ["--max_steps", "2", "--epochs", "1", "--batch_size", "4", "--max_seq_length", "64", "--evaluation_steps", "1",
         "--checkpoint_save_steps", "1", "--warmup_steps", "0"]
PHONE, EMAIL = "0912 345 678", "nguyen.van.a@example.com"
# A mean and its 95% interval, as the evaluation tables print them.
WITH_INTERVAL = re.compile(r"\d\.\d{4} \[\d\.\d\d, \d\.\d\d\]")


def card_of(path_or_text: Path | str) -> ModelCard:
    return ModelCard.load(path_or_text) if isinstance(path_or_text, Path) else ModelCard(path_or_text)


def assert_no_absolute_path(text: str, *paths: Path) -> None:
    assert not has_absolute_path(text), re.findall(r"\S*/tmp/\S*|\S*/root/\S*|\S*/home/\S*", text)[:5]
    for path in paths:
        assert str(path) not in text and str(path.resolve()) not in text


def headline_of(card: ModelCard) -> str:
    """The first paragraph under the card's title."""
    body = card.text.strip().split("\n\n")
    assert body[0].startswith("# "), body[0]
    return body[1]


def published_cards(*args: str, out: Path) -> list[ModelCard]:
    """evaluate_rag.py --push_to_hub --dry_run with the real hub module: the cards it would upload."""
    result = run_script("evaluate_rag.py", "--corpus", str(SAMPLE_CORPUS), "--test_data", str(SAMPLE_TEST),
                        "--max_seq_length", "64", "--output_dir", str(out), "--push_to_hub", "--dry_run", *args,
                        env=ONE_THREAD)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    published = json.loads((out / "results.json").read_text())["published"]
    return [card_of(entry["card"]) for entry in published]


def run_snippet(code: str, replacements: dict[str, str]) -> dict:
    """Execute a card's snippet with its names replaced by real paths; returns its namespace."""
    for old, new in replacements.items():
        assert old in code, old
        code = code.replace(old, new)
    namespace: dict = {}
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        exec(compile(code, "<card snippet>", "exec"), namespace)  # noqa: S102 - the card's own code, on test models
    namespace["printed"] = printed.getvalue()
    return namespace


def python_block(text: str, marker: str) -> str:
    """The ```python block of ``text`` that contains ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    [block] = [b for b in blocks if marker in b]
    return block


# ---------------------------------------------------------------------------- embedding model


@pytest.fixture(scope="module")
def embedding_run(tiny_st, tmp_path_factory) -> tuple[Path, Path]:
    """A tiny run from a local copy of a Hub model (a Hugging Face cache snapshot), with mrr@5 as the main metric."""
    root = tmp_path_factory.mktemp("cards-embedding")
    base = root / "hf-cache" / "models--acme--tiny-st" / "snapshots" / "0a1b2c3d"
    shutil.copytree(tiny_st, base)
    out = root / "embedding"
    result = run_script("fine_tune_bge_m3.py", *QUICK, "--base_model", str(base), "--output_dir", str(out),
                        "--hard_negative_source", "bm25", "--freeze_layers", "0", "--metric_for_best_model", "mrr@5",
                        "--dataset_name", "acme/neorag-sample", "--language", "vi", "en", "--license", "mit",
                        env=ONE_THREAD)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return out, base


def test_local_embedding_card(embedding_run):
    out, base = embedding_run
    text = (out / "README.md").read_text(encoding="utf-8")
    card = card_of(out / "README.md")
    data = card.data
    assert data.base_model == "acme/tiny-st"  # from the cache folder it was loaded from, not its path
    assert data.datasets == ["acme/neorag-sample"] and data.language == ["vi", "en"] and data.license == "mit"
    assert data.library_name == "sentence-transformers" and data.pipeline_tag == "sentence-similarity"
    assert {"sentence-transformers", "ragtune"} <= set(data.tags)
    results = data.eval_results
    assert results and results[0].metric_type == "mrr_at_5" and results[0].dataset_split == "dev"
    assert headline_of(card).startswith("**mrr@5 ") and "20 held-out dev queries" in headline_of(card)
    evaluation = text.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    assert "| metric | BM25 | base model | **fine-tuned (this model)** | hybrid: BM25 + this model" in evaluation
    assert "| **mrr@5** (main) |" in evaluation and len(WITH_INTERVAL.findall(evaluation)) >= 4 * 12
    assert "Means over 20 dev queries" in evaluation
    assert "## Data audit" in text and "Personal information in the training data: none found" in text
    assert "* Samples:" in text  # no personal information found: sentence-transformers' examples stay
    assert_no_absolute_path(text, out, base, SAMPLE_CORPUS)

    # The saved fusion weight and a snippet that runs it (RAGPipeline, the weight as saved).
    fusion = json.loads((out / "metrics.json").read_text())["fusion"]
    assert f"Dense weight **{fusion['dense_weight']:g}**" in text
    snippet = python_block(text, "RAGPipeline")
    namespace = run_snippet(snippet, {"'corpus.csv'": repr(str(SAMPLE_CORPUS)), "'embedding'": repr(str(out))})
    assert namespace["pipeline"].spec.fusion.dense_weight == fusion["dense_weight"]
    assert len(namespace["printed"].splitlines()) == 5


def test_published_embedding_card(embedding_run, tmp_path):
    out, base = embedding_run
    [card] = published_cards("--embedding_models", str(out), "--main_metric", "mrr@5", "--hub_embedding_repo",
                             "acme/vi-embedding", "--dataset_name", "acme/neorag-sample", "--license", "mit",
                             out=tmp_path / "evaluation")
    data, text = card.data, str(card)
    assert data.base_model == "acme/tiny-st"  # what the training card recorded, not the folder it trained from
    assert data.datasets == ["acme/neorag-sample"] and data.language == ["vi"] and data.license == "mit"
    assert data.library_name == "sentence-transformers" and data.pipeline_tag == "sentence-similarity"
    assert "ragtune" in data.tags
    assert data.eval_results[0].metric_type == "mrr_at_5" and data.eval_results[0].dataset_split == "test"
    test_queries = len(pd.read_csv(SAMPLE_TEST))
    assert headline_of(card).startswith("**mrr@5 ") and f"{test_queries} held-out test queries" in headline_of(card)
    evaluation = text.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    header = evaluation.strip().splitlines()[0]
    assert "bm25" in header and "(this model)" in header and "+ bm25 (weighted" in header  # BM25 and the hybrid
    assert "| **mrr@5** (main) |" in evaluation and WITH_INTERVAL.search(evaluation)
    assert f"Means over {test_queries} test queries" in evaluation
    assert "## Fusion with the first stage (saved weight)" in text and "dense_weight=" in text
    assert "## Data audit" in text
    assert_no_absolute_path(text, out, base, SAMPLE_CORPUS, tmp_path)


# ---------------------------------------------------------------------------- reranker


@pytest.fixture(scope="module")
def reranker_run(tiny_cross_encoder, tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny run on training queries that hold a phone number and an email (--pii warn: found, not redacted), from a
    local folder whose own card names the Hub model it is and its license."""
    root = tmp_path_factory.mktemp("cards-reranker")
    base = root / "tiny-ce-copy"
    shutil.copytree(tiny_cross_encoder, base)
    (base / "README.md").write_text("---\nbase_model: acme/tiny-ce\nlicense: apache-2.0\n---\n# a copy\n")
    frame = pd.read_csv(SAMPLE_TRAIN, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    frame.loc[0, "Query"] = f"Số điện thoại {PHONE} của trưởng ban là gì?"
    frame.loc[1, "Query"] = f"Gửi email cho {EMAIL} thế nào?"
    train = root / "train.csv"
    frame.to_csv(train, index=False, encoding="utf-8")
    out = root / "reranker"
    result = run_script("fine_tune_reranker.py", *QUICK, "--base_model", str(base), "--train_data", str(train),
                        "--output_dir", str(out), "--num_hard_negatives", "1", "--num_random_negatives", "1",
                        "--rerank_top_n", "7", env=ONE_THREAD)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return out, base, train


def test_local_reranker_card_without_training_examples(reranker_run):
    out, base, train = reranker_run
    text = (out / "README.md").read_text(encoding="utf-8")
    data = card_of(out / "README.md").data
    assert data.base_model == "acme/tiny-ce" and data.license == "apache-2.0"  # both from the base folder's card
    assert data.language == ["vi"] and data.datasets is None
    assert data.library_name == "sentence-transformers" and data.pipeline_tag == "text-ranking"
    assert "ragtune" in data.tags and data.eval_results[0].metric_type == "ndcg_at_5"
    assert headline_of(card_of(out / "README.md")).startswith("**ndcg@5 ")
    evaluation = text.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    assert "first stage (bm25)" in evaluation and "base reranker" in evaluation and "fused with" in evaluation
    assert WITH_INTERVAL.search(evaluation) and "Reranker weight **" in text
    assert "**not redacted**" in text
    # Personal information left in the data: no training example at all, masked or not.
    queries = pd.read_csv(train, dtype=str, keep_default_na=False)["Query"]
    assert "* Samples:" not in text and "widget" not in (data.to_dict())
    for query in queries[:20]:
        assert query[:25] not in text
    assert "•" not in text and PHONE not in text
    assert_no_absolute_path(text, out, base, train)
    # The reranker snippet runs with sentence-transformers alone.
    namespace = run_snippet(python_block(text, "RERANKER_WEIGHT"), {"CrossEncoder('reranker')":
                                                                    f"CrossEncoder({str(out)!r})"})
    assert namespace["printed"].startswith("[(")


def test_published_reranker_card(reranker_run, tiny_st, tmp_path):
    out, base, train = reranker_run
    cards = published_cards("--embedding_models", str(tiny_st), "--reranker_models", str(out), "--rerank_top_n", "7",
                            "--hub_reranker_repo", "acme/vi-reranker", "--allow_pii", out=tmp_path / "evaluation")
    [card] = cards
    data, text = card.data, str(card)
    assert data.base_model == "acme/tiny-ce" and data.pipeline_tag == "text-ranking"
    assert data.language == ["vi"] and data.license == "apache-2.0" and data.datasets is None
    assert data.library_name == "sentence-transformers" and "ragtune" in data.tags
    assert data.eval_results[0].metric_type == "ndcg_at_5"
    assert headline_of(card).startswith("**ndcg@5 ")
    header = text.split("## Evaluation", 1)[1].strip().splitlines()[0]
    assert "bm25" in header and "(this model)" in header
    assert "## Data audit" in text and "**not redacted**" in text
    assert "Reranker weight **" in text
    assert_no_absolute_path(text, out, base, train, tiny_st, tmp_path)


# ---------------------------------------------------------------------------- LoRA adapter


@pytest.fixture(scope="module")
def adapter_run(tiny_qwen2, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cards-adapter") / "generator"
    result = run_script("fine_tune_generator.py", "--base_model", str(tiny_qwen2), "--base_model_id", "acme/tiny-qwen2",
                        "--output_dir", str(out), "--max_steps", "2", "--evaluation_steps", "1",
                        "--checkpoint_save_steps", "1", "--batch_size", "2", "--gradient_accumulation_steps", "1",
                        "--max_seq_length", "384", "--max_new_tokens", "4", "--max_dev_generations", "2",
                        "--system_prompt", "Trả lời ngắn gọn.", "--license", "apache-2.0", env=ONE_THREAD)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    return out


def test_local_adapter_card_and_its_snippet(adapter_run, tiny_qwen2):
    out = adapter_run
    text = (out / "README.md").read_text(encoding="utf-8")
    card = card_of(out / "README.md")
    data = card.data
    assert data.base_model == "acme/tiny-qwen2" and data.library_name == "peft"
    assert data.pipeline_tag == "text-generation" and data.language == ["vi"] and data.license == "apache-2.0"
    assert {"ragtune", "lora"} <= set(data.tags)
    assert data.eval_results[0].metric_type == "rouge_l" and data.eval_results[0].dataset_split == "dev"
    assert headline_of(card).startswith("**rouge_l ")
    assert "## Prompt format" in text and "Trả lời ngắn gọn." in text
    assert format_user_message("<question>", ["<passage 1>", "<passage 2>"]) in text
    assert "## Data audit" in text
    assert_no_absolute_path(text, out, tiny_qwen2)

    namespace = run_snippet(python_block(text, "PeftModel"), {"'acme/tiny-qwen2'": repr(str(tiny_qwen2)),
                                                             "ADAPTER = 'generator'": f"ADAPTER = {str(out)!r}"})
    assert namespace["SYSTEM_PROMPT"] == "Trả lời ngắn gọn."
    question, passages = "CLB thành lập năm nào?", ["RAIC ra đời năm 2013.", "Không liên quan."]
    assert namespace["user_turn"](question, passages) == format_user_message(question, passages)
    assert namespace["user_turn"](question, []) == format_user_message(question, [])
    assert isinstance(namespace["answer"](question, passages), str)


def test_published_adapter_card_and_its_snippet(adapter_run, tiny_qwen2, tmp_path):
    out = adapter_run
    test_data = tmp_path / "test.csv"
    pd.read_csv(SAMPLE_TEST, encoding="utf-8-sig").head(4).to_csv(test_data, index=False)
    evaluation = tmp_path / "evaluation"
    result = run_script("evaluate_rag.py", "--test_data", str(test_data), "--output_dir", str(evaluation), "--k", "3",
                        "--embedding_models", "--generator_local", str(tiny_qwen2), "--generator_adapter", str(out),
                        "--generator_max_new_tokens", "4", "--answer_k", "3", "--push_to_hub", "--dry_run",
                        "--hub_generator_repo", "acme/vi-generator", "--allow_regression", env=ONE_THREAD)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    [entry] = json.loads((evaluation / "results.json").read_text())["published"]
    card = card_of(entry["card"])
    data, text = card.data, str(card)
    assert data.base_model == "acme/tiny-qwen2" and data.library_name == "peft"
    assert data.pipeline_tag == "text-generation" and data.language == ["vi"] and data.license == "apache-2.0"
    assert "ragtune" in data.tags and data.eval_results[0].metric_type == "rouge_l_at_3"
    assert headline_of(card).startswith("**rouge_l@3 ") and "4 held-out test queries" in headline_of(card)
    assert "## Prompt format" in text and "Trả lời ngắn gọn." in text and "## Data audit" in text
    assert_no_absolute_path(text, out, tiny_qwen2, test_data)
    namespace = run_snippet(python_block(text, "PeftModel"), {"'acme/tiny-qwen2'": repr(str(tiny_qwen2)),
                                                             "'acme/vi-generator'": repr(str(out))})
    question, passages = "CLB thành lập năm nào?", ["RAIC ra đời năm 2013."]
    assert namespace["user_turn"](question, passages) == format_user_message(question, passages)
    assert namespace["SYSTEM_PROMPT"] == "Trả lời ngắn gọn."
