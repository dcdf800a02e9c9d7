"""The pieces of an honest model card: no absolute path, the base model as a Hub id, the main metric as the headline,
an evaluation table whose means carry their intervals, sections replaced in place."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ragtune.core.metrics import mean_metrics
from ragtune.core.model_card import (
    CardColumn,
    base_model_hub_id,
    base_model_license,
    evaluation_table,
    has_absolute_path,
    headline,
    portable_model_name,
    scrub_paths,
    with_section,
)
from ragtune.core.significance import MeansWithQueries, bootstrap_ci


@pytest.mark.parametrize("text, expected", [
    ("model = load('/tmp/runs/x/bge-m3-finetuned')", "model = load('bge-m3-finetuned')"),
    ('"corpus": "/home/me/data/corpus.csv"', '"corpus": "corpus.csv"'),
    ("saved in ~/models/reranker/ today", "saved in reranker today"),
    (r"C:\Users\bob\models\bge", "bge"),
    ("C:/data/x.csv", "x.csv"),
    ("see https://huggingface.co/BAAI/bge-m3 and https://sbert.net/docs/a/b", None),
    ('numbered = "\\n\\n".join(parts)', None),  # escapes in code are not paths
    ("</details> 2024/05/01 and/or a / b outputs/bge-m3-finetuned", None),  # nor dates, HTML, relative paths
])
def test_scrub_paths_keeps_the_last_part_of_absolute_paths_only(text, expected):
    assert scrub_paths(text) == (text if expected is None else expected)
    assert has_absolute_path(text) is (expected is not None)
    assert not has_absolute_path(scrub_paths(text))


def test_portable_model_name(tmp_path):
    folder = tmp_path / "org" / "model"
    folder.mkdir(parents=True)
    assert portable_model_name("BAAI/bge-m3") == "BAAI/bge-m3"
    assert portable_model_name(str(folder)) == "model" and portable_model_name(str(folder) + "/") == "model"


def test_base_model_hub_id_from_the_flag_the_id_the_cache_the_card_or_the_config(tmp_path):
    assert base_model_hub_id(str(tmp_path), "BAAI/bge-m3") == ("BAAI/bge-m3", "--base_model_id")
    assert base_model_hub_id("BAAI/bge-m3") == ("BAAI/bge-m3", "--base_model")
    snapshot = tmp_path / "hub" / "models--BAAI--bge-reranker-v2-m3" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    assert base_model_hub_id(str(snapshot))[0] == "BAAI/bge-reranker-v2-m3"
    carded = tmp_path / "carded"
    carded.mkdir()
    (carded / "README.md").write_text("---\nbase_model:\n- intfloat/multilingual-e5-small\nlicense: mit\n---\n# x\n")
    assert base_model_hub_id(str(carded))[0] == "intfloat/multilingual-e5-small"
    assert base_model_license(str(carded)) == "mit"
    configured = tmp_path / "configured"
    configured.mkdir()
    (configured / "config.json").write_text(json.dumps({"_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"}))
    assert base_model_hub_id(str(configured))[0] == "Qwen/Qwen2.5-0.5B-Instruct"
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text(json.dumps({"_name_or_path": str(tmp_path / "elsewhere")}))
    assert base_model_hub_id(str(bare)) == (None, "not recorded")  # never a local path
    assert base_model_license(str(bare)) is None


def test_means_with_queries_are_the_means_with_their_intervals():
    rng = np.random.default_rng(0)
    rows = [{"ndcg@5": float(x), "mrr@5": float(y)} for x, y in rng.uniform(0, 1, (25, 2))]
    means = MeansWithQueries(rows)
    assert means == mean_metrics(rows) and json.loads(json.dumps(means)) == mean_metrics(rows)
    _, low, high = bootstrap_ci([r["ndcg@5"] for r in rows])
    assert means.interval("ndcg@5") == (low, high) and low < means["ndcg@5"] < high
    partial = MeansWithQueries([{"a": 1.0, "b": None}, {"a": 0.0, "b": 0.5}])
    assert partial == {"a": 0.5, "b": 0.5} and partial.interval("missing") is None


def test_evaluation_table_heads_with_the_main_metric_and_shows_intervals():
    rows = [{"ndcg@5": v, "mrr@5": v / 2} for v in (0.2, 0.4, 0.9, 1.0)]
    columns = [CardColumn("BM25", MeansWithQueries(rows)), CardColumn("this model", {"ndcg@5": 0.5, "mrr@5": 0.3},
                                                                         is_model=True)]
    table = evaluation_table(columns, ["ndcg@5", "mrr@5"], "mrr@5").splitlines()
    assert table[0] == "| metric | BM25 | **this model** |"
    assert table[2].startswith("| **mrr@5** (main) | 0.3125 [") and table[2].endswith("| 0.3000 |")
    assert table[3].startswith("| ndcg@5 | 0.6250 [")


def test_headline_is_the_main_metric_and_warns_below_another_system():
    columns = [CardColumn("BM25", {"mrr@5": 0.8, "ndcg@5": 0.1}), CardColumn("me", {"mrr@5": 0.6, "ndcg@5": 0.9},
                                                                             is_model=True)]
    text = headline("mrr@5", columns, 40, "test")
    assert text.startswith("**mrr@5 0.6000** on 40 held-out test queries (main metric); BM25 0.8000.")
    assert "**Below BM25 on mrr@5.**" in text
    assert "Below" not in headline("ndcg@5", columns, 40, "test")


def test_with_section_replaces_in_place_and_keeps_commented_headings():
    text = "# t\n\n## Evaluation\n\nold\n\n<!--\n## Bias\n\nx\n-->\n\n## Training Details\n\ny\n"
    out = with_section(text, "Evaluation", "new")
    assert out == "# t\n\n## Evaluation\n\nnew\n\n<!--\n## Bias\n\nx\n-->\n\n## Training Details\n\ny\n"
    assert with_section(out, "Data audit", "z", before="Training Details").index("## Data audit") < out.index(
        "## Training Details") + len("## Data audit\n\nz\n\n")
