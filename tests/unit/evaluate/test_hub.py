"""Publishing to the Hugging Face Hub in-process, against a loopback fake Hub (tests/hub_server.py).

The real ``huggingface_hub`` client does the HTTP: create the repo, read its info, validate the card's
YAML, preupload, commit, with ``endpoint=`` and offline mode lifted. Publishing from a separate process
with ``HF_ENDPOINT`` set, the path a user takes, is in tests/e2e/test_hub_publisher.py.
"""

from __future__ import annotations

import socket
import time

import pytest
from hub_checks import (
    CE_FILES,
    RESULTS_MD,
    ST_FILES,
    TOKEN,
    assert_token_never_sent_but_in_auth,
    card_metadata,
    model_index_values,
    request_for,
)
from hub_server import FakeHub

from ragtune.core.errors import UserError
from ragtune.evaluate.hub import HubError, build_model_card, publish_models, select_model_files

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


# ------------------------------------------------------------------ in-process publishing


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
