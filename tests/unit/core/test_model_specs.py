"""Models named on the command line: the folder fingerprint that keys caches, and the prompts a model saved."""

from __future__ import annotations

import json
import shutil

from ragtune.core.model_specs import folder_fingerprint, saved_prompts


def test_fingerprint_ignores_training_by_products(tiny_st, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(tiny_st, copy)
    before = folder_fingerprint(copy)
    (copy / "checkpoint-10").mkdir()
    (copy / "checkpoint-10" / "optimizer.pt").write_bytes(b"x" * 100)
    (copy / "metrics.json").write_text("{}")
    (copy / "training_curves.png").write_bytes(b"png")
    assert folder_fingerprint(copy) == before
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert folder_fingerprint(copy) != before


def test_saved_prompts_are_kept_and_overrides_fill_in(tiny_st, tmp_path):
    copy = tmp_path / "e5-like"
    shutil.copytree(tiny_st, copy)
    assert saved_prompts(copy) == ("", "")
    config = json.loads((copy / "config_sentence_transformers.json").read_text())
    config["prompts"] = {"query": "query: ", "document": "passage: "}
    (copy / "config_sentence_transformers.json").write_text(json.dumps(config))
    assert saved_prompts(copy) == ("query: ", "passage: ")
