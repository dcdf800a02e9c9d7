"""The output dir and resuming: what a finished run, a complete checkpoint and a resume point are."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from ragtune.core.errors import UserError
from ragtune.core.io import write_json

logger = logging.getLogger(__name__)


FINISHED_MARKER = "metrics.json"


CHECKPOINT_PREFIX = "checkpoint-"


# What the Trainer writes into a checkpoint and loads to resume; it writes trainer_state.json last.
TRAINER_STATE = "trainer_state.json"
TRAINER_FILES = ("optimizer.pt", "scheduler.pt")
# The model's weights as transformers, sentence-transformers and peft save them (one file, or shards and an index).
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
# Why a checkpoint written with --save_only_model is not resumed. The Trainer writes optimizer.pt and scheduler.pt
# before trainer_state.json: a checkpoint with trainer_state.json and weights but neither file was saved that way
# (one whose save was cut short has no trainer_state.json).
SAVED_ONLY_MODEL = "saved with --save_only_model (weights only, no optimizer.pt / scheduler.pt): not resumable"
# Written into each checkpoint by ragtune.train.callbacks.ModelSettingsCallback.
MODEL_SETTINGS_FILE = "ragtune_model_settings.json"
# The flags that shape the trained model or its optimizer state (which parameters train and their shapes, the
# sequences trained on): resuming with other values fails deep inside torch, or silently continues another run.
# Each script records those it has.
MODEL_SHAPING_FLAGS = ("base_model", "max_seq_length", "freeze_layers", "lora_r", "lora_alpha", "lora_target",
                       "qlora")


def check_output_dir(output_dir: str | Path, overwrite: bool) -> bool:
    """Refuse a finished model's dir unless --overwrite_output_dir; read-only. True if it holds a finished run."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output_dir {output_dir} exists and is not a directory")
    finished = (output_dir / FINISHED_MARKER).exists()
    if finished and not overwrite:
        raise UserError(f"--output_dir {output_dir} already holds a finished model; pass --overwrite_output_dir to "
                        f"train again there, or choose another --output_dir")
    return finished


def clear_finished_run(output_dir: str | Path) -> None:
    """Remove a finished run's checkpoints and marker before training over it (--overwrite_output_dir).

    Called only once the new run's data, flags and model have all been validated: a run that fails
    before that leaves the previous one byte-identical. The previous final model's files stay until
    the new final model replaces them.
    """
    output_dir = Path(output_dir)
    for child in output_dir.iterdir():
        if child.name.startswith(CHECKPOINT_PREFIX) and child.is_dir():
            shutil.rmtree(child)
    (output_dir / FINISHED_MARKER).unlink(missing_ok=True)
    logger.info("--overwrite_output_dir: removed the previous run's checkpoints and %s from %s", FINISHED_MARKER,
                output_dir)


def first_line(err: BaseException, limit: int = 120) -> str:
    """An exception's message on one short line (torch's load errors run to several sentences)."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def torch_file_problem(path: Path, checkpoint: Path) -> str | None:
    """Why ``path`` does not load as the Trainer loads it (cpu, weights_only); None when it does.

    Memory-mapped: a truncated file fails at once (its zip directory is at the end) without reading a
    multi-GB optimizer state into memory.
    """
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001 - whatever fails to load makes the checkpoint unusable: say what
        return f"{path.relative_to(checkpoint)} does not load ({first_line(err)})"
    return None


def safetensors_problem(path: Path, checkpoint: Path) -> str | None:
    """Why a safetensors file is unreadable; its header and the size it promises are checked, no tensor is read."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            handle.keys()
    except Exception as err:  # noqa: BLE001 - truncated, empty or not safetensors at all
        return f"{path.relative_to(checkpoint)} is unreadable ({first_line(err)})"
    return None


