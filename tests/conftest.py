"""Shared fixtures: tiny models built once per session, and a runner for the scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Tests never touch the network: every model is built here and loaded from disk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny_models import build_tiny_cross_encoder, build_tiny_encoder, build_tiny_sentence_transformer  # noqa: E402


@pytest.fixture(scope="session")
def tiny_st(tmp_path_factory) -> Path:
    """A 6-layer sentence-transformers model with random weights."""
    return build_tiny_sentence_transformer(tmp_path_factory.mktemp("models") / "tiny-st")


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A plain Hugging Face BertModel folder (no sentence-transformers files, no classification head)."""
    return build_tiny_encoder(tmp_path_factory.mktemp("models") / "tiny-encoder")


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory) -> Path:
    """A BertForSequenceClassification with one logit."""
    return build_tiny_cross_encoder(tmp_path_factory.mktemp("models") / "tiny-ce")


def run_script(script: str, *args: str, cwd: Path = REPO, env: dict | None = None,
               timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a top-level script as a user would, returning its exit code and output."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    """A 2-layer Qwen2ForCausalLM with random weights, a BPE tokenizer and a ChatML template."""
    from tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-qwen2", "qwen2")


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory) -> Path:
    """A 2-layer Qwen3ForCausalLM with Qwen3's thinking switch in its chat template."""
    from tiny_models import build_tiny_causal_lm

    return build_tiny_causal_lm(tmp_path_factory.mktemp("models") / "tiny-qwen3", "qwen3")
