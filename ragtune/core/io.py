"""Logging setup and atomic file writes, shared by every script.

A file is written to ``<name>.tmp`` and renamed over the target, so an interrupted write never leaves
a half-written ``metrics.json`` (which marks a finished run) or report behind.

The console shows ragtune's own lines; the libraries' INFO chatter, their internal progress bars and the
warnings known to be harmless here are left out unless ``verbose`` (each one named below, never a blanket
filter). No terminal colour code reaches a log line: stderr is often a log file (Kaggle, nohup, ``2> log``).
"""

from __future__ import annotations

import functools
import importlib.abc
import json
import logging
import re
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries whose INFO lines are request-level noise in a training or evaluation log, at any verbosity.
NOISY_LOGGERS = ("httpx", "httpx2", "httpcore", "urllib3", "filelock", "huggingface_hub")
# Libraries whose INFO lines ("No device provided, using cpu", "Saving model checkpoint to ...") say nothing the
# run's own lines do not: WARNING unless --verbose. transformers stays at WARNING always: its INFO lines dump every
# config it loads.
LIBRARY_LOGGERS = ("sentence_transformers", "datasets", "accelerate", "peft")
# Warnings known to be harmless here, by category and the start of their message (warnings.filterwarnings).
HARMLESS_WARNINGS = (
    # transformers 5 renamed gradient checkpointing to activation checkpointing; sentence-transformers' CrossEncoder
    # and peft still call the old names when --gradient_checkpointing is on. Nothing for a user to do.
    (FutureWarning, r"`\w+` only defines `gradient_checkpointing_enable`"),
    (FutureWarning, r"`gradient_checkpointing_enable` is deprecated"),
    (FutureWarning, r"`gradient_checkpointing_disable` is deprecated"),
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
    # torch, on a machine without a GPU, when a DataLoader asks for pinned memory (a library's own loader).
    (UserWarning, r"'pin_memory' argument is set as true but no accelerator is found"),
)
# Library log records known to be harmless here, by logger and the start of their message.
HARMLESS_RECORDS = (
    # Checkpoints saved within the filesystem's mtime resolution (a fast step): the Trainer orders them by number,
    # which is what ragtune relies on anyway.
    ("transformers.trainer_utils", "mtime may not be reliable on this filesystem"),
)
# Terminal control sequences (colours, cursor moves): transformers' load report is bold.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")
LOAD_REPORT = "LOAD REPORT"
# The transformers modules that log a load report (transformers.utils.loading_report.log_state_dict_report).
LOAD_REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.modeling_layers", "transformers.integrations.peft")


def strip_ansi(text: str) -> str:
    return ANSI_ESCAPE.sub("", text)


class PlainFormatter(logging.Formatter):
    """The log format, without terminal colour codes."""

    def format(self, record: logging.LogRecord) -> str:
        return strip_ansi(super().format(record))


class ProgressBarAwareHandler(logging.StreamHandler):
    """A stderr handler that writes through ``tqdm.write``: a line logged while a progress bar is drawn gets a line of
    its own instead of being glued to the bar's."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging's own rule: a failing handler reports, never raises
            self.handleError(record)


class LoadReportSummary(logging.Filter):
    """transformers' load report (a table of missing / unexpected weights, logged as a warning) as one line.

    The case the scripts meet, a plain encoder given a new reranker head, is explained by the reranker's own
    warning; the line still counts what the report found, and ``--verbose`` shows the table.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = strip_ansi(record.getMessage())
        if LOAD_REPORT not in text:
            return True
        counts = {status: sum(f"| {status}" in line for line in text.splitlines())
                  for status in ("MISSING", "UNEXPECTED", "MISMATCH")}
        found = ", ".join(f"{n} {status.lower()}" for status, n in counts.items() if n) or "see --verbose"
        record.msg = f"{text.splitlines()[0].strip()}: {found} weight(s) (--verbose shows which)"
        record.args = ()
        return True


class DropRecordsStartingWith(logging.Filter):
    """Leaves out a logger's records whose message starts with one of ``starts`` (:data:`HARMLESS_RECORDS`)."""

    def __init__(self, starts: Sequence[str]) -> None:
        super().__init__()
        self.starts = tuple(starts)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


