"""The README's quick start, run as a newcomer runs it: the commands of its "Try it offline" section, read from
README.md itself, with the packaged all-MiniLM-L6-v2 on the sample data, end at a model published to a loopback
fake Hub (tests/hub_server.py) and a predictions file.

Run verbatim in one bash session, except two lines a test cannot run: ``pip install`` (the package must already be
installed at the version the README pins: requirements-dev.txt installs it) and ``hf auth login`` (the token comes
from HF_TOKEN instead).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from conftest import REPO
from hub_checks import TOKEN, assert_token_never_sent_but_in_auth
from huggingface_hub import ModelCard

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TEST, load_corpus

SECTION = "## Try it offline"
PUBLISHED = "your-name/minilm-ragtune-demo"


def quick_start_commands(readme: str) -> list[str]:
    """The bash commands of the README's quick-start section, line continuations joined."""
    section = readme[readme.index(SECTION):]
    section = section[:section.index("\n## ", 1)]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    joined = "\n".join(blocks).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def runnable(commands: list[str]) -> list[str]:
    """The commands a test runs: pip installs checked against what is installed, the interactive login dropped."""
    kept = []
    for command in commands:
        if command.startswith("pip install"):
            for name, pinned in re.findall(r"([A-Za-z0-9_.-]+)==([\w.]+)", command):
                assert version(name) == pinned, f"the README installs {name}=={pinned}, this machine has {version(name)}"
        elif command != "hf auth login":
            kept.append(command)
    return kept


def test_the_quick_start_gets_a_newcomer_to_a_published_model_and_a_predictions_file(hub, tmp_path):
    commands = runnable(quick_start_commands((REPO / "README.md").read_text(encoding="utf-8")))
    assert sum(c.startswith("python ") or " python " in c for c in commands) >= 4  # train, evaluate, predict, publish
    for path in [*REPO.glob("*.py"), REPO / "ragtune"]:  # the checkout, as the newcomer's working directory
        (tmp_path / path.name).symlink_to(path)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HF_")},  # the README sets HF_HUB_OFFLINE
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # `python` is this Python
           "HF_HOME": str(tmp_path / "hf-home"), "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(commands)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]

    # A published model: its weights and an honest card, in a private repo.
    files = hub.committed_files(PUBLISHED)
    assert "README.md" in files and any(name.endswith(".safetensors") for name in files), sorted(files)
    assert hub.repos[PUBLISHED].private
    card = ModelCard(files["README.md"].decode("utf-8"))
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert str(tmp_path) not in card.content and TOKEN not in card.content
    assert_token_never_sent_but_in_auth(hub)

    # A predictions file: every test query with the ranked passages of the best system.
    predictions = pd.read_csv(tmp_path / "outputs" / "demo-predictions.csv", encoding="utf-8-sig")
    test = pd.read_csv(SAMPLE_TEST, encoding="utf-8-sig")
    assert len(predictions) == len(test)
    corpus_ids = set(load_corpus(SAMPLE_CORPUS).ids)
    for row in predictions["retrieved_ids"]:
        ids = [i.strip() for i in str(row).split(",")]
        assert len(ids) == 5 and set(ids) <= corpus_ids
    assert (tmp_path / "outputs" / "demo-eval" / "results.html").stat().st_size > 0
