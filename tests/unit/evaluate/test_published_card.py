"""The card publishing uploads (ragtune.evaluate.hub.build_model_card): metadata, the main metric as the headline,
no local path, the fusion weight and the data audit."""

from __future__ import annotations

from huggingface_hub import ModelCard

from ragtune.core.model_card import CardColumn, evaluation_table, has_absolute_path
from ragtune.core.significance import MeansWithQueries


def test_published_card_metadata_headline_and_no_path(tmp_path):
    from ragtune.evaluate.hub import PublishRequest, build_model_card

    local_base = tmp_path / "models" / "bge-m3-copy"
    rows = [{"mrr@5": v, "ndcg@5": v} for v in (0.1, 0.5, 0.9)]
    request = PublishRequest(
        model_dir=tmp_path, repo_id="acme/emb", kind="embedding", base_model=str(local_base),
        metrics={"ndcg@5": 0.7, "mrr@5": 0.4}, baseline_metrics={"ndcg@5": 0.6, "mrr@5": 0.5}, dataset_name=None,
        results_markdown=evaluation_table([CardColumn("bm25", MeansWithQueries(rows))], ["mrr@5"], "mrr@5"),
        training_config={"corpus": str(tmp_path / "data" / "corpus.csv"), "lr": 1e-5}, main_metric="mrr@5",
        test_queries=3, compared_metrics={"bm25": {"mrr@5": 0.5}},
        fusion={"dense_weight": 0.4, "depth": 100, "rule": "smoothed", "metric": "mrr@5", "dev_queries": 20},
        data_audit={"pii": {"checked": True, "total": 0, "counts": {}, "redacted": False},
                    "leakage": {"leaked_test_queries": 0, "test_queries": 20}, "duplicate_passages": {"groups": 0}})
    card, metadata = build_model_card(request)
    text = str(card)
    assert "base_model" not in metadata and "datasets" not in metadata  # a local path is not a Hub id
    assert metadata["model-index"][0]["results"][0]["metrics"][0]["type"] == "mrr_at_5"
    parsed = ModelCard(text)
    assert parsed.data.eval_results[0].dataset_split == "test"
    assert parsed.data.eval_results[0].dataset_name == "held-out test queries (3)"
    body = parsed.text.strip().split("\n\n")
    assert body[1].startswith("**mrr@5 0.4000** on 3 held-out test queries") and "**Below base model, bm25" in text
    assert "`bge-m3-copy` (a local model that records no Hub id)" in text
    assert "MRR@5: 0.5000 (base model `bge-m3-copy`) → 0.4000" in text  # the change, on the main metric
    assert "dense_weight=0.4" in text and "## Data audit" in text and '"corpus": "corpus.csv"' in text
    assert not has_absolute_path(text) and str(tmp_path) not in text
