"""What the Hub publishing tests share: a token the fake Hub accepts, the files a model folder must upload, a
publish request, a run folder's training leftovers, and checks on what reached the fake Hub (tests/hub_server.py).

The fixtures that use them (``hub``, ``st_run``, ``ce_run``, ``online``, ``no_saved_token``) are in conftest.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import yaml
from hub_server import YAML_BLOCK, FakeHub

from ragtune.evaluate.hub import PublishRequest

TOKEN = "hf_RagtuneFakeToken0123456789abcdefXYZ"
ST_FILES = {"1_Pooling/config.json", "2_Normalize/config.json", "config.json", "config_sentence_transformers.json",
            "model.safetensors", "modules.json", "sentence_bert_config.json", "tokenizer.json",
            "tokenizer_config.json"}
CE_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
METRICS = {"ndcg@5": 0.7125, "mrr@5": 0.65, "recall@5": 0.8, "hit@3": 0.75}
BASELINE = {"ndcg@5": 0.5, "mrr@5": 0.52, "recall@5": 0.7, "hit@3": 0.6}
RESULTS_MD = "| model | ndcg@5 |\n|---|---|\n| base | 0.5000 |\n| fine-tuned | 0.7125 |"


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
