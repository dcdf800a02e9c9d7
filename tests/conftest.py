"""Shared fixtures for both tiers: tiny models built once per session, fakes of the Hub, a runner for the scripts.

The tests come in two tiers:

- ``tests/unit/``: one folder per ragtune package; fast, no training and no subprocess
  (``python -m pytest -m "not slow"`` runs this tier alone, in under two minutes on 2 CPU cores).
- ``tests/e2e/``: the top-level scripts as users run them, real processes, training, resume and
  ``accelerate launch`` runs. Every test there is marked ``slow`` here (:func:`pytest_collection_modifyitems`).

Helpers shared by both tiers live next to this file (``tiny_models.py``, ``fake_openai.py``,
``hub_server.py``, ``hub_checks.py``, ``planted_pii.py``, ``trec_reference.py``, ``launch_script.py``), which is on
``sys.path`` for every test module.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
E2E = TESTS / "e2e"
UNIT = TESTS / "unit"
LAUNCH_SCRIPT = TESTS / "launch_script.py"  # run as a script: python tests/launch_script.py <script> ...
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(TESTS))

# Tests never touch the network: every model is built here and loaded from disk.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (the README's test command runs two workers on 2 cores), each worker and every script it starts
# computes on one thread: two processes with two OpenMP threads each on two cores spin-wait on each other.
if "PYTEST_XDIST_WORKER" in os.environ:
    for threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(threads, "1")

from tiny_models import build_tiny_cross_encoder, build_tiny_encoder, build_tiny_sentence_transformer  # noqa: E402

TIER_MARKERS = ("slow", "distributed")


@pytest.hookimpl(tryfirst=True)  # before -m deselects: "not slow" must see the marker
def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e is ``slow``; a test under tests/unit may not be ``slow`` or ``distributed``."""
    misplaced = []
    for item in items:
        path = Path(str(item.path)).resolve()
        if E2E in path.parents:
            item.add_marker(pytest.mark.slow)
        elif UNIT in path.parents and any(item.get_closest_marker(m) for m in TIER_MARKERS):
            misplaced.append(item.nodeid)
    if misplaced:
        raise pytest.UsageError("tests marked slow or distributed belong under tests/e2e (the unit tier stays fast): "
                                + ", ".join(misplaced))


# ---------------------------------------------------------------------------- tiny models


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


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-layer random GPT-2 with the tiny WordPiece tokenizer, and a LoRA adapter for it: (model, adapter)."""
    from tiny_models import build_tiny_gpt2_with_lora

    return build_tiny_gpt2_with_lora(tmp_path_factory.mktemp("gen") / "tiny-gpt2")


@pytest.fixture(scope="session")
def models(tiny_st, tiny_cross_encoder, tmp_path_factory) -> dict[str, Path]:
    """Two tiny embedding models and two tiny rerankers (different random weights)."""
    folder = tmp_path_factory.mktemp("more-models")
    return {"st_a": tiny_st, "st_b": build_tiny_sentence_transformer(folder / "tiny-st-b", seed=1),
            "ce_a": tiny_cross_encoder, "ce_b": build_tiny_cross_encoder(folder / "tiny-ce-b", seed=1)}


# ---------------------------------------------------------------------------- scripts


def run_script(script: str, *args: str, cwd: Path = REPO, env: dict | None = None,
               timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a top-level script as a user would, returning its exit code and output."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def error_lines(output: str) -> list[str]:
    """The error lines of a script's output: logged ERRORs and argparse's "error:" line."""
    return [line for line in output.splitlines() if " ERROR " in line or line.startswith("error")]


def assert_one_clear_error(result: subprocess.CompletedProcess, message: str, out: Path | None = None) -> None:
    """What a user error gets: exit code 2, no traceback, one error line saying ``message``, nothing in ``out``."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    errors = error_lines(output)
    assert len(errors) == 1 and message in errors[0], output[-3000:]
    assert out is None or not out.exists(), "nothing may be written before the input is validated"


# ---------------------------------------------------------------------------- the Hub


@pytest.fixture()
def hub():
    """A loopback fake Hub (tests/hub_server.py) that accepts hub_checks.TOKEN."""
    from hub_checks import TOKEN
    from hub_server import FakeHub

    with FakeHub(token=TOKEN) as server:
        yield server


def as_training_run(model: Path, folder: Path) -> Path:
    """A copy of ``model`` at ``folder`` as a fine-tuning run leaves it (checkpoints, logs, metrics...)."""
    import shutil

    from hub_checks import add_training_leftovers

    shutil.copytree(model, folder)
    add_training_leftovers(folder)
    return folder


@pytest.fixture()
def st_run(tiny_st, tmp_path) -> Path:
    """A sentence-transformers model folder as a fine-tuning run leaves it."""
    return as_training_run(tiny_st, tmp_path / "bge-m3-embedding")


@pytest.fixture()
def ce_run(tiny_cross_encoder, tmp_path) -> Path:
    """A cross-encoder folder as a fine-tuning run leaves it."""
    return as_training_run(tiny_cross_encoder, tmp_path / "reranker")


@pytest.fixture()
def online(monkeypatch):
    """Lift HF_HUB_OFFLINE (set above, before huggingface_hub reads it) for in-process publishing."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Its user-agent telemetry would fetch a registry from constants.ENDPOINT (huggingface.co here).
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture()
def no_saved_token(monkeypatch, tmp_path):
    """No token in the environment nor in the login cache."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))


@dataclass
class FakePublishRequest:
    model_dir: Path
    repo_id: str
    kind: str
    base_model: str
    metrics: dict
    baseline_metrics: dict
    dataset_name: str | None
    results_markdown: str
    training_config: dict | None = None
    language: list = field(default_factory=list)
    license: str = ""
    main_metric: str = "ndcg@5"
    test_queries: int | None = None
    compared_metrics: dict = field(default_factory=dict)
    fusion: dict | None = None
    data_audit: dict | None = None


@pytest.fixture
def fake_hub(monkeypatch):
    """A stand-in ragtune.evaluate.hub that records what evaluate_rag.py asks to publish (``.calls``); set
    ``.fail`` to make it raise its HubError."""
    import ragtune.evaluate
    from ragtune.core.errors import UserError

    calls = []
    module = types.ModuleType("ragtune.evaluate.hub")

    class HubError(UserError):
        pass

    def publish_models(requests, token, private, dry_run):
        calls.append({"requests": requests, "token": token, "private": private, "dry_run": dry_run})
        if module.fail:
            raise HubError("hub said no")
        return [{"repo_id": r.repo_id, "url": f"https://hub.example/{r.repo_id}"} for r in requests]

    module.PublishRequest, module.publish_models, module.HubError, module.fail = (FakePublishRequest, publish_models,
                                                                                 HubError, False)
    # Both: ``from ragtune.evaluate import hub`` takes the package's attribute once the real module was imported.
    monkeypatch.setitem(sys.modules, "ragtune.evaluate.hub", module)
    monkeypatch.setattr(ragtune.evaluate, "hub", module, raising=False)
    module.calls = calls
    return module
