"""Publishing to the Hugging Face Hub from a separate process, as a user runs it: ``HF_ENDPOINT`` points the real
``huggingface_hub`` client at a loopback fake Hub (tests/hub_server.py), the token comes from the environment,
and a rejected token ends the process with one line and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO
from hub_checks import (
    CE_FILES,
    RESULTS_MD,
    ST_FILES,
    TOKEN,
    assert_token_never_sent_but_in_auth,
    card_metadata,
    model_index_values,
    request_for,
    snapshot,
)
from hub_server import FakeHub

from ragtune.evaluate.hub import PublishRequest

RUNNER = r"""
import json, logging, sys
from pathlib import Path
logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
from ragtune.evaluate.hub import PublishRequest, publish_models
from ragtune.core.errors import run_main
spec = json.loads(sys.argv[1])
def main(argv):
    requests = [PublishRequest(**{**r, "model_dir": Path(r["model_dir"])}) for r in spec["requests"]]
    results = publish_models(requests, token=spec.get("token"), private=spec.get("private", True),
                             dry_run=spec.get("dry_run", False), retry_delay=0.01)
    print("RESULTS " + json.dumps(results))
run_main(main)
"""


def run_publisher(hub: FakeHub, tmp_path: Path, requests: list[PublishRequest], token: str | None = None,
                  env: dict | None = None, **spec) -> subprocess.CompletedProcess:
    payload = {"requests": [{**vars(r), "model_dir": str(r.model_dir)} for r in requests], "token": token, **spec}
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                             "HF_OIDC_RESOURCE")}
    full_env.update({"HF_ENDPOINT": hub.url, "HF_HOME": str(tmp_path / "hf-home"), "HF_DEBUG": "1",
                     "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **(env or {})})
    return subprocess.run([sys.executable, "-c", RUNNER, json.dumps(payload)], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=120)


def results_of(proc: subprocess.CompletedProcess) -> list[dict]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS ")]
    return json.loads(line[len("RESULTS "):])


def test_publish_through_hf_endpoint_uploads_model_and_card_only(hub, st_run, ce_run, tmp_path):
    before = snapshot(st_run), snapshot(ce_run)
    config = {"lr": 2e-5, "epochs": 1, "hub_token": TOKEN, "push_token": TOKEN, "nested": {"api_key": "k"},
              "note": f"token was {TOKEN}"}
    requests = [request_for(st_run, "alice/vi-embedding", training_config=config),
                request_for(ce_run, "acme-lab/vi-reranker", kind="reranker", language=["vi", "en"], license="mit")]
    # No token argument: it comes from HF_TOKEN, the environment path.
    proc = run_publisher(hub, tmp_path, requests, env={"HF_TOKEN": TOKEN})
    results = results_of(proc)

    assert not hub.unknown, [(r.method, r.path) for r in hub.unknown]
    assert [r["repo_id"] for r in results] == ["alice/vi-embedding", "acme-lab/vi-reranker"]
    for result, expected in zip(results, (ST_FILES, CE_FILES)):
        assert set(result["files"]) == expected | {"README.md"}
        assert result["private"] is True and result["dry_run"] is False
        assert result["url"] == f"{hub.url}/{result['repo_id']}"
        assert set(hub.committed_files(result["repo_id"])) == expected | {"README.md"}

    creates = [r.json() for r in hub.routed("create_repo")]
    assert creates == [{"name": "vi-embedding", "organization": "alice", "visibility": "private", "type": "model"},
                       {"name": "vi-reranker", "organization": "acme-lab", "visibility": "private", "type": "model"}]
    assert all(repo.private for repo in hub.repos.values())

    # Uploaded bytes are the user's files; the card replaced sentence-transformers' README.md.
    emb = hub.committed_files("alice/vi-embedding")
    for name in ST_FILES:
        assert emb[name] == (st_run / name).read_bytes(), name
    assert emb["README.md"] != (st_run / "README.md").read_bytes()
    assert emb["README.md"].decode() == results[0]["card"]

    meta = card_metadata(emb["README.md"])
    assert meta["base_model"] == "BAAI/bge-m3"
    assert meta["pipeline_tag"] == "sentence-similarity"
    assert meta["library_name"] == "sentence-transformers"
    assert meta["license"] == "apache-2.0" and meta["language"] == ["vi"]
    assert model_index_values(meta) == {"NDCG@5": 0.7125, "MRR@5": 0.65, "Recall@5": 0.8, "Hit@3": 0.75}
    [entry] = meta["model-index"]
    assert entry["name"] == "vi-embedding"
    assert entry["results"][0]["dataset"]["name"] == "legal-qa-vi"
    text = emb["README.md"].decode()
    assert RESULTS_MD in text
    assert "| NDCG@5 | 0.5000 | 0.7125 | +0.2125 | +42.5% |" in text
    assert 'SentenceTransformer("alice/vi-embedding")' in text
    # The secret flag shows only that one was given; the token's value is nowhere, whatever key holds it.
    assert '"lr": 2e-05' in text and '"hub_token": "<redacted>"' in text and '"push_token": "<redacted>"' in text
    assert '"note": "token was <redacted>"' in text

    rer = card_metadata(hub.committed_files("acme-lab/vi-reranker")["README.md"])
    assert rer["pipeline_tag"] == "text-ranking" and rer["license"] == "mit" and rer["language"] == ["vi", "en"]
    assert model_index_values(rer)["NDCG@5"] == 0.7125
    assert 'CrossEncoder("acme-lab/vi-reranker")' in hub.committed_files("acme-lab/vi-reranker")["README.md"].decode()

    # The token: in the Authorization header only; never in a body, a URL, a file, the logs or the output.
    assert_token_never_sent_but_in_auth(hub)
    assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    assert "DEBUG" in proc.stderr  # debug logging was on, and still nothing leaked
    # The user's model folders are untouched.
    assert (snapshot(st_run), snapshot(ce_run)) == before


def test_dry_run_through_subprocess_sends_nothing(hub, st_run, tmp_path):
    proc = run_publisher(hub, tmp_path, [request_for(st_run, "alice/dry")], dry_run=True)
    [result] = results_of(proc)
    assert result["dry_run"] is True and set(result["files"]) == ST_FILES | {"README.md"}
    assert hub.requests == []


def test_rejected_token_in_a_script_is_one_line_and_exit_code_2(st_run, tmp_path):
    with FakeHub(token="hf_TheOnlyTokenThisHubAccepts0000000") as hub:
        proc = run_publisher(hub, tmp_path, [request_for(st_run, "alice/denied")], token=TOKEN)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: token rejected" in proc.stderr and "Traceback" not in proc.stderr
    assert TOKEN not in proc.stderr and TOKEN not in proc.stdout
