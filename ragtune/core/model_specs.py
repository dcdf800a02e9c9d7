"""Model folders: found (local folder or Hub cache), hashed and labelled, and what a training run saved in them.

Mostly for the models named on evaluate_rag.py's command line; ``saved_metrics`` and ``saved_prompts``
read what ragtune and sentence-transformers save next to a model, ``is_gguf`` tells a GGUF file.

The hash (:func:`folder_fingerprint`) keys the on-disk caches and is written into results.json, so a
number can always be traced to the exact weights that produced it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ragtune.core.errors import UserError

# Files of a model folder that say nothing about its weights or tokenizer (training by-products).
_IGNORED_MODEL_FILES = {"metrics.json", "training_curves.png", "README.md", "training_args.bin", "trainer_state.json",
                        "optimizer.pt", "scheduler.pt", "rng_state.pth", ".gitattributes"}


@dataclass
class ModelSpec:
    """A model named on the command line, resolved to a folder where possible, with a content hash."""

    name: str
    flag: str
    label: str = ""
    path: Path | None = None
    revision: str | None = None
    fingerprint: str = ""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path) if self.path else None, "revision": self.revision,
                "hash": self.fingerprint}


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) <= 2 and not name.startswith((".", "/", "~")) and all(parts) and "\\" not in name


def _hub_snapshot(name: str) -> tuple[Path | None, str | None]:
    """The cached snapshot folder and commit of a Hub model, without any request."""
    if not _looks_like_hub_id(name):
        return None, None
    from huggingface_hub import try_to_load_from_cache

    for filename in ("modules.json", "config.json"):
        try:
            found = try_to_load_from_cache(name, filename)
        except Exception:  # noqa: BLE001 - an invalid repo id is simply "not cached"
            return None, None
        if isinstance(found, str):
            folder = Path(found).parent
            return folder, folder.name
    return None, None


def is_gguf(name: str | Path) -> bool:
    """A GGUF model file (``model.gguf``, any case): transformers loads it from its folder, dequantised."""
    return Path(name).suffix.lower() == ".gguf"


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_model(name: str, flag: str) -> ModelSpec:
    """Find the model's folder (local path or Hub cache); unknown paths are a user error, checked before any work."""
    path = Path(name).expanduser()
    spec = ModelSpec(name=name, flag=flag)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{flag}: {path} is a file; expected a model folder")
        if not (path / "config.json").exists() and not (path / "modules.json").exists():
            raise UserError(f"{flag}: {path} is not a model folder (no config.json or modules.json)")
        spec.path = path.resolve()
    else:
        spec.path, spec.revision = _hub_snapshot(name)
        if spec.path is None:
            if not _looks_like_hub_id(name):
                raise UserError(f"{flag}: no model folder {name}")
            if hub_offline():
                raise UserError(
                    f"{flag}: '{name}' is neither a local model folder nor a Hub model in the local cache, and "
                    f"HF_HUB_OFFLINE is set. Download it where there is internet (`hf download {name} --local-dir "
                    f"DIR`) and pass DIR, or pass any local model folder.")
    if spec.path is not None:
        spec.fingerprint = folder_fingerprint(spec.path)
    return spec


def refresh_after_download(spec: ModelSpec) -> None:
    """A Hub model fetched at load time: now it has a snapshot folder to hash."""
    if spec.path is None:
        spec.path, spec.revision = _hub_snapshot(spec.name)
        if spec.path is not None:
            spec.fingerprint = folder_fingerprint(spec.path)
        else:
            spec.fingerprint = hashlib.sha256(spec.name.encode()).hexdigest()[:16]


def file_digest(path: Path, digest: hashlib._Hash) -> None:
    size = path.stat().st_size
    digest.update(str(size).encode())
    with open(path, "rb") as handle:
        if size <= 2 << 20:
            digest.update(handle.read())
        else:  # weights: size plus head and tail identify them without reading gigabytes
            digest.update(handle.read(1 << 20))
            handle.seek(size - (1 << 20))
            digest.update(handle.read(1 << 20))


def folder_fingerprint(folder: Path) -> str:
    """Hash of the files that define a model (weights, configs, tokenizer, sentence-transformers modules).

    Checkpoint folders, logs and training by-products are left out, so evaluating a model while its
    training folder gains checkpoints or a README does not invalidate the cache.
    """
    digest = hashlib.sha256()
    files: list[Path] = []
    for child in sorted(Path(folder).iterdir()):
        if child.is_file() and child.name not in _IGNORED_MODEL_FILES and not child.name.endswith((".png", ".tmp")):
            files.append(child)
        elif child.is_dir() and child.name[:1].isdigit() and "_" in child.name:  # 1_Pooling, 2_Normalize
            files += sorted(p for p in child.rglob("*") if p.is_file())
    for path in files:
        digest.update(str(path.relative_to(folder)).encode() + b"\x00")
        file_digest(path, digest)
    return digest.hexdigest()[:16]


def saved_metrics(folder: str | Path) -> dict[str, Any]:
    """The ``metrics.json`` a ragtune training run saved in a model folder ({} when missing or unreadable).

    It records the run's flags (``config``), the fusion weights it chose on dev (``fusion``) and its
    data audit (``data_audit``).
    """
    try:
        found = json.loads((Path(folder).expanduser() / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def saved_prompts(folder: Path | None) -> tuple[str, str]:
    """The query and passage prompts a sentence-transformers folder saved, as encode_query/encode_document pick them."""
    if folder is None:
        return "", ""
    config_path = Path(folder) / "config_sentence_transformers.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "", ""
    prompts = config.get("prompts") or {}
    default = prompts.get(config.get("default_prompt_name") or "", "")
    query = prompts["query"] if "query" in prompts else default
    passage = next((prompts[n] for n in ("document", "passage", "corpus") if n in prompts), default)
    return query or "", passage or ""


_GENERIC_FOLDER_NAMES = {"model", "models", "final", "best", "best_model", "output", "outputs", "snapshot"}


def short_label(name: str) -> str:
    """'BAAI/bge-m3' -> 'bge-m3'; 'outputs/bge-m3-finetuned/' -> 'bge-m3-finetuned'.

    Generic folder names keep their parent: '.../run1/final' -> 'run1/final'.
    """
    path = Path(name.rstrip("/\\"))
    label = path.name or name
    if (label.lower() in _GENERIC_FOLDER_NAMES or label.startswith("checkpoint-")) and path.parent.name:
        label = f"{path.parent.name}/{label}"
    return label


def assign_labels(specs: Sequence[ModelSpec]) -> None:
    """Unique, readable system names: the folder name, with its parent when two collide."""
    labels = [short_label(s.name) for s in specs]
    for i, spec in enumerate(specs):
        label = labels[i]
        if labels.count(label) > 1:
            parent = Path(spec.name.rstrip("/\\")).parent.name
            label = f"{parent}/{label}" if parent else label
        spec.label = label
    seen: dict[str, int] = {}
    for spec in specs:
        if spec.label in seen:
            seen[spec.label] += 1
            spec.label = f"{spec.label}#{seen[spec.label]}"
        else:
            seen[spec.label] = 1
