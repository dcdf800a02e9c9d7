"""The command a finished run suggests next, with the files and folders it really wrote.

The chain is split -> embedding model -> reranker -> generator -> evaluate_rag.py -> predict_rag.py (or the ask
page); each script ends by printing the next link, so that a user never has to guess an output folder's name or
which flag takes it.
"""

from __future__ import annotations

import argparse
import logging
import shlex
from pathlib import Path

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN

logger = logging.getLogger(__name__)

# evaluate_rag.py's --test_data when the run trained on something else than the sample data (which has a test split).
TEST_FILE_PLACEHOLDER = "YOUR_TEST_FILE"
# predict_rag.py's --queries: the questions to answer, which no run has seen.
QUERIES_PLACEHOLDER = "YOUR_QUERIES.xlsx"
# fine_tune_bge_m3.py's --corpus after a split that was given none.
CORPUS_PLACEHOLDER = "YOUR_CORPUS.csv"
PLACEHOLDERS = {
    TEST_FILE_PLACEHOLDER: "held-out labelled queries never trained on; python -m ragtune.split cuts them from a "
                           "query file",
    QUERIES_PLACEHOLDER: "the questions to answer (CSV, XLSX or JSONL with a query column; labels, if any, are "
                         "scored)",
    CORPUS_PLACEHOLDER: "the passages the queries are labelled against",
}


Flags = list[tuple[str, "str | None"]]


def shell_command(script: str, flags: Flags) -> str:
    """``python SCRIPT --flag value ...`` as a shell takes it (values quoted); a flag whose value is None is left
    out (the script's default applies)."""
    words = [word for flag, value in flags if value is not None for word in (flag, shlex.quote(value))]
    return " ".join(["python", script, *words])


def is_sample(path: str | None, sample: Path) -> bool:
    return path is None or Path(path).resolve() == sample.resolve()


def training_data_flags(args: argparse.Namespace) -> Flags:
    """The run's own --corpus and --train_data, when they are not the sample data (the next script's default)."""
    return [("--corpus", None if is_sample(args.corpus, SAMPLE_CORPUS) else args.corpus),
            ("--train_data", None if is_sample(args.train_data, SAMPLE_TRAIN) else args.train_data)]


def test_data_for(train_data: str | None) -> str | None:
    """evaluate_rag.py's --test_data for a run trained on ``train_data``: none for the sample data (its default is
    the sample test split), the ``_test`` file beside a ``python -m ragtune.split`` ``_train`` file, else a
    placeholder to replace."""
    if is_sample(train_data, SAMPLE_TRAIN):
        return None
    path = Path(train_data)
    if path.stem.endswith("_train"):
        sibling = path.with_name(path.stem[: -len("_train")] + "_test" + path.suffix)
        if sibling.is_file():
            return str(sibling)
    return TEST_FILE_PLACEHOLDER


def evaluation_data_flags(args: argparse.Namespace) -> Flags:
    return [("--corpus", None if is_sample(args.corpus, SAMPLE_CORPUS) else args.corpus),
            ("--test_data", test_data_for(args.train_data))]


def after_embedding_model(args: argparse.Namespace) -> list[str]:
    """fine_tune_bge_m3.py -> the reranker, mining its hard negatives with this model too."""
    return [shell_command("fine_tune_reranker.py", [("--embedding_model", args.output_dir),
                                                    *training_data_flags(args)])]


def after_reranker(args: argparse.Namespace) -> list[str]:
    """fine_tune_reranker.py -> the generator (distractors from the embedding model), or evaluation of both."""
    return [shell_command("fine_tune_generator.py", [("--embedding_model", args.embedding_model),
                                                     *training_data_flags(args)]),
            shell_command("evaluate_rag.py", [("--embedding_models", args.embedding_model),
                                              ("--reranker_models", args.output_dir), *evaluation_data_flags(args)])]


def after_generator(args: argparse.Namespace) -> list[str]:
    """fine_tune_generator.py -> evaluate_rag.py with the base model and this adapter as the local generator."""
    return [shell_command("evaluate_rag.py", [("--embedding_models", args.embedding_model),
                                              ("--generator_local", args.base_model),
                                              ("--generator_adapter", args.output_dir), *evaluation_data_flags(args)])]


def after_split(corpus: str | None, train_path: Path) -> list[str]:
    """python -m ragtune.split -> the embedding model, trained on the train side only."""
    return [shell_command("fine_tune_bge_m3.py", [("--corpus", corpus or CORPUS_PLACEHOLDER),
                                                  ("--train_data", str(train_path))])]


def after_evaluation(args: argparse.Namespace) -> list[str]:
    """evaluate_rag.py -> the best system on new questions (a predictions file), or the page to ask it."""
    system = [("--from", args.output_dir), ("--system", "best")]
    return [shell_command("predict_rag.py", [*system, ("--queries", QUERIES_PLACEHOLDER),
                                             ("--output", "predictions.xlsx")]),
            shell_command("-m ragtune.app", system)]


def log_next_commands(commands: list[str]) -> None:
    """The last lines of a finished run: what to run next, and what its placeholders stand for."""
    lines = list(commands)
    for placeholder, meaning in PLACEHOLDERS.items():
        if any(placeholder in command for command in commands):
            lines.append(f"({placeholder}: {meaning})")
    logger.info("Next: %s", "\n      ".join(lines))