def weight_files(checkpoint: Path) -> tuple[list[Path], str | None]:
    """The checkpoint's weight files (shards named by an index included), or why they cannot be listed."""
    files = [checkpoint / name for name in WEIGHT_FILES if (checkpoint / name).is_file()]
    for index in (checkpoint / name for name in WEIGHT_INDEXES):
        if not index.is_file():
            continue
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return [], f"{index.name} does not parse"
        missing = [shard for shard in shards if not (checkpoint / shard).is_file()]
        if missing:
            return [], f"{index.name} names {missing[0]}, which is missing"
        files += [checkpoint / shard for shard in shards]
    # sentence-transformers modules keep their own weights in numbered folders (2_Dense/model.safetensors)
    files += [p for p in sorted(checkpoint.glob("*/*.safetensors")) if p not in files]
    if not any(p.parent == checkpoint for p in files):
        return [], f"no model weights ({' / '.join(WEIGHT_FILES[:2])})"
    return files, None


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be resumed from, in a few words; None when it can.

    Complete means what ``Trainer.train(resume_from_checkpoint=...)`` loads does load: trainer_state.json
    (written last) parses, optimizer.pt and scheduler.pt load, and the weights are present and readable.
    A SIGKILL during a save, a full disk or a copy cut short leave a checkpoint that fails one of these.
    """
    path = Path(path)
    state = path / TRAINER_STATE
    if not state.is_file():
        return f"no {TRAINER_STATE} (interrupted while saving)"
    try:
        json.loads(state.read_text())
    except (OSError, ValueError) as err:
        return f"{TRAINER_STATE} does not parse ({first_line(err)})"
    if not any((path / name).is_file() for name in TRAINER_FILES) and not weight_files(path)[1]:
        return SAVED_ONLY_MODEL
    for name in TRAINER_FILES:
        if not (path / name).is_file():
            return f"no {name}"
    files, problem = weight_files(path)
    if problem:
        return problem
    for file in [path / name for name in TRAINER_FILES] + files:
        problem = (safetensors_problem if file.suffix == ".safetensors" else torch_file_problem)(file, path)
        if problem:
            return problem
    return None


def is_complete_checkpoint(path: Path) -> bool:
    """True when the Trainer can resume from ``path`` (see :func:`checkpoint_problem`)."""
    return checkpoint_problem(path) is None


def numbered_checkpoints(output_dir: Path) -> list[Path]:
    """The ``checkpoint-N`` folders of ``output_dir``, newest (highest N) first."""
    candidates = []
    for child in output_dir.iterdir():
        suffix = child.name[len(CHECKPOINT_PREFIX):]
        if child.is_dir() and child.name.startswith(CHECKPOINT_PREFIX) and suffix.isdigit():
            candidates.append((int(suffix), child))
    return [path for _, path in sorted(candidates, reverse=True)]


def find_resumable_checkpoint(output_dir: str | Path, quiet: bool = False) -> Path | None:
    """Newest complete ``checkpoint-N`` in ``output_dir``; each one skipped is logged with the reason (unless quiet),
    those written with --save_only_model together in one line."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    weights_only: list[str] = []
    found = None
    for path in numbered_checkpoints(output_dir):
        problem = checkpoint_problem(path)
        if problem is None:
            found = path
            break
        if problem == SAVED_ONLY_MODEL:
            weights_only.append(path.name)
        elif not quiet:
            logger.warning("Skipping checkpoint %s: %s", path, problem)
    if weights_only and not quiet:
        logger.warning("Skipping %s in %s: %s", ", ".join(weights_only), output_dir, SAVED_ONLY_MODEL)
    return found


def checkpoint_step(path: str | Path | None) -> int | None:
    """The N of ``checkpoint-N`` (None for another name)."""
    suffix = Path(path).name[len(CHECKPOINT_PREFIX):] if path else ""
    return int(suffix) if suffix.isdigit() else None


