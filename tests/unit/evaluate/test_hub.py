"""Publishing to the Hugging Face Hub, end to end against a loopback fake Hub (tests/hub_server.py).

The real ``huggingface_hub`` client does the HTTP: create the repo, read its info, validate the card's
YAML, preupload, commit. Publishing under test runs either in a subprocess with ``HF_ENDPOINT`` pointing
at the fake Hub (the path a user takes) or in-process with ``endpoint=`` and offline mode lifted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from hub_server import YAML_BLOCK, FakeHub
from ragtune.core.errors import UserError
from ragtune.evaluate.hub import HubError, PublishRequest, build_model_card, publish_models, select_model_files

REPO = Path(__file__).resolve().parent.parent
TOKEN = "hf_RagtuneFakeToken0123456789abcdefXYZ"
ST_FILES = {"1_Pooling/config.json", "2_Normalize/config.json", "config.json", "config_sentence_transformers.json",
            "model.safetensors", "modules.json", "sentence_bert_config.json", "tokenizer.json",
            "tokenizer_config.json"}
CE_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
METRICS = {"ndcg@5": 0.7125, "mrr@5": 0.65, "recall@5": 0.8, "hit@3": 0.75}
BASELINE = {"ndcg@5": 0.5, "mrr@5": 0.52, "recall@5": 0.7, "hit@3": 0.6}
RESULTS_MD = "| model | ndcg@5 |\n|---|---|\n| base | 0.5000 |\n| fine-tuned | 0.7125 |"


# ------------------------------------------------------------------ fixtures


def add_training_leftovers(folder: Path) -> None:
    """What a fine-tuning run leaves next to the final model, none of which may be uploaded."""
    ckpt = folder / "checkpoint-12"
    ckpt.mkdir()
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin",
                 "scaler.pt", "config.json", "tokenizer.json"):
        (ckpt / name).write_bytes(b"checkpoint " + name.encode())
    (ckpt / "trainer_state.json").write_text("{}")
    (folder / "checkpoint-6").mkdir()
    (folder / "checkpoint-6" / "optimizer.pt").write_bytes(b"x")
    (folder / "runs" / "Nov21_10-00-00").mkdir(parents=True)
    (folder / "runs" / "Nov21_10-00-00" / "events.out.tfevents.1700000000.host").write_bytes(b"tb")
    (folder / "eval").mkdir()
    (folder / "eval" / "Information-Retrieval_evaluation_dev_results.csv").write_text("epoch,steps\n")
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "model.safetensors.lock").write_text("")
    (folder / "metrics.json").write_text(json.dumps({"config": {"hub_token": TOKEN}}))
    (folder / "training_args.bin").write_bytes(b"args")
    (folder / "optimizer.pt").write_bytes(b"opt")
    (folder / "training_curves.png").write_bytes(b"\x89PNG")
    (folder / "train.csv").write_text("Query,Văn bản\n")
    (folder / "hard_negatives.jsonl").write_text("{}\n")
    (folder / "pytorch_model.bin").write_bytes(b"stale torch weights beside safetensors")
    (folder / "README.md").write_text("# the model card sentence-transformers wrote\n")
    if (folder / "1_Pooling").is_dir():
        (folder / "1_Pooling" / "notes.txt").write_text("not a model file")


@pytest.fixture()
def st_run(tiny_st, tmp_path) -> Path:
    folder = tmp_path / "bge-m3-embedding"
    shutil.copytree(tiny_st, folder)
    add_training_leftovers(folder)
    return folder


@pytest.fixture()
def ce_run(tiny_cross_encoder, tmp_path) -> Path:
    folder = tmp_path / "reranker"
    shutil.copytree(tiny_cross_encoder, folder)
    add_training_leftovers(folder)
    return folder


@pytest.fixture()
def hub():
    with FakeHub(token=TOKEN) as server:
        yield server


@pytest.fixture()
def online(monkeypatch):
    """Lift HF_HUB_OFFLINE (conftest sets it before huggingface_hub reads it) for in-process publishing."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # Its user-agent telemetry would fetch a registry from constants.ENDPOINT (huggingface.co here).
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)


@pytest.fixture()
def no_saved_token(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.delenv("HF_OIDC_RESOURCE", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))


def request_for(folder: Path, repo_id: str, kind: str = "embedding", **extra) -> PublishRequest:
    fields = dict(base_model="BAAI/bge-m3", metrics=dict(METRICS), baseline_metrics=dict(BASELINE),
                  dataset_name="legal-qa-vi", results_markdown=RESULTS_MD)
    return PublishRequest(model_dir=folder, repo_id=repo_id, kind=kind, **{**fields, **extra})


