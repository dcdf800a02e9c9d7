"""The one output-path guard every writer goes through: nothing a run reads is overwritten, and a place a run
cannot write is reported before any work starts.

Each script names its input flags (data files, local model folders) and its output flags (output dir, reports,
predictions) and calls :func:`check_output_paths` while it validates its flags, before anything is read or
written. Refused, in one line naming both flags:

- an output that is an input (``--report c.csv`` with ``--corpus c.csv``: the corpus would become markdown);
- two outputs at one path (``--report out/q_train.csv`` beside the split's own ``out/q_train.csv``): the second
  write would replace the first;
- an output inside an input folder (a report written into the base model's folder);
- an input folder inside an output folder (``--base_model outputs/x/checkpoint-40 --output_dir outputs/x``:
  training there may remove or replace it);
- an output whose folder cannot be written (read-only disk or permissions): a training script would otherwise
  notice only after loading the model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from ragtune.core.errors import UserError

PathLike = str | os.PathLike


def check_output_paths(outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | None]) -> None:
    """Refuse outputs that would overwrite or sit inside inputs, and outputs that cannot be written.

    ``outputs`` / ``inputs`` map a flag (``"--output_dir"``) to its value; ``None`` values and inputs that are
    not local paths (Hub ids) are skipped. Reads nothing but the file system's metadata, writes nothing.
    """
    local_inputs = {flag: Path(value).resolve() for flag, value in inputs.items()
                    if value is not None and str(value) and Path(value).exists()}
    written: dict[Path, str] = {}
    for out_flag, value in outputs.items():
        if value is None or not str(value):
            continue
        out = Path(value).resolve()
        if out in written:
            raise UserError(f"{out_flag} {value} is the same path as {written[out]}: one would overwrite the other; "
                            f"choose another {_flag_of(out_flag)}")
        written[out] = out_flag
        for in_flag, source in local_inputs.items():
            if out == source or (out.exists() and os.path.samefile(out, source)):  # a link to the input too
                raise UserError(f"{out_flag} {value} is the same path as {in_flag}: writing there would overwrite "
                                f"your input; choose another {_flag_of(out_flag)}")
            if source.is_dir() and source in out.parents:
                raise UserError(f"{out_flag} {value} lies inside the {in_flag} folder {source}: choose an "
                                f"{_flag_of(out_flag)} outside your inputs")
            if source.is_dir() and out in source.parents:
                raise UserError(f"{in_flag} {source} lies inside {out_flag} {value}, which this run writes to (and "
                                f"may clear): copy it elsewhere or choose another {_flag_of(out_flag)}")
        check_writable(out, out_flag)


def _flag_of(output: str) -> str:
    """The flag a user changes to move an output: the output's own flag, or the one a derived output's name ends
    with ("the train side of --output_dir")."""
    return output if output.startswith("--") else output.rsplit(" ", 1)[-1]


# Flags of ragtune scripts that name what a run reads: data files, and models (local folders, GGUF files, Hub ids).
DATA_FLAGS = ("corpus", "train_data", "test_data", "queries", "chat_template", "expansions")
MODEL_FLAGS = ("base_model", "embedding_model", "embedding_models", "reranker_model", "reranker_models",
               "generator_local", "generator_adapter", "from_dir")


def check_args_paths(args: Any, outputs: Iterable[str], more_outputs: Mapping[str, PathLike | None] | None = None,
                     more_inputs: Mapping[str, PathLike | None] | None = None) -> None:
    """:func:`check_output_paths` for a script's parsed flags: ``outputs`` are its output flag names; its inputs
    are whichever of :data:`DATA_FLAGS` and :data:`MODEL_FLAGS` it has (lists of models included). A data flag
    naming a folder is left to the data loader, which says that it is not a file. ``more_outputs`` /
    ``more_inputs``: paths no flag names (the split's two files, the models an evaluation recorded), by what
    they are."""
    data = {flag: path for flag, path in flag_paths(args, DATA_FLAGS).items() if not Path(path).is_dir()}
    # The flags last: a clash is reported on the flag, which the user can change.
    check_output_paths({**(more_outputs or {}), **flag_paths(args, outputs)},
                       {**data, **flag_paths(args, MODEL_FLAGS), **(more_inputs or {})})


def flag_paths(args: Any, names: Iterable[str]) -> dict[str, Any]:
    """``{"--flag": value}`` for the flags ``args`` has; a list flag gives one entry per value."""
    found: dict[str, Any] = {}
    for name in names:
        value = getattr(args, name, None)
        for index, item in enumerate(value if isinstance(value, (list, tuple)) else [value]):
            if item is not None:
                found[f"--{name}" + (f" #{index + 1}" if isinstance(value, (list, tuple)) and len(value) > 1
                                     else "")] = item
    return found


def check_writable(path: Path, flag: str) -> None:
    """``path`` (a file or folder, existing or not) can be created or replaced by this process."""
    if path.exists() and not path.is_dir() and not os.access(path, os.W_OK):
        raise UserError(f"{flag} {path} is read-only")
    existing = path if path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {path}: cannot write in {existing} (read-only or no permission)")