def model_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The values of the model-shaping flags this script has (:data:`MODEL_SHAPING_FLAGS`)."""
    return {name: getattr(args, name) for name in MODEL_SHAPING_FLAGS if hasattr(args, name)}


def write_model_settings(checkpoint: str | Path, settings: dict[str, Any]) -> None:
    write_json(Path(checkpoint) / MODEL_SETTINGS_FILE, settings)


def same_setting(name: str, recorded: Any, current: Any) -> bool:
    """Equal values; a local base model also counts as the same when both paths are the same folder."""
    if isinstance(recorded, (list, tuple)) and isinstance(current, (list, tuple)):
        return list(recorded) == list(current)
    if recorded == current:
        return True
    if name == "base_model" and isinstance(recorded, str) and isinstance(current, str):
        a, b = Path(recorded).expanduser(), Path(current).expanduser()
        return a.exists() and b.exists() and a.resolve() == b.resolve()
    return False


def flag_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value))
    return str(value)


def check_model_settings(checkpoint: str | Path, settings: dict[str, Any]) -> None:
    """Refuse, in one line, to resume a checkpoint trained with other model-shaping flags.

    Otherwise a changed --lora_r is a 440-line size-mismatch traceback, and a changed --max_seq_length or
    --freeze_layers silently continues another run. Checkpoints without the record (older runs) are accepted.
    """
    record = Path(checkpoint) / MODEL_SETTINGS_FILE
    try:
        recorded = json.loads(record.read_text())
    except (OSError, ValueError):
        return
    for name, value in settings.items():
        if name in recorded and not same_setting(name, recorded[name], value):
            raise UserError(f"--resume_from_checkpoint: {checkpoint} was trained with --{name} "
                            f"{flag_value(recorded[name])}, this run has --{name} {flag_value(value)}; pass the same "
                            f"--{name} to resume it, another --output_dir, or --resume_from_checkpoint none to start "
                            f"over")


def warn_if_process_count_changed(checkpoint: str | Path | None, processes: int) -> None:
    """Resuming is exact only with the process count that wrote the checkpoint (one RNG file per rank)."""
    if checkpoint is None:
        return
    written_by = len(list(Path(checkpoint).glob("rng_state_*.pth"))) or 1
    if written_by != processes:
        logger.warning("%s was written by %d process(es) and this run has %d: training continues, but with other "
                       "batches than the interrupted run would have seen (resume with --num_processes %d for an "
                       "exact continuation)", checkpoint, written_by, processes, written_by)


def resolve_resume(resume: str, output_dir: str | Path, overwrite_finished: bool) -> str | None:
    """Turn --resume_from_checkpoint into a checkpoint path for ``Trainer.train`` (None = fresh start).

    Read-only and quiet about what it decided (said once the flags are validated, :func:`log_resume_decision` and
    the run's summary: no "starting fresh" line before a flag error); checkpoints it skips are warned about.

    ``overwrite_finished``: --overwrite_output_dir over a finished run starts fresh; over an
    interrupted one (no metrics.json yet) the same command resumes it, like any other run.
    """
    if resume in (None, "", "none", "None", "false", "False"):
        return None
    if resume == "auto":
        checkpoint = None if overwrite_finished else find_resumable_checkpoint(output_dir)
        return str(checkpoint) if checkpoint is not None else None
    path = Path(resume)
    if not path.is_dir():
        raise UserError(f"--resume_from_checkpoint: no such checkpoint directory: {path}")
    problem = checkpoint_problem(path)
    if problem:
        raise UserError(f"--resume_from_checkpoint: {path} is not a complete checkpoint: {problem} (pass another "
                        f"checkpoint, auto for the newest complete one, or none to start fresh)")
    return str(path)


def log_resume_decision(checkpoint: str) -> None:
    """One line: the checkpoint training resumes from (a fresh start is said in the run's summary)."""
    logger.info("Resuming from %s", checkpoint)


def remove_finished_run_checkpoints(state: Any, output_dir: str | Path) -> None:
    """--no_keep_checkpoints, once a run has finished (metrics.json written): its ``checkpoint-N`` folders go, the
    Trainer's state (the full log history) is written beside the final model first."""
    output_dir = Path(output_dir)
    state.save_to_json(str(output_dir / TRAINER_STATE))
    folders = numbered_checkpoints(output_dir)
    size = sum(f.stat().st_size for folder in folders for f in folder.rglob("*") if f.is_file())
    for folder in folders:
        shutil.rmtree(folder)
    logger.info("--no_keep_checkpoints: removed %d checkpoint folder(s), %.2f GB", len(folders), size / 1e9)
