"""fine_tune_reranker.py as users run it: the template command end to end, clamped negatives, a plain encoder
base, and bad flags and files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import assert_one_clear_error, error_lines, run_script

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN, load_corpus, load_queries
from ragtune.core.metrics import DEFAULT_KS, TRAINING_METRICS

TEMPLATE = ["--batch_size", "3", "--gradient_accumulation_steps", "8", "--epochs", "4", "--lr", "2e-5", "--fp16",
            "--gradient_checkpointing", "--dev_ratio", "0.2", "--num_hard_negatives", "2",
            "--num_random_negatives", "1"]
METRIC_KEYS = {f"{m}@{k}" for m in TRAINING_METRICS for k in DEFAULT_KS}
# Tiny models gain nothing from threads; on a shared 2-core machine extra threads only oversubscribe it.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_reranker(*args: str) -> subprocess.CompletedProcess:
    return run_script("fine_tune_reranker.py", *args, env=ONE_THREAD)



# ---------------------------------------------------------------------------- end to end


def test_template_command_end_to_end(tiny_cross_encoder, tmp_path):
    """The guide's command, exactly, plus --base_model/--output_dir; --fp16 on CPU warns once, trains in fp32."""
    out = tmp_path / "reranker"
    result = run_reranker(*TEMPLATE, "--base_model", str(tiny_cross_encoder), "--output_dir", str(out))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    if not torch.cuda.is_available():
        assert output.count("--fp16 needs a GPU") == 1
    for name in ("metrics.json", "model.safetensors", "config.json", "README.md", "training_curves.png"):
        assert (out / name).is_file(), name
    assert list((out / "runs").rglob("events.out.tfevents.*")), "no TensorBoard logs"
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("first_stage", "before", "after"):
        assert set(metrics["dev_metrics"][stage]) == METRIC_KEYS, stage
    assert metrics["first_stage"] == "bm25"
    assert metrics["hard_negatives_per_positive"] == 2 and metrics["random_negatives_per_positive"] == 1
    assert metrics["pos_weight"] == pytest.approx(3.0)
    # Reranker fusion: the weight chosen on dev (grid 0..1; 1 = the reranker alone, 0 = the first stage alone) by
    # the smoothed rule over the first stage's top 20 is saved with that depth for evaluate_rag.py.
    fusion, dev = metrics["fusion"], metrics["dev_metrics"]
    assert fusion["first_stage"] == "bm25" and 0.0 <= fusion["reranker_weight"] <= 1.0
    assert fusion["depth"] == 20 and fusion["rule"] == "smoothed"
    assert dev["fused"]["ndcg@5"] == pytest.approx(fusion["chosen_value"], abs=1e-6)
    assert fusion["chosen_value"] <= fusion["best_value"] + 1e-9
    assert fusion["best_value"] >= max(dev["after"]["ndcg@5"], dev["first_stage"]["ndcg@5"]) - 1e-9
    assert dev["bm25"] == dev["first_stage"]  # BM25 is the first stage here: one column
    assert "fused (reranker weight" in result.stdout
    assert "first stage (bm25)" in result.stdout and "fine-tuned" in result.stdout
    card = (out / "README.md").read_text()
    assert "first stage (bm25)" in card and "base reranker" in card and "fused with the first stage" in card

    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pairs = [("CLB thành lập năm nào?", "RAIC ra đời ngày 14 tháng 10 năm 2013."), ("Ai?", "Không liên quan.")]
    reranker = CrossEncoder(str(out))
    scores = reranker.predict(pairs, activation_fn=torch.nn.Identity())
    hf_model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    with torch.no_grad():
        logits = hf_model(**tokenizer([p[0] for p in pairs], [p[1] for p in pairs], padding=True,
                                      return_tensors="pt")).logits
    assert logits.shape == (2, 1)
    assert torch.allclose(logits[:, 0], torch.as_tensor(scores), atol=1e-4)


# ---------------------------------------------------------------------------- bad input


def _bad_csv(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.csv"
    path.write_text("id,content\n1,hello\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("args,message", [
    (["--corpus", "/no/such/corpus.csv"], "--corpus: file not found"),
    (["--corpus", "BAD_CSV"], "needs columns"),
    (["--batch_size", "0"], "--batch_size must be at least 1"),
    (["--dev_ratio", "1"], "--dev_ratio must be in [0, 1)"),
    (["--num_random_negatives", "-1"], "--num_random_negatives must be >= 0"),
    (["--hard_negative_source", "dense"], "--hard_negative_source dense needs --embedding_model"),
])
def test_bad_flags_and_files_exit_2_with_one_line(tmp_path, args, message):
    args = [str(_bad_csv(tmp_path)) if a == "BAD_CSV" else a for a in args]
    out = tmp_path / "out"
    result = run_reranker(*args, "--output_dir", str(out))
    assert_one_clear_error(result, message, out)


def test_unknown_model_exits_2_with_one_line(tmp_path):
    out = tmp_path / "out"
    result = run_reranker("--base_model", str(tmp_path / "no-such-model"), "--output_dir", str(out))
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    errors = error_lines(output)
    assert len(errors) == 1 and "--base_model" in errors[0] and "no-such-model" in errors[0]
    assert not out.exists()


def test_finished_output_dir_is_not_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    result = run_reranker("--output_dir", str(out))
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output
    errors = error_lines(output)
    assert len(errors) == 1 and "already holds a finished model" in errors[0] and "--overwrite_output_dir" in errors[0]
    assert (out / "metrics.json").read_text() == "{}"


def test_too_many_hard_negatives_are_clamped_and_training_works(tiny_cross_encoder, tmp_path):
    out = tmp_path / "out"
    result = run_reranker("--base_model", str(tiny_cross_encoder), "--output_dir", str(out),
                          "--num_hard_negatives", "1000", "--max_steps", "1", "--batch_size", "16",
                          "--gradient_accumulation_steps", "1")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "--num_hard_negatives 1000 is more than the corpus allows" in output
    metrics = json.loads((out / "metrics.json").read_text())
    corpus, queries = load_corpus(SAMPLE_CORPUS), load_queries(SAMPLE_TRAIN, load_corpus(SAMPLE_CORPUS))
    assert metrics["hard_negatives_per_positive"] == len(corpus) - min(len(q.relevant_ids) for q in queries)


def test_plain_encoder_gets_a_new_head_and_embedding_model_is_the_first_stage(tiny_encoder, tiny_st, tmp_path):
    out = tmp_path / "out"
    result = run_reranker("--base_model", str(tiny_encoder), "--embedding_model", str(tiny_st),
                          "--output_dir", str(out), "--max_steps", "2", "--evaluation_steps", "1",
                          "--checkpoint_save_steps", "1", "--gradient_accumulation_steps", "1")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "has no sequence-classification head" in output and "starts untrained" in output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["first_stage"] == "dense"
    assert metrics["hard_negative_sources"] == ["bm25", "dense"]
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert model.config.num_labels == 1 and model.config.architectures == ["BertForSequenceClassification"]
