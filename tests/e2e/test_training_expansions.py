"""--expansions in the training scripts: every first stage sees expanded queries (dev metrics, mining), the map
is saved with the model, and the held-out dev queries are written as dev_queries.csv."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import assert_one_clear_error, run_script

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN, load_corpus, load_queries, split_queries
from ragtune.core.expansions import load_expansions, load_saved
from ragtune.core.fusion import ranking
from ragtune.core.metrics import DEFAULT_KS, TRAINING_METRICS, mean_metrics, query_metrics
from ragtune.retrieval.first_stage import FirstStage

QUICK = ["--epochs", "1", "--batch_size", "4", "--max_seq_length", "64", "--evaluation_steps", "2",
         "--checkpoint_save_steps", "2", "--warmup_steps", "0", "--hard_negative_source", "bm25", "--max_steps", "2"]


@pytest.fixture
def expansions(tmp_path) -> Path:
    path = tmp_path / "map.csv"
    path.write_text("abbreviation,expansion\nclb,câu lạc bộ robotics\nraic,robotics and ai club\n", encoding="utf-8")
    return path


def _bm25_dev_metrics(dev, expander=None) -> dict[str, float]:
    stage = FirstStage(load_corpus(SAMPLE_CORPUS), expander=expander)
    runs = stage.runs([q.query for q in dev], 100)
    return mean_metrics([query_metrics(ranking(run), q.relevant_ids, DEFAULT_KS, TRAINING_METRICS)
                         for run, q in zip(runs, dev)])


def test_the_embedding_script_expands_dev_queries_saves_the_map_and_writes_its_dev_queries(tiny_st, expansions,
                                                                                            tmp_path):
    out = tmp_path / "out"
    result = run_script("fine_tune_bge_m3.py", "--base_model", str(tiny_st), "--expansions", str(expansions),
                        "--output_dir", str(out), *QUICK)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # The map travels with the model, exactly as applied.
    assert load_saved(out).entries == load_expansions(str(expansions)).entries
    assert metrics["query_expansions"]["entries"] == 2
    # dev_queries.csv holds the queries the run held out (its own seeded split of --train_data).
    _, dev = split_queries(load_queries(SAMPLE_TRAIN, load_corpus(SAMPLE_CORPUS)), 0.2, 42)
    written = pd.read_csv(out / "dev_queries.csv", encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert written["Query"].tolist() == [q.query for q in dev]
    assert written["row"].astype(int).tolist() == [q.row for q in dev]
    # BM25's dev metrics were computed on the expanded queries: they equal an expanded first stage's, not a plain one.
    expanded = _bm25_dev_metrics(dev, load_expansions(str(expansions)))
    plain = _bm25_dev_metrics(dev)
    assert expanded != plain
    assert metrics["dev_metrics"]["bm25"] == pytest.approx(expanded)


def test_a_self_referencing_expansion_is_refused_before_anything_is_written(tiny_st, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("clb,clb ptit\n", encoding="utf-8")
    out = tmp_path / "out"
    result = run_script("fine_tune_reranker.py", "--base_model", str(tiny_st), "--expansions", str(bad),
                        "--output_dir", str(out))
    assert_one_clear_error(result, "bad.csv", out)


def test_the_reranker_script_mines_and_scores_its_first_stage_on_expanded_queries(tiny_cross_encoder, expansions,
                                                                                   tmp_path):
    out = tmp_path / "out"
    result = run_script("fine_tune_reranker.py", "--base_model", str(tiny_cross_encoder), "--expansions",
                        str(expansions), "--output_dir", str(out), "--num_hard_negatives", "1",
                        "--num_random_negatives", "0", *QUICK)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert load_saved(out).entries == load_expansions(str(expansions)).entries
    _, dev = split_queries(load_queries(SAMPLE_TRAIN, load_corpus(SAMPLE_CORPUS)), 0.2, 42)
    written = pd.read_csv(out / "dev_queries.csv", encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert written["row"].astype(int).tolist() == [q.row for q in dev]
    # Its first stage (BM25 here) ran on the expanded queries: the dev column equals an expanded first stage's.
    expanded = _bm25_dev_metrics(dev, load_expansions(str(expansions)))
    assert expanded != _bm25_dev_metrics(dev)
    assert {key: metrics["dev_metrics"]["bm25"][key] for key in expanded} == pytest.approx(expanded)
