"""evaluate_rag.py's data audit: --pii error stops before writing, leaked test queries are reported apart,
and a model trained on unredacted personal information is not published."""

from __future__ import annotations

import csv
import json
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from conftest import run_script
from trec_reference import KS, trec_metrics

from ragtune.audit import run_audit
from ragtune.core.bm25 import BM25Index
from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TEST, Corpus, LabelledQuery, load_corpus, load_queries

PHONE = "0912 345 678"


def sample_rows() -> list[dict[str, str]]:
    with open(SAMPLE_TEST, encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_pii_error_exits_2_writes_nothing_and_never_shows_the_value(tmp_path):
    rows = sample_rows()
    rows[4]["Query"] = f"Em gọi số {PHONE} của chủ nhiệm để hỏi lịch sinh hoạt được không?"
    test = write_rows(tmp_path / "test.csv", rows)
    out, report = tmp_path / "out", tmp_path / "audit.md"
    proc = run_script("evaluate_rag.py", "--embedding_models", "--test_data", str(test), "--pii", "error",
                      "--audit_report", str(report), "--output_dir", str(out), timeout=120)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--pii error: 1 personal value(s)" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not report.exists()
    for form in (PHONE, PHONE.replace(" ", ""), "345 678", "345678"):
        assert form not in proc.stdout + proc.stderr, form


def test_pii_redact_evaluates_a_redacted_copy_and_writes_no_value(tmp_path):
    rows = sample_rows()
    rows[4]["Query"] = f"Em gọi số {PHONE} của chủ nhiệm để hỏi lịch sinh hoạt được không?"
    test = write_rows(tmp_path / "test.csv", rows)
    before = test.read_bytes()
    out = tmp_path / "out"
    proc = run_script("evaluate_rag.py", "--embedding_models", "--test_data", str(test), "--pii", "redact",
                      "--output_dir", str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert test.read_bytes() == before
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["data_audit"]["pii"]["counts"] == {"phone": 1} and results["data_audit"]["pii"]["redacted"]
    per_query = (out / "per_query.csv").read_text(encoding="utf-8-sig")
    assert "Em gọi số [SĐT_1] của chủ nhiệm" in per_query
    assert "Em gọi số [SĐT_1] của chủ nhiệm" in (out / "results.html").read_text(encoding="utf-8")  # the page too
    for path in [p for p in out.rglob("*") if p.is_file()]:
        assert PHONE.encode() not in path.read_bytes(), path
    assert PHONE not in proc.stdout + proc.stderr


def _strip_accents(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c)).replace(
        "đ", "d").replace("Đ", "D")


def test_leaked_test_query_is_found_and_metrics_are_reported_without_it(tmp_path, capsys):
    import evaluate_rag

    corpus = load_corpus(SAMPLE_CORPUS)
    queries = load_queries(SAMPLE_TEST, corpus, flag="--test_data")
    scores = BM25Index(corpus.texts).scores([q.query for q in queries])
    run = {f"q{i}": dict(zip(corpus.ids, map(float, row))) for i, row in enumerate(scores)}
    qrels = {f"q{i}": {pid: 1 for pid in q.relevant_ids} for i, q in enumerate(queries)}
    trec = trec_metrics(run, qrels, KS)  # per-query metrics, computed by trec_eval
    # Leak the query BM25 does worst on, so that leaving it out visibly changes the means.
    leaked = min(range(len(queries)), key=lambda i: trec[f"q{i}"]["ndcg@5"])
    assert trec[f"q{leaked}"]["ndcg@5"] < np.mean([trec[q]["ndcg@5"] for q in trec])

    # The training copy differs only by accents and word order; two other training queries are unrelated.
    copy = " ".join(reversed(_strip_accents(queries[leaked].query).split()))
    train_rows = [{"Query": copy, "Ground truth document": queries[leaked].relevant_ids[0]},
                  {"Query": "CLB có bao nhiêu ban chuyên môn?", "Ground truth document": "1"},
                  {"Query": "Ai phụ trách phòng xưởng?", "Ground truth document": "2"}]
    train = write_rows(tmp_path / "train.csv", train_rows)
    out = tmp_path / "out"
    assert evaluate_rag.main(["--embedding_models", "--train_data", str(train), "--output_dir", str(out)]) == 0

    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["data_audit"]["leakage"]["leaked_test_queries"] == 1
    assert results["leaked_test_queries"] == {"count": 1, "queries_kept": len(queries) - 1,
                                              "rows": [queries[leaked].row]}
    (bm25,) = results["systems"]
    without = bm25["metrics_without_leaked"]
    assert set(without) == set(bm25["metrics"])
    kept = [f"q{i}" for i in range(len(queries)) if i != leaked]
    for key in trec["q0"]:
        assert without[key] == pytest.approx(np.mean([trec[q][key] for q in kept]), abs=1e-12), key
    assert without["ndcg@5"] > bm25["metrics"]["ndcg@5"]

    md = (out / "results.md").read_text(encoding="utf-8")
    assert "## Without the 1 leaked test query" in md and f"(rows {queries[leaked].row})" in md
    assert f"| ndcg@5 | {without['ndcg@5']:.4f} (+" in md
    stdout = capsys.readouterr().out
    assert f"Without the 1 leaked test query (near-copies of --train_data queries), ndcg@5: bm25 " \
           f"{without['ndcg@5']:.4f} (+" in stdout


def test_no_leakage_section_without_leaked_queries(tmp_path):
    import evaluate_rag

    out = tmp_path / "out"
    assert evaluate_rag.main(["--embedding_models", "--output_dir", str(out)]) == 0
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["data_audit"]["pii"] == {"policy": "warn", "checked": True, "counts": {}, "total": 0,
                                            "redacted": False}
    assert "leaked_test_queries" not in results and "metrics_without_leaked" not in results["systems"][0]
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "leaked" not in md and "- Leakage: not checked (no `--train_data`)." in md


@pytest.fixture
def model_with_pii(tiny_st, tmp_path):
    """A copy of the tiny model whose metrics.json says its training data held a phone number, not redacted."""
    model = tmp_path / "ft-model"
    shutil.copytree(tiny_st, model)
    audit = run_audit(Corpus(["1"], [f"Liên hệ chủ nhiệm: {PHONE}."]), [LabelledQuery("Liên hệ ai?", ["1"])])
    (model / "metrics.json").write_text(json.dumps({"base_model": "BAAI/bge-m3", "data_audit": audit.summary()}),
                                        encoding="utf-8")
    return model


def _publish_argv(model: Path, out: Path, *extra: str) -> list[str]:
    return ["--embedding_models", str(model), "--max_seq_length", "64", "--output_dir", str(out), "--cache_dir",
            str(out.parent / "cache"), "--push_to_hub", "--hub_embedding_repo", "me/emb", *extra]


def test_publish_refuses_a_model_trained_on_unredacted_pii_unless_allowed(fake_hub, model_with_pii, tmp_path,
                                                                          caplog):
    import evaluate_rag
    from ragtune.core.errors import run_main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        run_main(evaluate_rag.main, _publish_argv(model_with_pii, out))
    assert exit_info.value.code == 2
    assert fake_hub.calls == [] and (out / "results.json").exists()
    (error,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("error:")]
    assert f"embedding model '{model_with_pii}'" in error and "1 personal value(s) (phone 1)" in error, error
    assert "--allow_pii" in error

    assert evaluate_rag.main(_publish_argv(model_with_pii, out, "--allow_pii")) == 0
    (call,) = fake_hub.calls
    assert call["requests"][0].model_dir == model_with_pii


def test_publish_accepts_a_model_whose_pii_was_redacted(fake_hub, model_with_pii, tmp_path):
    import evaluate_rag

    metrics = json.loads((model_with_pii / "metrics.json").read_text(encoding="utf-8"))
    metrics["data_audit"]["pii"]["redacted"] = True
    (model_with_pii / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    assert evaluate_rag.main(_publish_argv(model_with_pii, tmp_path / "out")) == 0
    assert len(fake_hub.calls) == 1