def setup_logging(is_main_process: bool = True, quiet: Sequence[str] = (), verbose: bool = False) -> None:
    """INFO on the main process, warnings only on the others (one readable log under accelerate).

    ``quiet``: more loggers kept at WARNING (evaluate_rag.py quiets sentence-transformers' per-load lines).
    ``verbose``: ragtune's DEBUG lines, the libraries' INFO lines (sentence-transformers: loading, saving), their
    known-harmless warnings and transformers' full load reports are shown too.
    Library-internal progress bars (loading and writing weights, the model card's widget examples) stay off:
    they tell nothing, and drawn inside the training bar they move the cursor with control codes.
    """
    level = logging.INFO if is_main_process else logging.WARNING
    root = logging.getLogger()
    if not root.handlers:  # keep handlers already installed (a notebook's, pytest's log capture)
        handler = ProgressBarAwareHandler()
        handler.setFormatter(PlainFormatter(LOG_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
    root.setLevel(level)
    # --verbose: ragtune's own detail too (each evaluator's line, timings)
    logging.getLogger("ragtune").setLevel(logging.DEBUG if verbose and is_main_process else logging.NOTSET)
    library_level = level if verbose else logging.WARNING
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
    for noisy in (*NOISY_LOGGERS, *quiet):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # Set when the libraries load, not now: importing them takes seconds that a flag error should not wait for.
    when_imported("transformers", functools.partial(route_transformers_logging, verbose))
    for name in {name for name, _ in HARMLESS_RECORDS}:
        library_logger = logging.getLogger(name)
        for old in [f for f in library_logger.filters if isinstance(f, DropRecordsStartingWith)]:
            library_logger.removeFilter(old)
        if not verbose:
            library_logger.addFilter(DropRecordsStartingWith([start for n, start in HARMLESS_RECORDS if n == name]))
    if not verbose:
        for category, message in HARMLESS_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
    when_imported("transformers", quiet_transformers_progress_bars)
    when_imported("sentence_transformers.base.model_card", quiet_model_card_progress_bar)


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs the callbacks registered for a module right after the module is first imported.

    Written here because the standard library has no post-import hook (wrapt's would add a dependency for 20
    lines): the finder asks the other finders for the module's spec and wraps its loader's ``exec_module``.
    """

    pending: dict[str, list[Callable[[], None]]] = {}

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self.pending:
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(name, path, target)
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                load = spec.loader.exec_module

                def exec_module(module: Any) -> None:
                    load(module)
                    for callback in self.pending.pop(name, []):
                        callback()

                spec.loader.exec_module = exec_module
                return spec
        return None


_AFTER_IMPORT = _AfterImport()


def when_imported(module: str, callback: Callable[[], None]) -> None:
    """Call ``callback`` now if ``module`` is imported, else right after its first import."""
    if module in sys.modules:
        callback()
        return
    _AfterImport.pending.setdefault(module, []).append(callback)
    if _AFTER_IMPORT not in sys.meta_path:
        sys.meta_path.insert(0, _AFTER_IMPORT)


def route_transformers_logging(verbose: bool) -> None:
    """transformers' records through the root handlers (its own handler prints another format, colour codes
    included), with the load report summarised unless ``verbose``."""
    import transformers

    tlogging = transformers.utils.logging
    tlogging.set_verbosity_warning()
    tlogging.disable_default_handler()
    tlogging.enable_propagation()
    for name in LOAD_REPORT_LOGGERS:
        report_logger = logging.getLogger(name)
        for old in [f for f in report_logger.filters if isinstance(f, LoadReportSummary)]:
            report_logger.removeFilter(old)
        if not verbose:
            report_logger.addFilter(LoadReportSummary())


def quiet_transformers_progress_bars() -> None:
    """No "Loading weights" / "Writing model shards" bars (transformers); Hub download bars and the Trainer's own
    bar stay."""
    import huggingface_hub.utils as hub_utils
    import transformers

    hub_bars_were_on = not hub_utils.are_progress_bars_disabled()
    transformers.utils.logging.disable_progress_bar()  # also turns the Hub's off: turned back on below
    if hub_bars_were_on:
        hub_utils.enable_progress_bars()


def quiet_model_card_progress_bar() -> None:
    """No "Computing widget examples" bar: sentence-transformers has no switch for it, so its model-card module's
    tqdm gets disable=True."""
    model_card = sys.modules["sentence_transformers.base.model_card"]
    if not isinstance(getattr(model_card, "tqdm", None), functools.partial):
        model_card.tqdm = functools.partial(model_card.tqdm, disable=True)


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


def write_xlsx(frame: Any, path: str | Path, sheet_name: str = "Sheet1") -> None:
    """Write a pandas DataFrame as an XLSX sheet whose text cells stay text.

    pandas hands openpyxl every string as is, and openpyxl stores one that starts with "=" as a formula: a query
    "=1+1" copied by a split would come back as 2, and a generated answer "=HYPERLINK(...)" would become a link
    Excel follows. What was read from a file or generated is data, never a formula.
    """
    import pandas as pd  # lazy: pandas is a heavy import for the scripts that never write a spreadsheet

    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        frame.to_excel(writer, index=False, sheet_name=sheet_name)
        for row in writer.sheets[sheet_name].iter_rows():
            for cell in row:
                if cell.data_type == "f":
                    cell.data_type = "s"


def _json_default(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)
