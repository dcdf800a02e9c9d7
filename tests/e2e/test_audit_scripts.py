"""The data audit as the fine-tuning scripts run it: before anything is written, into metrics.json and the card."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_script

import fine_tune_bge_m3
from ragtune.core.data import SAMPLE_TRAIN

PHONE = "0912 345 678"
EMAIL = "nguyen.van.a@example.com"
QUICK = ["--epochs", "1", "--batch_size", "4", "--max_seq_length", "64", "--evaluation_steps", "2",
         "--checkpoint_save_steps", "2", "--warmup_steps", "1", "--freeze_layers", "2", "--hard_negative_source",
         "bm25", "--max_steps", "2"]


@pytest.fixture
def train_with_pii(tmp_path) -> Path:
    frame = pd.read_csv(SAMPLE_TRAIN, encoding="utf-8-sig", dtype=str, keep_default_na=False)
    frame.loc[0, "Query"] = f"Số điện thoại {PHONE} của trưởng ban là gì?"
    frame.loc[1, "Query"] = f"Gửi email cho {EMAIL} thế nào?"
    path = tmp_path / "train.csv"
    frame.to_csv(path, index=False, encoding="utf-8")
    return path


def test_pii_error_exits_2_before_anything_is_written(train_with_pii, tmp_path):
    out = tmp_path / "out"
    result = run_script("fine_tune_bge_m3.py", "--train_data", str(train_with_pii), "--pii", "error",
                        "--base_model", "/not/loaded/before/the/audit", "--output_dir", str(out))
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "--pii error" in result.stderr
    assert not out.exists()
    assert PHONE not in result.stdout + result.stderr and EMAIL not in result.stdout + result.stderr


def test_redacted_training_records_the_audit_in_metrics_and_card(train_with_pii, tiny_st, tmp_path, capsys, caplog):
    out = tmp_path / "out"
    train_bytes = train_with_pii.read_bytes()
    assert fine_tune_bge_m3.main([*QUICK, "--base_model", str(tiny_st), "--train_data", str(train_with_pii),
                                  "--pii", "redact", "--output_dir", str(out)]) == 0
    audit = json.loads((out / "metrics.json").read_text())["data_audit"]
    assert audit["pii"]["redacted"] is True and audit["pii"]["total"] >= 2
    assert audit["pii"]["counts"]["phone"] >= 1 and audit["pii"]["counts"]["email"] >= 1
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "## Data audit" in card and "redacted before training" in card
    assert train_with_pii.read_bytes() == train_bytes  # the source file is untouched
    logged = caplog.text + "".join(capsys.readouterr())
    for text in (logged, card, (out / "metrics.json").read_text()):
        assert PHONE not in text and PHONE.replace(" ", "") not in text and EMAIL not in text


def test_unredacted_pii_is_recorded_as_such(train_with_pii, tiny_st, tmp_path):
    out = tmp_path / "out"
    assert fine_tune_bge_m3.main([*QUICK, "--base_model", str(tiny_st), "--train_data", str(train_with_pii),
                                  "--output_dir", str(out)]) == 0
    audit = json.loads((out / "metrics.json").read_text())["data_audit"]
    assert audit["pii"]["policy"] == "warn" and audit["pii"]["redacted"] is False and audit["pii"]["total"] >= 2
    assert "**not redacted**" in (out / "README.md").read_text(encoding="utf-8")
