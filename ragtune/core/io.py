"""Logging setup and atomic file writes, shared by every script.

A file is written to ``<name>.tmp`` and renamed over the target, so an interrupted write never leaves
a half-written ``metrics.json`` (which marks a finished run) or report behind.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

# Libraries whose INFO lines are request-level noise in a training or evaluation log.
NOISY_LOGGERS = ("httpx", "httpx2", "httpcore", "urllib3", "filelock", "huggingface_hub")


def setup_logging(is_main_process: bool = True, quiet: Sequence[str] = ()) -> None:
    """INFO on the main process, warnings only on the others (one readable log under accelerate).

    ``quiet``: more loggers kept at WARNING (evaluate_rag.py quiets sentence-transformers' per-load lines).
    """
    level = logging.INFO if is_main_process else logging.WARNING
    # No force=True: keep handlers already installed (a notebook's, pytest's log capture).
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=level)
    logging.getLogger().setLevel(level)
    for noisy in (*NOISY_LOGGERS, *quiet):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    import transformers

    transformers.utils.logging.set_verbosity_warning()


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` as UTF-8, atomically; the parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def write_json(path: str | Path, payload: Any) -> None:
    """Write ``payload`` as indented UTF-8 JSON, atomically; numpy scalars become numbers, sets lists."""
    write_text(path, json.dumps(payload, indent=2, ensure_ascii=False, default=_json_default))


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