def card_metadata(readme: bytes) -> dict:
    match = YAML_BLOCK.match(readme.decode("utf-8"))
    assert match, "README.md has no YAML block"
    return yaml.safe_load(match.group(1))


def model_index_values(metadata: dict) -> dict[str, float]:
    [entry] = metadata["model-index"]
    return {m["name"]: m["value"] for result in entry["results"] for m in result["metrics"]}


def assert_token_never_sent_but_in_auth(hub: FakeHub, token: str = TOKEN) -> None:
    """The token is in the Authorization header and nowhere else: not in URLs, bodies, other headers, files."""
    assert hub.requests
    for request in hub.requests:
        assert token not in request.path and token not in json.dumps(request.query)
        assert token.encode() not in request.body
        if request.route == "commit":  # file contents travel base64-encoded: look inside them too
            for line in request.body.splitlines():
                value = json.loads(line)["value"]
                if "content" in value:
                    assert token.encode() not in base64.b64decode(value["content"]), value["path"]
        for key, value in request.headers.items():
            if key.lower() == "authorization":
                assert value == f"Bearer {token}"
            else:
                assert token not in value, key
    for repo in hub.repos.values():
        for name, content in repo.files.items():
            assert token.encode() not in content, name


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ the allow-list


def test_allow_list_takes_only_the_final_model_files(st_run, ce_run):
    assert set(select_model_files(st_run)) == ST_FILES
    assert set(select_model_files(ce_run)) == CE_FILES


def test_allow_list_takes_pytorch_bin_only_without_safetensors(ce_run):
    (ce_run / "model.safetensors").unlink()
    assert set(select_model_files(ce_run)) == CE_FILES - {"model.safetensors"} | {"pytorch_model.bin"}


def test_folder_without_weights_is_a_user_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(HubError, match="no model weights"):
        select_model_files(tmp_path)


# ------------------------------------------------------------------ end to end, as a user runs it

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


def test_uploaded_files_load_as_the_same_models(hub, st_run, ce_run, tmp_path, online):
    from sentence_transformers import CrossEncoder, SentenceTransformer

    publish_models([request_for(st_run, "alice/emb"), request_for(ce_run, "alice/rr", kind="reranker")], TOKEN,
                   endpoint=hub.url)
    texts = ["Luật giao thông đường bộ", "Thuế thu nhập cá nhân"]
    for repo_id, source in (("alice/emb", st_run), ("alice/rr", ce_run)):
        folder = tmp_path / "download" / repo_id
        for name, content in hub.committed_files(repo_id).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
        if repo_id == "alice/emb":
            assert (SentenceTransformer(str(folder)).encode(texts) == SentenceTransformer(str(source)).encode(texts)).all()
        else:
            pairs = [(texts[0], texts[1])]
            assert CrossEncoder(str(folder)).predict(pairs) == pytest.approx(CrossEncoder(str(source)).predict(pairs))


# ------------------------------------------------------------------ visibility, token, dry run


def test_public_when_asked(hub, st_run, online):
    [result] = publish_models([request_for(st_run, "alice/public-one")], TOKEN, private=False, endpoint=hub.url)
    assert result["private"] is False
    assert hub.routed("create_repo")[0].json()["visibility"] == "public"
    assert hub.repos["alice/public-one"].private is False


def test_existing_repo_is_fine_and_unchanged_files_are_not_recommitted(hub, st_run, online):
    publish_models([request_for(st_run, "alice/again")], TOKEN, endpoint=hub.url)
    [result] = publish_models([request_for(st_run, "alice/again")], TOKEN, endpoint=hub.url)
    assert [r.status for r in hub.routed("create_repo")] == [200, 409]
    assert len(hub.repos["alice/again"].commits) == 1  # the Hub already had every file: nothing to commit
    assert set(result["files"]) == ST_FILES | {"README.md"}
    assert not hub.unknown


def test_existing_public_repo_is_not_used_for_a_private_upload(hub, st_run, online):
    publish_models([request_for(st_run, "alice/was-public")], TOKEN, private=False, endpoint=hub.url)
    with pytest.raises(HubError, match="already exists and is public"):
        publish_models([request_for(st_run, "alice/was-public")], TOKEN, endpoint=hub.url)
    assert len(hub.routed("commit")) == 1


