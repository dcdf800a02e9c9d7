"""Nothing leaked: under the default ``--pii warn``, no planted personal value shows in full in any file a run
writes or in what it prints; a mistyped secret flag is not echoed by argparse.

The scripts run as real processes on a tiny corpus and training file where every passage, query and answer
carries a planted value (tests/planted_pii.py). Every file under the runs' output folders (checkpoints, caches,
cards, metrics, reports) and both output streams are searched; only the input files may hold the values.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_script
from planted_pii import PLANTED, assert_nothing_leaks

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
PASSAGES = 12
QUERIES = 10


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def _write(path: Path, rows: list[dict[str, str]]) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _planted(i: int) -> str:
    return PLANTED[i % len(PLANTED)][0]


@pytest.fixture
def planted_data(tmp_path) -> dict[str, Path]:
    """A 12-passage corpus and 10 labelled queries (with answers), every text carrying a planted personal value;
    the first 3 queries are also the test set."""
    folder = tmp_path / "data"
    folder.mkdir()
    corpus = _rows(SAMPLE_CORPUS)[:PASSAGES]
    for i, row in enumerate(corpus):
        row["Văn bản"] = f"{row['Văn bản']} {_planted(i)}"
    queries = [row for row in _rows(SAMPLE_TRAIN) if int(row["Ground truth document"].split(",")[0]) <= PASSAGES]
    queries = [{**row, "Ground truth document": row["Ground truth document"].split(",")[0]} for row in queries]
    queries = queries[:QUERIES]
    assert len(queries) == QUERIES
    for i, row in enumerate(queries):
        row["Query"] = f"{row['Query']} {_planted(i + 5)}"
        row["Ground truth answer"] = f"{row['Ground truth answer']} {_planted(i + 11)}"
    return {"corpus": _write(folder / "corpus.csv", corpus), "train": _write(folder / "train.csv", queries),
            "test": _write(folder / "test.csv", queries[:3])}


def assert_nothing_written_or_printed(result: subprocess.CompletedProcess, *folders: Path) -> None:
    """The run succeeded, and no planted value shows in full in its output streams or any file under ``folders``
    (every leak is listed)."""
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    texts = {"stdout": result.stdout, "stderr": result.stderr}
    files = [path for folder in folders for path in sorted(folder.rglob("*")) if path.is_file()]
    assert files
    texts.update((str(path), path.read_bytes().decode("utf-8", errors="ignore")) for path in files)
    leaks = []
    for name, text in texts.items():
        try:
            assert_nothing_leaks(text)
        except AssertionError as err:
            leaks.append(f"{name}: {err}")
    assert not leaks, "\n".join(leaks)


def test_generator_and_evaluation_show_no_personal_value_under_pii_warn(planted_data, tiny_qwen2, tiny_st, tmp_path):
    """The generator's "one training example" log, its checkpoints, card and metrics.json (dev answers), then
    evaluate_rag.py's reports, answers.csv and cache: personal values masked everywhere under the default --pii."""
    adapter = tmp_path / "generator"
    trained = run_script(
        "fine_tune_generator.py", "--base_model", str(tiny_qwen2), "--corpus", str(planted_data["corpus"]),
        "--train_data", str(planted_data["train"]), "--output_dir", str(adapter), "--max_steps", "1",
        "--evaluation_steps", "1", "--checkpoint_save_steps", "1", "--batch_size", "2",
        "--gradient_accumulation_steps", "1", "--max_seq_length", "384", "--num_distractors", "1",
        "--max_new_tokens", "4", "--max_dev_generations", "2", "--audit_report", str(adapter / "audit.md"),
        env=ONE_THREAD)
    assert_nothing_written_or_printed(trained, adapter)
    example = (trained.stderr + trained.stdout).partition("trained part between >>> and <<<")[2][:3000]
    assert "•" in example.partition(">>>")[2].partition("<<<")[0]  # the trained answer, masked
    dev_answers = json.loads((adapter / "metrics.json").read_text())["dev_answers"]
    assert dev_answers and all("•" in row["reference"] for row in dev_answers)
    assert list(adapter.glob("checkpoint-*"))

    evaluation = tmp_path / "evaluation"
    evaluated = run_script(
        "evaluate_rag.py", "--corpus", str(planted_data["corpus"]), "--test_data", str(planted_data["test"]),
        "--train_data", str(planted_data["train"]), "--embedding_models", str(tiny_st), "--k", "1", "3",
        "--answer_k", "2", "--answer_systems", "bm25", "--generator_local", str(tiny_qwen2),
        "--generator_adapter", str(adapter), "--generator_max_new_tokens", "4", "--output_dir", str(evaluation),
        "--audit_report", str(evaluation / "audit.md"), env=ONE_THREAD)
    assert_nothing_written_or_printed(evaluated, evaluation)
    for name in ("results.json", "results.md", "per_query.csv", "answers.csv", "results.html"):
        assert (evaluation / name).is_file(), name
    for name in ("per_query.csv", "results.html"):
        assert "•" in (evaluation / name).read_text(encoding="utf-8-sig"), name  # masked, not dropped


