"""benchmarks/bench_gpu.py: the smoke run CI relies on, and the memory estimate the README quotes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks" / "bench_gpu.py"
TEMPLATES = ["embedding", "reranker", "generator LoRA", "generator QLoRA"]
SEQ_LEN = {"embedding": 384, "reranker": 512, "generator LoRA": 2048, "generator QLoRA": 2048}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench_gpu") / "smoke.json"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, str(BENCH), "--smoke", "--json", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    return proc, (json.loads(out.read_text()) if out.exists() else None)


@pytest.mark.slow
def test_smoke_runs_every_template_with_finite_loss(smoke):
    proc, report = smoke
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line or "Error" in line]
    assert proc.returncode == 0, "\n".join(errors[-20:]) or proc.stderr[-3000:]
    assert [row["template"] for row in report["rows"]] == TEMPLATES
    import torch

    for row in report["rows"]:
        assert row["seq_len"] == SEQ_LEN[row["template"]]
        if row["template"] == "generator QLoRA" and not torch.cuda.is_available():
            assert row["status"] == "skipped: needs a CUDA GPU"
            continue
        if row["template"] == "generator QLoRA" and "bitsandbytes" in row["status"]:
            continue  # a GPU without bitsandbytes: the script says so and exits 2
        assert row["status"] == "ok", row
        # Every optimizer step logged a loss, and none was NaN/inf.
        assert len(row["losses"]) == report["max_steps"] == row["steps"]
        assert row["finite_loss"] is True and all(math.isfinite(v) for v in row["losses"])
        assert row["samples_per_s"] > 0
        assert 0 < row["trainable_params"] <= row["params"]
    by_name = {row["template"]: row for row in report["rows"]}
    # The template settings reached the scripts: frozen bottom layers, checkpointing, LoRA.
    assert by_name["embedding"]["trainable_params"] < by_name["embedding"]["params"]
    assert by_name["reranker"]["gradient_checkpointing"] is True
    assert by_name["embedding"]["gradient_checkpointing"] is False
    assert by_name["generator LoRA"]["trainable_params"] < by_name["generator LoRA"]["params"] / 2


@pytest.mark.slow
def test_smoke_prints_the_table(smoke):
    proc, _ = smoke
    header = [line for line in proc.stdout.splitlines() if line.startswith("| template |")]
    assert header and "samples/s" in header[0] and "peak GiB" in header[0] and "fits 16 GB" in header[0]
    for name in TEMPLATES:
        assert any(line.startswith(f"| {name} |") for line in proc.stdout.splitlines()), name


def test_encoder_parameter_count_matches_the_model():
    """The estimate's parameter formula against real XLM-R modules (tiny config, both heads)."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaModel

    from ragtune.train.memory import XLMR_LARGE, EncoderShape

    config = XLMRobertaConfig(vocab_size=300, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                              intermediate_size=48, max_position_embeddings=130, type_vocab_size=1, num_labels=1)
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert EncoderShape.from_config(config).params() == count(XLMRobertaModel(config))
    assert EncoderShape.from_config(config, head="classifier").params() == count(
        XLMRobertaForSequenceClassification(config))
    assert round(XLMR_LARGE.params() / 1e6) == 568  # BAAI/bge-m3's published size


def test_estimate_follows_the_template_settings():
    from ragtune.train.memory import XLMR_LARGE, estimate_encoder_memory

    forwards = [(8, 32), (8, 384), (8, 384)]
    full = estimate_encoder_memory(XLMR_LARGE, forwards=forwards, frozen_layers=0, gradient_checkpointing=False)
    frozen = estimate_encoder_memory(XLMR_LARGE, forwards=forwards, frozen_layers=4, gradient_checkpointing=False)
    ckpt = estimate_encoder_memory(XLMR_LARGE, forwards=forwards, frozen_layers=4, gradient_checkpointing=True)
    # Freezing the embeddings (256M parameters) and 4 layers removes their gradients and AdamW state.
    assert frozen["optimizer"] < 0.5 * full["optimizer"] and frozen["gradients"] < 0.5 * full["gradients"]
    assert ckpt["activations"] < 0.2 * frozen["activations"]
    assert frozen["total"] == pytest.approx(sum(frozen[k] for k in ("weights", "gradients", "optimizer",
                                                                      "activations")) + 1.0)
