"""fine_tune_bge_m3.py as users run it: the template command, resume, interruption, bad input."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import run_script
from safetensors.torch import load_file

import fine_tune_bge_m3
from ragtune.core.errors import run_main
from ragtune.train.checkpoints import is_complete_checkpoint

TEMPLATE = ["--epochs", "5", "--batch_size", "8", "--max_seq_length", "384", "--evaluation_steps", "15",
            "--lr", "1e-5", "--checkpoint_save_steps", "30", "--freeze_layers", "4", "--warmup_steps", "100",
            "--resume_from_checkpoint", "auto"]
# A short, fast configuration for behaviour that does not need the full template.
QUICK = ["--epochs", "2", "--batch_size", "8", "--max_seq_length", "64", "--evaluation_steps", "4",
         "--checkpoint_save_steps", "4", "--warmup_steps", "2", "--lr", "5e-4", "--freeze_layers", "2",
         "--hard_negative_source", "bm25"]


def run(argv: list[str]) -> int:
    """Run the script's main in-process, as ``python fine_tune_bge_m3.py ...`` would, and return its exit code."""
    with pytest.raises(SystemExit) as info:
        run_main(fine_tune_bge_m3.main, argv)
    return info.value.code


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_bare_command_equals_the_template():
    parser = fine_tune_bge_m3.build_parser()
    assert vars(parser.parse_args([])) == vars(parser.parse_args(TEMPLATE))
    defaults = parser.parse_args([])
    assert defaults.base_model == "BAAI/bge-m3" and defaults.dev_ratio == 0.2 and defaults.scheduler == "linear"
    assert defaults.output_dir is None  # derived from --base_model: stable, so `auto` finds the last run


def test_help_explains_every_flag():
    help_text = fine_tune_bge_m3.build_parser().format_help()
    for flag in [*TEMPLATE[::2], "--base_model", "--corpus", "--train_data", "--output_dir", "--dev_ratio",
                 "--scheduler", "--gradient_accumulation_steps", "--early_stopping_patience", "--seed", "--precision",
                 "--query_prompt", "--passage_prompt", "--num_hard_negatives", "--hard_negative_range"]:
        assert flag in help_text, flag


def test_template_command_end_to_end(tiny_st, tmp_path):
    out = tmp_path / "out"
    result = run_script("fine_tune_bge_m3.py", *TEMPLATE, "--base_model", str(tiny_st), "--output_dir", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "Dev metrics (20 held-out queries)" in result.stdout

    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(out))
    assert model.encode_query(["Ai sáng lập câu lạc bộ?"]).shape == (1, 32)
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("before", "after"):
        assert set(metrics["dev_metrics"][stage]) == {f"{m}@{k}" for m in ("hit", "recall", "mrr", "ndcg")
                                                       for k in (3, 5, 7)}
        assert all(0.0 <= v <= 1.0 for v in metrics["dev_metrics"][stage].values())
    assert metrics["config"]["freeze_layers"] == 4 and metrics["config"]["warmup_steps"] == 100
    # The hybrid first stage's dense weight, chosen on dev (grid 0..1) by the smoothed rule at the hybrid's own
    # depth, is saved with that depth for evaluate_rag.py, with the grid's best and the BM25 reference.
    fusion, dev = metrics["fusion"], metrics["dev_metrics"]
    assert fusion["first_stage"] == "hybrid" and fusion["chosen_on"] == "dev" and 0.0 <= fusion["dense_weight"] <= 1.0
    assert fusion["depth"] == 100 and fusion["rule"] == "smoothed" and fusion["metric"] == "ndcg@5"
    assert fusion["chosen_value"] <= fusion["best_value"] + 1e-9
    assert dev["hybrid"]["ndcg@5"] == pytest.approx(fusion["chosen_value"], abs=1e-6)
    assert dev["bm25"]["ndcg@5"] == pytest.approx(fusion["reference_value"], abs=1e-6)
    # The printed table: BM25 beside the models, and the tuned-on-dev hybrid marked as such.
    assert "BM25" in result.stdout and "hybrid (dense weight" in result.stdout
    assert "tuned here: optimistic" in result.stdout
    assert metrics["data_audit"]["pii"]["policy"] == "warn" and metrics["dropped_training_rows"] == 0
    card = (out / "README.md").read_text()
    assert "ndcg@5" in card.replace("Ndcg", "ndcg")
    assert (out / "training_curves.png").stat().st_size > 1000
    assert list((out / "runs").rglob("events.out.tfevents.*"))
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    assert 1 <= len(checkpoints) <= 3 and all(is_complete_checkpoint(out / c) for c in checkpoints)


