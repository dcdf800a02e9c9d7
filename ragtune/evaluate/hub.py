"""Publish fine-tuned models to the Hugging Face Hub: the model files and a model card, nothing else.

:func:`publish_models` creates each repo (private unless ``private=False``), writes a model card with Hub
metadata (``model-index`` results of this run, base model, license, language, pipeline tag) and uploads,
in one commit, the allow-listed model files of the model folder plus that card. Checkpoints, optimizer
states, TensorBoard logs, ``metrics.json``, plots and everything else in the output folder stay local;
the model folder itself is never modified.

The token comes from the ``token`` argument, else ``HF_TOKEN``, else the login cache (``hf auth login``).
It is never printed, logged, written into the card or sent anywhere but in the Authorization header. The card
goes through :func:`ragtune.core.redaction.shown` (no secret; personal values masked under ``--pii warn``); the
README.md sentence-transformers wrote, with its training examples and widget sentences, is never uploaded.
Connection errors, 408/429 and 5xx answers are retried with exponential backoff; a rejected token
(401/403) fails at once. Every failure ends in a :class:`HubError`: one line, exit code 2.

Importing this module imports huggingface_hub's client (HfApi, model cards): evaluate_rag.py imports it
(from :func:`ragtune.evaluate.publishing.publish`) only when it publishes.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Literal, TypeVar

from huggingface_hub import CommitOperationAdd, EvalResult, HfApi, ModelCard, ModelCardData, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from huggingface_hub.utils import HFValidationError, validate_repo_id

from ragtune.core.errors import UserError
from ragtune.core.metrics import split_metric_key
from ragtune.core.model_card import (
    CARD_METRICS,
    CardColumn,
    card_text,
    fusion_section,
    headline,
    is_hub_id,
    metric_label,
    metric_type,
    ordered_keys,
    portable_model_name,
    scrub_paths,
)
from ragtune.core.redaction import redact_config, redact_text, shown
from ragtune.generation.prompt import DEFAULT_SYSTEM_PROMPT
from ragtune.train.cards import AUDIT, FUSION, audit_section
from ragtune.train.generator.outputs import adapter_snippet, prompt_format_section

logger = logging.getLogger(__name__)
T = TypeVar("T")

KINDS = ("embedding", "reranker", "generator")
PIPELINE_TAGS = {"embedding": "sentence-similarity", "reranker": "text-ranking", "generator": "text-generation"}
TASKS = {"embedding": ("information-retrieval", "Information Retrieval"), "reranker": ("text-ranking", "Reranking"),
         "generator": ("text-generation", "Answer generation")}
TAGS = {
    "embedding": ["sentence-transformers", "sentence-similarity", "feature-extraction", "retrieval", "ragtune"],
    "reranker": ["sentence-transformers", "cross-encoder", "reranker", "text-ranking", "ragtune"],
    "generator": ["peft", "lora", "text-generation", "rag", "ragtune"],
}
LIBRARIES = {"generator": "peft"}  # the others: sentence-transformers
WHAT = {"embedding": "an embedding model for retrieval", "reranker": "a cross-encoder reranker",
        "generator": "a LoRA adapter (peft) answering from retrieved passages"}
# Metrics compared with the base model in the card body, in this order.
MAIN_METRICS = CARD_METRICS

DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_RETRY_DELAY = 2.0
MAX_RETRY_DELAY = 30.0
RETRY_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})
TOKEN_URL = "https://huggingface.co/settings/tokens"

# ------------------------------------------------------------------ which files are the model
# Model files, matched on the file name, in the model folder and in the module folders of modules.json
# (1_Pooling, 2_Normalize, 2_Dense, ...). Anything else (checkpoint-*/, runs/, eval/, optimizer.pt,
# scheduler.pt, rng_state*.pth, trainer_state.json, training_args.bin, metrics.json, *.png, data files,
# .cache/, the README.md that sentence-transformers writes) is not uploaded.
MODEL_FILE_PATTERNS = (
    # configuration
    "config.json", "config_*.json", "generation_config.json", "adapter_config.json",
    # sentence-transformers
    "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json",
    "sentence_xlnet_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
    "sentence_camembert_config.json", "sentence_albert_config.json", "sentence_xlm-roberta_config.json",
    # weights (pytorch_model*.bin only where a folder has no safetensors, see _weights_filter)
    "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin", "pytorch_model.bin.index.json",
    # tokenizer
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
    "sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "*.spm", "bpe.codes",
    "preprocessor_config.json",
)
SAFETENSORS = "*.safetensors"
TORCH_BIN = "pytorch_model*.bin"


class HubError(UserError):
    """Publishing failed: a missing or rejected token, an unreachable Hub, a bad model folder or repo id."""


@dataclass
class PublishRequest:
    """One model to publish: its folder, where it goes, and the numbers for its card."""

    model_dir: Path
    repo_id: str
    kind: Literal["embedding", "reranker", "generator"]
    base_model: str                      # the Hub id it was fine-tuned from (else its folder name: no metadata)
    metrics: dict[str, float]            # this run's metrics of the model being pushed ("ndcg@5", "mrr@3", ...)
    baseline_metrics: dict[str, float]   # the base model's, same keys
    dataset_name: str | None             # a Hub dataset id (the card's ``datasets``), or None
    results_markdown: str                # a markdown results table for the card body
    training_config: dict | None = None  # flags of the fine-tuning run (metrics.json "config")
    language: list[str] = field(default_factory=lambda: ["vi"])
    license: str = "apache-2.0"
    main_metric: str = "ndcg@5"          # the headline (evaluate_rag.py's --main_metric)
    test_queries: int | None = None      # how many queries the metrics are means over
    # Other systems on the same queries, for the headline ({"BM25": {...}, "bm25 + model (weighted 0.3)": {...}}).
    compared_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    fusion: dict | None = None           # the fusion weight the training run saved (metrics.json "fusion")
    data_audit: dict | None = None       # the training run's data audit (metrics.json "data_audit")


# ------------------------------------------------------------------ public entry point


def publish_models(requests: list[PublishRequest], token: str | None, private: bool = True, dry_run: bool = False,
                   *, endpoint: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                   retry_delay: float = DEFAULT_RETRY_DELAY) -> list[dict]:
    """Create each repo (private unless ``private=False``) and upload its model files and model card.

    Returns, per request, ``{"repo_id", "url", "files", "private", "dry_run", "card_metadata", "card"}`` (plus
    ``"commit_url"`` after a real upload). ``files`` are the uploaded paths relative to the repo root,
    ``README.md`` (the card) included; ``card`` is that README.md's text, ``card_metadata`` its YAML metadata.
    With ``dry_run`` nothing is sent and no token is needed.
    ``endpoint`` overrides ``HF_ENDPOINT``; ``max_attempts``/``retry_delay`` set the retries of transient
    failures (the delay doubles after each failed attempt).
    """
    requests = list(requests)
    _validate_requests(requests)
    plans = [_plan(request) for request in requests]  # file lists first: a bad folder fails before any upload
    base_url = (endpoint or _default_endpoint()).rstrip("/")

    if dry_run:
        results = []
        for request, files in plans:
            card, metadata = build_model_card(request)
            results.append(_result(request, base_url, files, private, True, metadata, str(card)))
            logger.info("Dry run: would publish %s (%s) to %s/%s: %s", request.model_dir,
                        "private" if private else "public", base_url, request.repo_id, ", ".join(files))
        return results

    token = _resolve_token(token)
    _check_online()
    api = HfApi(endpoint=endpoint)
    retry = _Retrier(max_attempts, retry_delay, api.endpoint, token)
    results: list[dict] = []
    for request, files in plans:
        try:
            results.append(_publish_one(api, retry, request, files, token, private))
        except HubError as err:
            done = [r["repo_id"] for r in results]
            suffix = f" (already published: {', '.join(done)})" if done else ""
            raise HubError(f"{err}{suffix}") from err.__cause__
    return results


# ------------------------------------------------------------------ validation and file selection


def _validate_requests(requests: list[PublishRequest]) -> None:
    if not requests:
        raise HubError("nothing to publish: no models were given")
    seen: set[str] = set()
    for request in requests:
        if request.kind not in KINDS:
            raise HubError(f"{request.repo_id}: kind must be one of {', '.join(KINDS)}, not {request.kind!r}")
        repo_id = request.repo_id
        try:
            validate_repo_id(repo_id)
        except HFValidationError as err:
            raise HubError(f"invalid Hub repo id {repo_id!r}: {str(err).splitlines()[0]}") from err
        if repo_id.count("/") != 1:
            raise HubError(f"invalid Hub repo id {repo_id!r}: write it as 'user-or-organization/name'")
        if repo_id in seen:
            raise HubError(f"repo id {repo_id} is given for two models: each model needs its own repo")
        seen.add(repo_id)
        model_dir = Path(request.model_dir)
        if not model_dir.is_dir():
            raise HubError(f"{repo_id}: model folder {model_dir} does not exist or is not a directory")


def _plan(request: PublishRequest) -> tuple[PublishRequest, list[str]]:
    files = select_model_files(request.model_dir)
    return request, sorted(files + ["README.md"])


def select_model_files(model_dir: str | Path) -> list[str]:
    """The model's files in ``model_dir`` (relative POSIX paths), chosen with an allow-list.

    Top-level files and the module folders named in ``modules.json`` are considered; within each folder,
    ``pytorch_model*.bin`` is only taken when the folder has no ``*.safetensors``. Raises HubError if no
    weights are found (not a model folder).
    """
    model_dir = Path(model_dir)
    root = model_dir.resolve()
    folders = [root]
    modules_file = root / "modules.json"
    if modules_file.is_file():
        try:
            modules = json.loads(modules_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise HubError(f"{modules_file} is not valid JSON: {err}") from err
        for module in modules if isinstance(modules, list) else []:
            sub = str(module.get("path") or "") if isinstance(module, dict) else ""
            folder = (root / sub).resolve()
            if sub and folder.is_dir() and folder.is_relative_to(root) and folder != root:
                folders.append(folder)

    selected: set[str] = set()
    for folder in folders:
        # The root folder: its own files only. Module folders: their files at any depth (Router modules
        # nest folders), never inside a checkpoint.
        candidates = folder.iterdir() if folder == root else folder.rglob("*")
        files = [p for p in candidates if p.is_file() and not p.name.startswith(".")
                 and not any(part.startswith(("checkpoint-", ".")) for part in p.relative_to(root).parts[:-1])]
        by_dir: dict[Path, list[Path]] = {}
        for path in files:
            by_dir.setdefault(path.parent, []).append(path)
        for paths in by_dir.values():
            has_safetensors = any(fnmatch.fnmatch(p.name, SAFETENSORS) for p in paths)
            for path in paths:
                name = path.name
                if not any(fnmatch.fnmatch(name, pattern) for pattern in MODEL_FILE_PATTERNS):
                    continue
                if has_safetensors and fnmatch.fnmatch(name, TORCH_BIN):
                    continue
                selected.add(path.relative_to(root).as_posix())
    weights = [f for f in selected if fnmatch.fnmatch(PurePosixPath(f).name, SAFETENSORS)
               or fnmatch.fnmatch(PurePosixPath(f).name, TORCH_BIN)]
    if not weights:
        raise HubError(f"{model_dir} holds no model weights (*.safetensors or pytorch_model.bin): "
                       f"pass the folder the fine-tuning script saved the final model to")
    return sorted(selected)


# ------------------------------------------------------------------ model card


def _finite(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _main_metric_keys(metrics: dict[str, float], baseline: dict[str, float], main_metric: str) -> list[str]:
    common = [k for k in metrics if k in baseline and _finite(metrics[k]) is not None
              and _finite(baseline[k]) is not None]
    main = [k for k in common if split_metric_key(k)[0].lower() in MAIN_METRICS]
    if not main:
        return common
    order = {name: i for i, name in enumerate(MAIN_METRICS)}
    ranked = sorted(main, key=lambda k: (order[split_metric_key(k)[0].lower()], split_metric_key(k)[1] or 0))
    return ordered_keys(ranked, main_metric)


def _delta_section(request: PublishRequest) -> str:
    metrics, baseline = request.metrics, request.baseline_metrics
    keys = _main_metric_keys(metrics, baseline, request.main_metric)
    if not keys:
        return ""
    rows = ["| metric | base model | fine-tuned | Δ | Δ % |", "|---|---:|---:|---:|---:|"]
    for key in keys:
        before, after = float(baseline[key]), float(metrics[key])
        pct = f"{(after - before) / before * 100:+.1f}%" if before else "–"
        rows.append(f"| {metric_label(key)} | {before:.4f} | {after:.4f} | {after - before:+.4f} | {pct} |")
    headline_key = request.main_metric if request.main_metric in keys else keys[0]
    before, after = float(baseline[headline_key]), float(metrics[headline_key])
    summary = (f"{metric_label(headline_key)}: {before:.4f} (base model `{request.base_model}`) → {after:.4f} "
               f"({after - before:+.4f}).")
    return "### Change vs the base model\n\n" + summary + "\n\n" + "\n".join(rows) + "\n"


def _usage_section(request: PublishRequest) -> str:
    repo = request.repo_id
    if request.kind == "embedding":
        code = (f'from sentence_transformers import SentenceTransformer\n\n'
                f'model = SentenceTransformer("{repo}")\n'
                f'query_embeddings = model.encode_query(["câu hỏi của người dùng"])\n'
                f'passage_embeddings = model.encode_document(["đoạn văn thứ nhất", "đoạn văn thứ hai"])\n'
                f'scores = model.similarity(query_embeddings, passage_embeddings)\n')
    elif request.kind == "generator":  # the base, this adapter, and the prompt it was trained on
        code = adapter_snippet(repo, request.base_model, _system_prompt(request))
    else:
        code = (f'from sentence_transformers import CrossEncoder\n\n'
                f'model = CrossEncoder("{repo}")\n'
                f'ranking = model.rank("câu hỏi của người dùng", ["đoạn văn thứ nhất", "đoạn văn thứ hai"])\n'
                f'scores = model.predict([("câu hỏi của người dùng", "đoạn văn thứ nhất")])\n')
    return ("## Usage\n\n```python\n" + code + "```\n\n"
            "For a private repo, log in first (`hf auth login`) or set `HF_TOKEN`.\n")


def _system_prompt(request: PublishRequest) -> str | None:
    """The system prompt the adapter was trained with (its metrics.json config), else the default one."""
    config = request.training_config or {}
    return (config.get("system_prompt") or None) if "system_prompt" in config else DEFAULT_SYSTEM_PROMPT


def _headline(request: PublishRequest) -> str:
    """The main metric of the published model on the test queries, beside its base model's and the other systems'
    (BM25, the hybrid...): the first thing the card says."""
    columns = [CardColumn("this model", request.metrics, is_model=True)]
    if request.baseline_metrics:
        columns.append(CardColumn("base model", request.baseline_metrics))
    columns += [CardColumn(name, values) for name, values in request.compared_metrics.items()]
    return headline(request.main_metric, columns, request.test_queries, "test")


def _eval_results(request: PublishRequest, task_type: str, task_name: str) -> list:
    dataset = request.dataset_name
    queries = f" ({request.test_queries})" if request.test_queries is not None else ""
    keys = ordered_keys(list(request.metrics), request.main_metric)
    return [EvalResult(task_type=task_type, task_name=task_name, dataset_type=dataset or "custom",
                       dataset_name=dataset or f"held-out test queries{queries}", dataset_split="test",
                       metric_type=metric_type(key), metric_name=metric_label(key), metric_value=value)
            for key in keys if (value := _finite(request.metrics[key])) is not None]


def build_model_card(request: PublishRequest, token: str | None = None):
    """The model card (a ``huggingface_hub.ModelCard``) and its metadata as a plain dict."""
    kind = request.kind
    name = request.repo_id.split("/")[-1]
    task_type, task_name = TASKS[kind]
    base_model_is_hub_id = is_hub_id(request.base_model) and not Path(request.base_model).exists()
    base_name = request.base_model if base_model_is_hub_id else portable_model_name(request.base_model)
    if not base_model_is_hub_id:
        logger.warning("%s: base model %r is not a Hub model id; it is left out of the card's base_model metadata",
                       request.repo_id, base_name)
    data = ModelCardData(
        language=list(request.language) if request.language else None,
        license=request.license or None,
        base_model=request.base_model if base_model_is_hub_id else None,
        datasets=[request.dataset_name] if request.dataset_name else None,
        library_name=LIBRARIES.get(kind, "sentence-transformers"),
        pipeline_tag=PIPELINE_TAGS[kind],
        tags=list(TAGS[kind]),
        model_name=name,
        eval_results=_eval_results(request, task_type, task_name) or None,
    )
    base_ref = (f"[{base_name}](https://huggingface.co/{base_name})" if base_model_is_hub_id
                else f"`{base_name}` (a local model that records no Hub id)")
    what = WHAT[kind]
    data_ref = (f"[{request.dataset_name}](https://huggingface.co/datasets/{request.dataset_name})"
                if request.dataset_name else "a custom corpus")
    fusion = fusion_section(kind, request.repo_id, request.fusion)
    sections = [
        f"# {name}\n",
        _headline(request) + "\n",
        f"{what[0].upper() + what[1:]} fine-tuned from {base_ref} with ragtune on {data_ref}.\n",
        "## Evaluation\n",
        request.results_markdown.strip() + "\n" if request.results_markdown.strip() else "",
        _delta_section(request),
        prompt_format_section(_system_prompt(request)) + "\n" if request.kind == "generator" else "",
        _usage_section(request),
        f"## {FUSION}\n\n{fusion}" if fusion else "",
        f"## {AUDIT}\n\n{audit_section(request.data_audit)}" if request.data_audit else "",
    ]
    if request.training_config:
        config = json.dumps(redact_config(request.training_config, [token] if token else []), indent=2,
                            ensure_ascii=False, default=str)
        sections.append("## Training configuration\n\n```json\n" + config + "\n```\n")
    body = "\n".join(s for s in sections if s.strip())
    card = ModelCard(shown(scrub_paths(redact_text(card_text(data, body), [token] if token else []))))
    return card, card.data.to_dict()


# ------------------------------------------------------------------ token, offline mode, retries


def _default_endpoint() -> str:
    return constants.ENDPOINT


def _resolve_token(token: str | None) -> str:
    token = (token or "").strip() or None
    if token is None:
        token = get_token()
    if not token:
        raise HubError(f"no Hugging Face token: set HF_TOKEN, run `hf auth login`, or pass a token (a write token "
                       f"from {TOKEN_URL}); use a dry run to see what would be uploaded without one")
    return token


def _check_online() -> None:
    offline = constants.is_offline_mode() if hasattr(constants, "is_offline_mode") else constants.HF_HUB_OFFLINE
    if offline:
        raise HubError("publishing needs the network but HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set: "
                       "unset it for this command, or use a dry run")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection, timeout and protocol errors of the HTTP client huggingface_hub uses (httpx2, httpx, requests)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            errors.append(getattr(__import__(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


class _Retrier:
    """Run a Hub call, retrying transient failures with exponential backoff; every failure ends in HubError."""

    def __init__(self, max_attempts: int, delay: float, endpoint: str, token: str) -> None:
        self.max_attempts = max(1, int(max_attempts))
        self.delay = max(0.0, float(delay))
        self.endpoint = endpoint
        self._token = token

    def _clean(self, text: str) -> str:
        return redact_text(" ".join(str(text).split()), [self._token] if self._token else [])

    def __call__(self, action: str, fn: Callable[[], T]) -> T:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return fn()
            except Exception as err:  # noqa: BLE001 - classified below; unknown errors are re-raised
                transient, message = self._classify(err, action)
                if not transient:
                    raise HubError(message) from err
                if attempt == self.max_attempts:
                    raise HubError(f"{message} (gave up after {self.max_attempts} attempts)") from err
                wait = min(self.delay * 2 ** (attempt - 1), MAX_RETRY_DELAY)
                logger.warning("%s; retrying in %.1fs (attempt %d of %d)", message, wait, attempt + 1,
                               self.max_attempts)
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _classify(self, err: Exception, action: str) -> tuple[bool, str]:
        """(transient?, one-line message). Re-raises errors that are not the Hub's or the network's."""
        if isinstance(err, OfflineModeIsEnabled):
            return False, (f"{action}: HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set; unset it to publish")
        if isinstance(err, HfHubHTTPError) and getattr(err, "response", None) is not None:
            status = err.response.status_code
            server = self._clean(getattr(err, "server_message", None) or "")
            detail = f"HTTP {status}" + (f": {server}" if server else "")
            if status in (401, 403):
                return False, (f"token rejected by {self.endpoint} ({detail}) while {action}: use a token with "
                               f"write access to the repo's namespace ({TOKEN_URL}), set it in HF_TOKEN or run "
                               f"`hf auth login`")
            if status in RETRY_STATUS_CODES:
                return True, f"{action} failed: the Hub answered {detail}"
            return False, f"{action} failed: the Hub answered {detail}"
        if isinstance(err, _transport_errors()):
            return True, f"{action} failed: cannot reach {self.endpoint} ({type(err).__name__}: {self._clean(err)})"
        if isinstance(err, json.JSONDecodeError):
            return True, f"{action} failed: the Hub sent an unreadable answer ({self._clean(err)})"
        if isinstance(err, ValueError) and "Invalid metadata in README.md" in str(err):
            return False, f"{action} failed: the Hub rejected the model card metadata: {self._clean(err)}"
        raise err


# ------------------------------------------------------------------ one upload


def _result(request: PublishRequest, base_url: str, files: list[str], private: bool, dry_run: bool,
            metadata: dict, card: str) -> dict:
    return {"repo_id": request.repo_id, "url": f"{base_url}/{request.repo_id}", "files": list(files),
            "private": private, "dry_run": dry_run, "card_metadata": metadata, "card": card}


def _publish_one(api, retry: _Retrier, request: PublishRequest, files: list[str], token: str,
                 private: bool) -> dict:
    repo_id = request.repo_id
    model_dir = Path(request.model_dir).resolve()
    logger.info("Publishing %s to %s/%s (%s, %d files)", request.model_dir, api.endpoint, repo_id,
                "private" if private else "public", len(files))
    retry(f"creating repo {repo_id}",
          lambda: api.create_repo(repo_id, token=token, private=private, exist_ok=True, repo_type="model"))
    info = retry(f"reading repo {repo_id}", lambda: api.model_info(repo_id, token=token))
    actual_private = bool(info.private) if info.private is not None else private
    if private and not actual_private:
        raise HubError(f"{repo_id} already exists and is public, but a private upload was asked for: publish "
                       f"publicly on purpose, make the repo private on the Hub first, or choose another repo id")
    if not private and actual_private:
        logger.warning("%s already exists and is private: it stays private (change it in the repo settings)",
                       repo_id)

    with tempfile.TemporaryDirectory(prefix="ragtune-card-") as staging:
        card, metadata = build_model_card(request, token)
        card_path = Path(staging) / "README.md"
        card.save(card_path)

        def commit():
            # Fresh operations on each attempt: the client marks them as used once committed.
            operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(model_dir / name))
                          for name in files if name != "README.md"]
            operations.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=str(card_path)))
            return api.create_commit(repo_id, operations, token=token, repo_type="model",
                                     commit_message=f"Upload {request.kind} model fine-tuned from "
                                                    f"{request.base_model} (ragtune)")

        commit_info = retry(f"uploading {len(files)} files to {repo_id}", commit)
    result = _result(request, api.endpoint.rstrip("/"), files, actual_private, False, metadata, str(card))
    result["commit_url"] = getattr(commit_info, "commit_url", None)
    logger.info("Published %s: %s", repo_id, result["url"])
    return result
