"""evaluate_rag.py --hub_generator_repo publishes the LoRA adapter to a loopback fake Hub (tests/hub_server.py):
the adapter's files and a card (read with huggingface_hub.ModelCard) comparing its test answers with the base
model's, private by default, the token nowhere but in the Authorization header."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from conftest import run_script
from hub_checks import TOKEN, assert_token_never_sent_but_in_auth
from huggingface_hub import ModelCard

from ragtune.core.data import SAMPLE_TEST


def test_the_adapter_is_published_with_its_answer_metrics_against_the_base(tiny_gpt2, hub, tmp_path):
    folder, adapter = tiny_gpt2
    test_data = tmp_path / "test.csv"
    pd.read_csv(SAMPLE_TEST, encoding="utf-8-sig").head(4).to_csv(test_data, index=False)
    out = tmp_path / "eval"
    proc = run_script("evaluate_rag.py", "--test_data", str(test_data), "--output_dir", str(out), "--k", "3",
                      "--embedding_models", "--generator_local", str(folder), "--generator_adapter", str(adapter),
                      "--generator_max_new_tokens", "4", "--answer_k", "3", "--push_to_hub",
                      "--hub_generator_repo", "alice/vi-generator", "--allow_regression",
                      env={"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_OFFLINE": "0",
                           "HF_HOME": str(tmp_path / "hf-home")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = hub.committed_files("alice/vi-generator")
    assert {"adapter_config.json", "README.md"} <= set(files)
    assert any(name.startswith("adapter_model.") for name in files)
    assert all(repo.private for repo in hub.repos.values())
    card = ModelCard(files["README.md"].decode("utf-8"))
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-generation"
    names = " ".join(m.metric_name for m in card.data.eval_results).lower()
    assert "rouge" in names and "bleu" in names and "presence" in names  # the test answer metrics
    assert "base model" in card.text and "Change vs the base model" in card.text
    assert "Generating the base model's answers" in proc.stderr
    assert str(Path(adapter)) not in card.content and TOKEN not in card.content
    assert_token_never_sent_but_in_auth(hub)