def test_frozen_layers_are_unchanged_and_the_rest_trains(tiny_st, tmp_path):
    out = tmp_path / "out"
    assert run([*QUICK, "--base_model", str(tiny_st), "--output_dir", str(out), "--freeze_layers", "4"]) == 0
    before, after = weights(tiny_st), weights(out)
    frozen = [k for k in before if "embeddings" in k or any(f"layer.{i}." in k for i in range(4))]
    trained = [k for k in before if any(f"layer.{i}." in k for i in (4, 5))]
    assert frozen and trained
    assert all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in trained)


def test_freezing_every_layer_is_a_clear_error(tiny_st, tmp_path, caplog):
    assert run([*QUICK, "--base_model", str(tiny_st), "--output_dir", str(tmp_path / "o"), "--freeze_layers", "6"]) == 2
    assert "--freeze_layers 6 leaves nothing to train: the model has 6 encoder layers" in caplog.text


def test_prompts_are_saved_and_applied_by_encode_query(tiny_st, tmp_path):
    out = tmp_path / "out"
    assert run([*QUICK, "--base_model", str(tiny_st), "--output_dir", str(out), "--max_steps", "2",
                "--query_prompt", "query: ", "--passage_prompt", "passage: "]) == 0
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(out))
    assert model.prompts["query"] == "query: " and model.prompts["document"] == "passage: "
    text = "Phí thành viên là bao nhiêu?"
    torch.testing.assert_close(model.encode_query([text], convert_to_tensor=True),
                               model.encode([f"query: {text}"], convert_to_tensor=True))


def test_plain_hugging_face_encoder_and_no_dev_split(tiny_encoder, tmp_path):
    out = tmp_path / "out"
    assert run([*QUICK, "--base_model", str(tiny_encoder), "--output_dir", str(out), "--dev_ratio", "0",
                "--max_steps", "3"]) == 0
    assert (out / "modules.json").exists() and json.loads((out / "metrics.json").read_text())["global_step"] == 3


# ----------------------------------------------------------------------------- bad input


def bad_queries(tmp_path: Path, rows, header=("Query", "Ground truth document")) -> str:
    path = tmp_path / "q.csv"
    pd.DataFrame(rows, columns=list(header)).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("make_args, message", [
    (lambda t: ["--corpus", str(t / "missing.csv")], "--corpus: file not found"),
    (lambda t: ["--train_data", bad_queries(t, [["q?", 1]], header=("Question", "Docs"))], "needs columns"),
    (lambda t: ["--train_data", bad_queries(t, [["", 1], ["q?", 2]])], "row 2: blank query"),
    (lambda t: ["--train_data", bad_queries(t, [["q?", 999]])], "has a ground-truth id that exists in the corpus"),
    (lambda t: ["--batch_size", "1"], "--batch_size must be at least 2 (in-batch negatives"),
    (lambda t: ["--dev_ratio", "1"], "--dev_ratio must be in [0, 1)"),
    (lambda t: ["--dev_ratio", "-0.2"], "--dev_ratio must be in [0, 1)"),
    (lambda t: ["--checkpoint_save_steps", "20"], "must be a multiple of --evaluation_steps"),
    (lambda t: ["--base_model", str(t / "no-such-model")], "no model folder or Hub model named"),
    (lambda t: ["--base_model", "some-org/not-cached-model"], "not in the local Hugging Face cache"),
])
def test_bad_input_exits_2_with_one_clear_line(tmp_path, caplog, make_args, message):
    argv = [*TEMPLATE, "--output_dir", str(tmp_path / "out"), *make_args(tmp_path)]
    if "--base_model" not in argv:
        argv += ["--base_model", str(tmp_path / "unused")]  # data errors must come before model loading
    assert run(argv) == 2
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and message in errors[0].getMessage(), caplog.text
    assert not (tmp_path / "out").exists()  # nothing written


def test_bad_input_from_the_command_line_has_no_traceback(tmp_path):
    result = run_script("fine_tune_bge_m3.py", "--batch_size", "1", "--output_dir", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        "error: --batch_size must be at least 2 (in-batch negatives need at least 2 examples per batch), got 1")


def test_finished_model_is_not_overwritten_without_the_flag(tiny_st, tmp_path, caplog):
    out = tmp_path / "out"
    argv = [*QUICK, "--base_model", str(tiny_st), "--output_dir", str(out), "--max_steps", "2"]
    assert run(argv) == 0
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    time.sleep(0.01)
    assert run(argv) == 2
    assert "already holds a finished model; pass --overwrite_output_dir" in caplog.text
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert run([*argv, "--overwrite_output_dir"]) == 0
    assert (out / "model.safetensors").stat().st_mtime_ns != stamp
