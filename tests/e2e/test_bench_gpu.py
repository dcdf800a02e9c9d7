"""benchmarks/bench_gpu.py: the smoke run CI relies on (the memory estimate the README quotes is tested in
tests/unit/train/test_memory.py)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import REPO

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


def test_smoke_prints_the_table(smoke):
    proc, _ = smoke
    header = [line for line in proc.stdout.splitlines() if line.startswith("| template |")]
    assert header and "samples/s" in header[0] and "peak GiB" in header[0] and "fits 16 GB" in header[0]
    for name in TEMPLATES:
        assert any(line.startswith(f"| {name} |") for line in proc.stdout.splitlines()), name
