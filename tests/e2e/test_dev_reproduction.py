"""evaluate_rag.py reproduces the training scripts' own dev numbers to the last digit.

Both encoder scripts choose a fusion weight on their dev split and save it, with the depth it was chosen at, in
the model's metrics.json, with the dev metrics it gave. Given the same dev queries as its test set,
evaluate_rag.py must find exactly those numbers for the weighted hybrid (the embedding script's ``hybrid``) and
for the reranker on that hybrid, alone and fused (the reranker script's ``after`` and ``fused``): a weight is
applied exactly as it was chosen (same candidates, same depth). Fusing at another depth changes the numbers.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest
from conftest import run_script

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN, load_corpus, load_queries, split_queries

# Short training (the numbers need not be good, only reproduced); the scripts' defaults otherwise, among them
# --dev_ratio 0.2, --seed 42 and --rerank_top_n 20.
SHORT = ["--max_steps", "4", "--evaluation_steps", "2", "--checkpoint_save_steps", "4", "--warmup_steps", "0",
         "--batch_size", "8"]
DEV_KEYS = {f"{m}@{k}" for m in ("hit", "recall", "mrr", "ndcg") for k in (3, 5, 7)}


def write_dev_queries(path: Path) -> Path:
    """The scripts' dev queries (their split of the sample training data, with their defaults) as a test file."""
    _, dev = split_queries(load_queries(SAMPLE_TRAIN, load_corpus(SAMPLE_CORPUS)), 0.2, 42)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Query", "Ground truth document"])
        writer.writerows([q.query, ", ".join(q.relevant_ids)] for q in dev)
    return path


@pytest.fixture(scope="module")
def trained(tiny_st, tiny_cross_encoder, tmp_path_factory) -> dict[str, Path]:
    """An embedding model, then a reranker on its saved hybrid, both trained briefly; and their dev queries."""
    root = tmp_path_factory.mktemp("dev-reproduction")
    emb, rr = root / "embedder", root / "reranker"
    done = run_script("fine_tune_bge_m3.py", "--base_model", str(tiny_st), "--output_dir", str(emb), *SHORT,
                      "--max_seq_length", "64", "--hard_negative_source", "bm25")
    assert done.returncode == 0, done.stderr[-3000:]
    # --weight_rule max: a reranker weight strictly inside (0, 1) is likelier, so the fused system is a real mix.
    done = run_script("fine_tune_reranker.py", "--base_model", str(tiny_cross_encoder), "--embedding_model", str(emb),
                      "--first_stage", "hybrid", "--output_dir", str(rr), *SHORT, "--max_seq_length", "96",
                      "--weight_rule", "max")
    assert done.returncode == 0, done.stderr[-3000:]
    return {"root": root, "embedder": emb, "reranker": rr, "dev": write_dev_queries(root / "dev.csv")}


def evaluate(trained: dict[str, Path], name: str, *extra: str) -> dict[str, dict]:
    """evaluate_rag.py on the dev queries with both trained models; its systems by kind (one of each here)."""
    import evaluate_rag

    out = trained["root"] / name
    assert evaluate_rag.main(["--embedding_models", str(trained["embedder"]), "--reranker_models",
                              str(trained["reranker"]), "--test_data", str(trained["dev"]), "--k", "3", "5", "7",
                              "--reranker_max_length", "96", "--output_dir", str(out), "--cache_dir",
                              str(trained["root"] / "cache"), *extra]) == 0
    systems = json.loads((out / "results.json").read_text())["systems"]
    by_kind = {}
    for system in systems:
        kind = "rrf" if system["kind"] == "hybrid" and system["info"]["fusion"] == "rrf" else system["kind"]
        assert kind not in by_kind, kind
        by_kind[kind] = system
    return by_kind


@pytest.fixture(scope="module")
def at_20(trained) -> dict[str, dict]:
    """evaluate_rag.py with the reranker script's --rerank_top_n (20, its default)."""
    return evaluate(trained, "out", "--rerank_top_n", "20")


def saved(folder: Path) -> dict:
    return json.loads((folder / "metrics.json").read_text())


def dev_numbers(system: dict) -> dict[str, float]:
    return {key: system["metrics"][key] for key in DEV_KEYS}


def test_the_weighted_hybrid_reproduces_the_embedding_scripts_dev_numbers(trained, at_20):
    systems = at_20
    metrics = saved(trained["embedder"])
    fusion, hybrid = metrics["fusion"], systems["hybrid"]
    assert set(metrics["dev_metrics"]["hybrid"]) == DEV_KEYS
    assert dev_numbers(hybrid) == metrics["dev_metrics"]["hybrid"]  # exactly, not approximately
    assert dev_numbers(systems["bm25"]) == metrics["dev_metrics"]["bm25"]
    info = hybrid["info"]
    assert (info["dense_weight"], info["fusion_depth"], info["weight_from"]) == \
        (fusion["dense_weight"], fusion["depth"], "metrics.json")
    assert info["fusion_candidates"] == 72  # the sample corpus is smaller than the depth: all of it


def test_the_reranker_on_that_hybrid_reproduces_the_reranker_scripts_dev_numbers(trained, at_20):
    systems = at_20
    metrics = saved(trained["reranker"])
    fusion = metrics["fusion"]
    assert fusion["depth"] == 20 and fusion["first_stage_fusion"]["dense_weight"] == \
        saved(trained["embedder"])["fusion"]["dense_weight"]
    assert dev_numbers(systems["hybrid_rerank"]) == metrics["dev_metrics"]["after"]
    assert dev_numbers(systems["fused_rerank"]) == metrics["dev_metrics"]["fused"]
    info = systems["fused_rerank"]["info"]
    assert (info["reranker_weight"], info["reranker_fusion_depth"], info["reranker_weight_from"]) == \
        (fusion["reranker_weight"], 20, "metrics.json")


def test_the_fused_reranker_keeps_its_saved_depth_under_another_rerank_top_n(trained, caplog):
    with caplog.at_level(logging.INFO):
        systems = evaluate(trained, "out-top10", "--rerank_top_n", "10")
    metrics = saved(trained["reranker"])
    # The fused reranker reranks and fuses the top 20 its weight was chosen at: still the script's numbers.
    assert dev_numbers(systems["fused_rerank"]) == metrics["dev_metrics"]["fused"]
    assert systems["fused_rerank"]["info"]["reranker_fusion_depth"] == 20
    assert systems["hybrid_rerank"]["info"]["rerank_top_n"] == 10
    told = [r.getMessage() for r in caplog.records
            if "the fused reranker reranks and fuses the top 20" in r.getMessage()]
    assert len(told) == 1 and "not --rerank_top_n 10" in told[0]