def test_token_argument_wins_over_env(hub, st_run, online, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_SomeOtherTokenThatTheHubRejects000")
    publish_models([request_for(st_run, "alice/argtoken")], TOKEN, endpoint=hub.url)
    assert_token_never_sent_but_in_auth(hub)


def test_token_from_login_cache(hub, st_run, online, no_saved_token, tmp_path, monkeypatch):
    from huggingface_hub import constants

    (tmp_path / "cached-token").write_text(TOKEN)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "cached-token"))
    publish_models([request_for(st_run, "alice/cached")], None, endpoint=hub.url)
    assert "alice/cached" in hub.repos


def test_no_token_is_a_user_error_that_says_how_to_give_one(hub, st_run, online, no_saved_token):
    with pytest.raises(HubError, match="HF_TOKEN") as info:
        publish_models([request_for(st_run, "alice/x")], None, endpoint=hub.url)
    assert "hf auth login" in str(info.value)
    assert isinstance(info.value, UserError)
    assert hub.requests == []


def test_dry_run_lists_files_and_card_without_token_or_requests(hub, st_run, ce_run, no_saved_token):
    # HF_HUB_OFFLINE is still set here (conftest): a dry run needs neither network nor token.
    results = publish_models([request_for(st_run, "alice/emb"), request_for(ce_run, "alice/rr", kind="reranker")],
                             None, dry_run=True, endpoint=hub.url)
    assert hub.requests == []
    assert [set(r["files"]) for r in results] == [ST_FILES | {"README.md"}, CE_FILES | {"README.md"}]
    assert all(r["dry_run"] and r["private"] for r in results)
    assert results[0]["card_metadata"]["pipeline_tag"] == "sentence-similarity"
    assert results[1]["card_metadata"]["pipeline_tag"] == "text-ranking"
    assert model_index_values(results[0]["card_metadata"])["MRR@5"] == 0.65
    assert results[0]["url"] == f"{hub.url}/alice/emb"
    assert 'SentenceTransformer("alice/emb")' in results[0]["card"] and RESULTS_MD in results[0]["card"]
    assert card_metadata(results[1]["card"].encode()) == results[1]["card_metadata"]


def test_dry_run_through_subprocess_sends_nothing(hub, st_run, tmp_path):
    proc = run_publisher(hub, tmp_path, [request_for(st_run, "alice/dry")], dry_run=True)
    [result] = results_of(proc)
    assert result["dry_run"] is True and set(result["files"]) == ST_FILES | {"README.md"}
    assert hub.requests == []


def test_offline_mode_is_a_clear_user_error(hub, st_run):
    # conftest sets HF_HUB_OFFLINE=1, as users do for training on air-gapped machines.
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        publish_models([request_for(st_run, "alice/offline")], TOKEN, endpoint=hub.url)
    assert hub.requests == []


# ------------------------------------------------------------------ failures and retries


def test_rejected_token_fails_at_once_without_retries(st_run, online, tmp_path):
    with FakeHub(token="hf_TheOnlyTokenThisHubAccepts0000000") as hub:
        start = time.monotonic()
        with pytest.raises(HubError, match="token rejected") as info:
            publish_models([request_for(st_run, "alice/denied")], TOKEN, endpoint=hub.url, max_attempts=5,
                           retry_delay=5)
        elapsed = time.monotonic() - start
    assert elapsed < 4  # a single retry would have slept 5 s
    assert len(hub.routed("create_repo")) == 1
    assert not hub.routed("commit")
    assert "401" in str(info.value) and TOKEN not in str(info.value)
    assert_token_never_sent_but_in_auth(hub)


def test_rejected_token_in_a_script_is_one_line_and_exit_code_2(st_run, tmp_path):
    with FakeHub(token="hf_TheOnlyTokenThisHubAccepts0000000") as hub:
        proc = run_publisher(hub, tmp_path, [request_for(st_run, "alice/denied")], token=TOKEN)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: token rejected" in proc.stderr and "Traceback" not in proc.stderr
    assert TOKEN not in proc.stderr and TOKEN not in proc.stdout


def test_403_is_a_rejected_token_too(hub, st_run, online):
    hub.fail(403)
    with pytest.raises(HubError, match="token rejected"):
        publish_models([request_for(st_run, "alice/forbidden")], TOKEN, endpoint=hub.url, retry_delay=5)
    assert len(hub.routed("create_repo")) == 1