ENCODER_RUNS = {
    "fine_tune_bge_m3.py": ["--freeze_layers", "0", "--hard_negative_source", "bm25", "--num_hard_negatives", "1"],
    "fine_tune_reranker.py": ["--num_hard_negatives", "1", "--num_random_negatives", "1", "--rerank_top_n", "7"],
}


@pytest.mark.parametrize("script", list(ENCODER_RUNS))
def test_sentence_transformers_cards_and_checkpoints_show_no_personal_value_under_pii_warn(script, planted_data,
                                                                                          models, tmp_path):
    """sentence-transformers' own card (training examples, widget sentences), in the final model and in every
    checkpoint, for the embedding model and the reranker."""
    out = tmp_path / "model"
    base = models["st_a"] if script == "fine_tune_bge_m3.py" else models["ce_a"]
    result = run_script(
        script, "--base_model", str(base), "--corpus", str(planted_data["corpus"]), "--train_data",
        str(planted_data["train"]), "--output_dir", str(out), "--max_steps", "1", "--epochs", "1", "--batch_size", "4",
        "--max_seq_length", "64", "--evaluation_steps", "1", "--checkpoint_save_steps", "1", "--warmup_steps", "0",
        *ENCODER_RUNS[script], env=ONE_THREAD)
    assert_nothing_written_or_printed(result, out)
    cards = [out / "README.md", *out.glob("checkpoint-*/README.md")]
    assert len(cards) >= 2 and all(card.is_file() for card in cards)
    # Checkpoints keep sentence-transformers' examples, masked; the final card shows none (unredacted PII).
    assert any("•" in card.read_text(encoding="utf-8") for card in cards[1:])
    assert "* Samples:" not in (out / "README.md").read_text(encoding="utf-8")


SECRET_VALUES = [("--hub-token", "hf_" + "a1B2" * 6), ("--judge-api-key", "sk-" + "Z9y8" * 6),
                 ("--hub_tokn", "mysecretvalue")]
SCRIPTS = {"fine_tune_bge_m3": [str(REPO / "fine_tune_bge_m3.py")],
           "fine_tune_reranker": [str(REPO / "fine_tune_reranker.py")],
           "fine_tune_generator": [str(REPO / "fine_tune_generator.py")],
           "evaluate_rag": [str(REPO / "evaluate_rag.py")],
           "ragtune.audit": ["-m", "ragtune.audit", "--corpus", str(SAMPLE_CORPUS), "--train_data", str(SAMPLE_TRAIN)]}


def _run(command: list[str]) -> str:
    result = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2, (result.stdout + result.stderr)[-2000:]
    return result.stdout + result.stderr


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_mistyped_secret_flags_are_one_line_exit_2_and_never_echoed(script):
    """``--hub-token hf_…``, ``--judge-api-key sk-…``, ``--hub_tokn=…`` are unknown flags: argparse's one line
    names them, never their values (one process per script: they share the parser, ragtune.core.cli)."""
    typed = [*SECRET_VALUES[0], *SECRET_VALUES[1], "=".join(SECRET_VALUES[2])]
    output = _run([*SCRIPTS[script], *typed])
    assert not [secret for _, secret in SECRET_VALUES if secret in output], output
    assert len(output.strip().splitlines()) == 1, output
    assert "error: unrecognized arguments: --hub-token" in output and "--hub_tokn=" in output, output


def test_a_secret_in_an_invalid_value_is_not_echoed():
    """argparse's other messages too: a key pasted as the value of another flag (invalid choice)."""
    secret = "hf_" + "Q7w8" * 6
    output = _run([*SCRIPTS["ragtune.audit"], "--pii", secret])
    assert secret not in output and "argument --pii: invalid choice" in output, output