def test_server_errors_are_retried_then_reported(hub, st_run, online, caplog):
    hub.fail(500)
    with pytest.raises(HubError, match=r"HTTP 500.*gave up after 3 attempts") as info:
        publish_models([request_for(st_run, "alice/down")], TOKEN, endpoint=hub.url, max_attempts=3,
                       retry_delay=0.01)
    assert len(hub.routed("create_repo")) == 3
    assert not hub.routed("commit")
    assert TOKEN not in str(info.value) and TOKEN not in caplog.text
    assert "retrying" in caplog.text


@pytest.mark.parametrize("status", [503, 429])
def test_transient_commit_failure_is_retried_and_succeeds(hub, st_run, online, status):
    hub.fail(status, times=1, path_contains="/commit/")
    [result] = publish_models([request_for(st_run, "alice/flaky")], TOKEN, endpoint=hub.url, retry_delay=0.01)
    assert [r.status for r in hub.routed("commit")] == [status, 200]
    assert set(hub.committed_files("alice/flaky")) == set(result["files"])


def test_unreachable_hub_is_retried_then_reported(st_run, online):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(HubError, match=r"cannot reach http://127.0.0.1:\d+ .*gave up after 2 attempts"):
        publish_models([request_for(st_run, "alice/nowhere")], TOKEN, endpoint=f"http://127.0.0.1:{port}",
                       max_attempts=2, retry_delay=0.01)


def test_a_failure_says_which_models_were_already_published(hub, st_run, ce_run, online):
    hub.fail(400, path_contains="/api/models/alice/second/commit")
    with pytest.raises(HubError, match=r"HTTP 400.*already published: alice/first"):
        publish_models([request_for(st_run, "alice/first"), request_for(ce_run, "alice/second", kind="reranker")],
                       TOKEN, endpoint=hub.url)


# ------------------------------------------------------------------ validation and the card


@pytest.mark.parametrize("repo_id, message", [("no-namespace", "user-or-organization/name"),
                                              ("a/b/c", "invalid Hub repo id"),
                                              ("alice/bad name", "invalid Hub repo id")])
def test_bad_repo_ids_fail_before_any_request(hub, st_run, online, repo_id, message):
    with pytest.raises(HubError, match=message):
        publish_models([request_for(st_run, repo_id)], TOKEN, endpoint=hub.url)
    assert hub.requests == []


def test_bad_requests_fail_before_any_request(hub, st_run, online, tmp_path):
    with pytest.raises(HubError, match="kind must be"):
        publish_models([request_for(st_run, "alice/k", kind="colbert")], TOKEN, endpoint=hub.url)
    with pytest.raises(HubError, match="does not exist"):
        publish_models([request_for(tmp_path / "missing", "alice/m")], TOKEN, endpoint=hub.url)
    with pytest.raises(HubError, match="two models"):
        publish_models([request_for(st_run, "alice/d"), request_for(st_run, "alice/d")], TOKEN, endpoint=hub.url)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HubError, match="no model weights"):  # the second model is bad: the first is not uploaded
        publish_models([request_for(st_run, "alice/ok"), request_for(empty, "alice/e")], TOKEN, endpoint=hub.url)
    assert hub.requests == []


def test_card_keeps_secrets_out_and_skips_local_base_model(tmp_path):
    config = {"lr": 1e-5, "hf_token": "x", "token": "y", "max_tokens": 512, "auth": "z",
              "paths": [f"--token={TOKEN}"], "other": "hf_AbCdEfGhIjKlMnOpQrStUv"}
    request = request_for(tmp_path, "alice/c", training_config=config, base_model=str(tmp_path / "local-base"),
                          metrics={"ndcg@5": 0.5, "mrr@5": float("nan")})
    card, metadata = build_model_card(request, token=TOKEN)
    text = str(card)
    assert TOKEN not in text and "hf_AbCdEfGhIjKlMnOpQrStUv" not in text
    assert '"max_tokens": 512' in text and '"lr": 1e-05' in text  # a number, not a secret: the name says "token"
    assert "base_model" not in metadata  # a local path is not a Hub model id
    assert model_index_values(metadata) == {"NDCG@5": 0.5}  # NaN is left out of model-index
    # Secret flags at any depth; values of secret flags anywhere else too.
    from ragtune.core.redaction import redact_config

    assert redact_config({"a": {"hub_token": "s3cret-value", "b": 2}, "c": ["x s3cret-value"], "judge_api_key": None}) \
        == {"a": {"hub_token": "<redacted>", "b": 2}, "c": ["x <redacted>"], "judge_api_key": None}
