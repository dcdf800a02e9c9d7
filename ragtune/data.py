"""Corpus and labelled-query loading, shared by every script.

Formats:
  corpus   CSV/XLSX with NeoRAG columns ``STT``, ``Văn bản`` (a UTF-8 BOM is fine) or ``id``, ``text``;
           JSONL with ``id``, ``text``.
  queries  CSV/XLSX with ``Query``, ``Ground truth document`` (an int or ``"15, 37"``), optional
           ``Ground truth answer``, ``Difficulty``; or ``query``, ``relevant_ids``, ``answer``;
           or FlagEmbedding JSONL ``{"query", "pos": [texts], "neg": [texts]}``.

Passage ids are normalised to strings ("15", not 15 or 15.0) so every format compares equal.
Rows are reported as a spreadsheet shows them: the header is row 1, the first record row 2.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import UserError

logger = logging.getLogger(__name__)

SAMPLE_DATA_DIR = Path(__file__).resolve().parent / "sample_data"
SAMPLE_CORPUS = SAMPLE_DATA_DIR / "corpus.csv"
SAMPLE_TRAIN = SAMPLE_DATA_DIR / "train.csv"
SAMPLE_TEST = SAMPLE_DATA_DIR / "test.csv"

CORPUS_COLUMNS = [("STT", "Văn bản"), ("id", "text")]
QUERY_COLUMNS = [
    ("Query", "Ground truth document", "Ground truth answer", "Difficulty"),
    ("query", "relevant_ids", "answer", "difficulty"),
]


@dataclass
class Corpus:
    ids: list[str]
    texts: list[str]
    source: str = ""

    def __post_init__(self) -> None:
        self.index_of = {pid: i for i, pid in enumerate(self.ids)}

    def __len__(self) -> int:
        return len(self.ids)

    def text(self, pid: str) -> str:
        return self.texts[self.index_of[pid]]

    def fingerprint(self) -> str:
        """Content hash: caches keyed on it are invalidated when any passage changes."""
        digest = hashlib.sha256()
        for pid, text in zip(self.ids, self.texts):
            digest.update(pid.encode() + b"\x00" + text.encode() + b"\x01")
        return digest.hexdigest()[:16]


@dataclass
class LabelledQuery:
    query: str
    relevant_ids: list[str]
    answer: str = ""
    difficulty: str = ""
    row: int = 0
    # Negatives given by the data (FlagEmbedding ``neg``), as corpus ids.
    given_negative_ids: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- helpers


def normalize_text(text: str) -> str:
    """NFC + collapsed whitespace: Vietnamese text from Word/Excel mixes NFC and NFD forms."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", str(text))).strip()


def normalize_id(value: Any) -> str:
    """15, 15.0, "15" and " 15 " are the same passage id."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+\.0+", text):
        text = text.split(".")[0]
    return text


def parse_id_list(value: Any) -> list[str]:
    """Parse a ground-truth cell: ``15``, ``15.0``, ``"15, 37"``, ``"[15, 37]"``, ``"15;37"`` or a list."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif _is_missing(value):
        return []
    elif isinstance(value, (int, float)):
        items = [value]
    else:
        items = [part for part in re.split(r"[,;|\s]+", str(value).strip().strip("[]()")) if part.strip("'\" ")]
        items = [part.strip("'\" ") for part in items]
    ids: list[str] = []
    for item in items:
        pid = normalize_id(item)
        if pid and pid not in ids:
            ids.append(pid)
    return ids


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and value != value:  # NaN from pandas
        return True
    return isinstance(value, str) and not value.strip()


def _check_file(path: str | Path, flag: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{flag}: file not found: {path}")
    if path.is_dir():
        raise UserError(f"{flag}: expected a file, got a directory: {path}")
    return path


def _read_table(path: Path, flag: str) -> list[dict[str, Any]]:
    """Read CSV/XLSX/JSONL into a list of row dicts (header stripped of BOM and spaces)."""
    suffix = path.suffix.lower()
    try:
        if suffix in {".jsonl", ".json"}:
            return _read_jsonl(path, flag)
        import pandas as pd

        if suffix in {".xlsx", ".xlsm", ".xls"}:
            frame = pd.read_excel(path, dtype=object)
        elif suffix in {".csv", ".tsv", ".txt"}:
            frame = pd.read_csv(path, dtype=object, encoding="utf-8-sig", sep="\t" if suffix == ".tsv" else ",",
                                keep_default_na=False)
        else:
            raise UserError(f"{flag}: unsupported file type '{suffix}' for {path} (use .csv, .xlsx or .jsonl)")
    except UserError:
        raise
    except Exception as err:  # pandas/openpyxl parse errors are the user's file, not our bug
        raise UserError(f"{flag}: cannot read {path}: {type(err).__name__}: {str(err).splitlines()[0]}") from err
    frame.columns = [str(col).replace("\ufeff", "").strip() for col in frame.columns]
    return frame.to_dict(orient="records")


def _read_jsonl(path: Path, flag: str) -> list[dict[str, Any]]:
    rows = []
    with open(path, encoding="utf-8-sig") as handle:
        text = handle.read()
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            return list(json.loads(text))
        except json.JSONDecodeError as err:
            raise UserError(f"{flag}: {path} is not valid JSON: {err}") from err
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise UserError(f"{flag}: {path} line {line_no} is not valid JSON: {err.msg}") from err
    return rows


def _pick_columns(rows: list[dict[str, Any]], options: Sequence[Sequence[str]], required: int, path: Path,
                  flag: str) -> tuple[str, ...]:
    present = set(rows[0].keys()) if rows else set()
    for option in options:
        if all(col in present for col in option[:required]):
            return tuple(option)
    wanted = " or ".join("(" + ", ".join(f"'{c}'" for c in option[:required]) + ")" for option in options)
    found = ", ".join(f"'{c}'" for c in sorted(present)) or "nothing"
    raise UserError(f"{flag}: {path} needs columns {wanted}; found {found}")


# ---------------------------------------------------------------------------- corpus


def load_corpus(path: str | Path, flag: str = "--corpus") -> Corpus:
    """Load the passage collection; duplicate ids and an empty corpus are user errors."""
    path = _check_file(path, flag)
    rows = _read_table(path, flag)
    if not rows:
        raise UserError(f"{flag}: {path} holds no passages")
    id_col, text_col = _pick_columns(rows, CORPUS_COLUMNS, 2, path, flag)
    ids: list[str] = []
    texts: list[str] = []
    first_row: dict[str, int] = {}
    blank_rows: list[int] = []
    for offset, record in enumerate(rows):
        row = offset + 2
        if _is_missing(record.get(id_col)):
            raise UserError(f"{flag}: {path} row {row}: missing passage id in column '{id_col}'")
        pid = normalize_id(record[id_col])
        if pid in first_row:
            raise UserError(f"{flag}: {path} row {row}: duplicate passage id {pid} (first seen at row {first_row[pid]})")
        first_row[pid] = row
        text = record.get(text_col)
        if _is_missing(text):
            blank_rows.append(row)
            continue
        ids.append(pid)
        texts.append(normalize_text(text))
    if blank_rows:
        logger.warning("%s: skipped %d passage(s) with empty text (rows %s)", path, len(blank_rows),
                       _format_rows(blank_rows))
    if not ids:
        raise UserError(f"{flag}: {path} holds no passages with text")
    return Corpus(ids=ids, texts=texts, source=str(path))


# ---------------------------------------------------------------------------- queries


def load_queries(path: str | Path, corpus: Corpus, flag: str = "--train_data") -> list[LabelledQuery]:
    """Load labelled queries and check their ids against the corpus.

    Ids missing from the corpus are dropped with a warning that names the rows; a query left
    without any relevant passage is dropped too; nothing left at all is an error.
    FlagEmbedding ``pos``/``neg`` texts not found in the corpus are added to it.
    """
    path = _check_file(path, flag)
    rows = _read_table(path, flag)
    if not rows:
        raise UserError(f"{flag}: {path} holds no queries")
    if "pos" in rows[0] and "query" in rows[0]:
        queries = _flag_embedding_queries(rows, corpus, path, flag)
    else:
        columns = _pick_columns(rows, QUERY_COLUMNS, 2, path, flag)
        queries = _table_queries(rows, columns, path, flag)
    return _check_against_corpus(queries, corpus, path, flag)


def _table_queries(rows: list[dict[str, Any]], columns: tuple[str, ...], path: Path, flag: str) -> list[LabelledQuery]:
    query_col, ids_col, answer_col, difficulty_col = columns
    queries = []
    for offset, record in enumerate(rows):
        row = offset + 2
        text = record.get(query_col)
        if _is_missing(text):
            raise UserError(f"{flag}: {path} row {row}: blank query in column '{query_col}'")
        raw_ids = record.get(ids_col)
        if _is_missing(raw_ids):
            raise UserError(f"{flag}: {path} row {row}: no ground-truth passage id in column '{ids_col}'")
        ids = parse_id_list(raw_ids)
        if not ids:
            raise UserError(f"{flag}: {path} row {row}: cannot read passage ids from {raw_ids!r} in column '{ids_col}'")
        answer = record.get(answer_col)
        difficulty = record.get(difficulty_col)
        queries.append(LabelledQuery(
            query=normalize_text(text),
            relevant_ids=ids,
            answer="" if _is_missing(answer) else normalize_text(answer),
            difficulty="" if _is_missing(difficulty) else normalize_id(difficulty),
            row=row,
        ))
    return queries


def _flag_embedding_queries(rows: list[dict[str, Any]], corpus: Corpus, path: Path, flag: str) -> list[LabelledQuery]:
    """FlagEmbedding rows carry passage texts; map them to corpus ids, adding unseen passages."""
    by_text = {text: pid for pid, text in zip(corpus.ids, corpus.texts)}
    added = 0

    def id_for(text: str) -> str:
        nonlocal added
        text = normalize_text(text)
        if text not in by_text:
            pid = f"jsonl-{len(corpus.ids) + 1}"
            corpus.ids.append(pid)
            corpus.texts.append(text)
            corpus.index_of[pid] = len(corpus.ids) - 1
            by_text[text] = pid
            added += 1
        return by_text[text]

    queries = []
    for line, record in enumerate(rows, start=1):
        text = record.get("query")
        if _is_missing(text):
            raise UserError(f"{flag}: {path} line {line}: blank query")
        positives = [p for p in (record.get("pos") or []) if not _is_missing(p)]
        if not positives:
            raise UserError(f"{flag}: {path} line {line}: 'pos' must list at least one passage text")
        negatives = [n for n in (record.get("neg") or []) if not _is_missing(n)]
        queries.append(LabelledQuery(
            query=normalize_text(text),
            relevant_ids=list(dict.fromkeys(id_for(p) for p in positives)),
            answer=normalize_text(record.get("answer") or ""),
            row=line,
            given_negative_ids=list(dict.fromkeys(id_for(n) for n in negatives)),
        ))
    if added:
        corpus.__post_init__()
        logger.warning("%s: %d passage text(s) were not in the corpus and were added to it", path, added)
    return queries


def _check_against_corpus(queries: list[LabelledQuery], corpus: Corpus, path: Path, flag: str) -> list[LabelledQuery]:
    unknown_rows: list[int] = []
    unknown_ids: set[str] = set()
    kept = []
    for query in queries:
        missing = [pid for pid in query.relevant_ids if pid not in corpus.index_of]
        if missing:
            unknown_rows.append(query.row)
            unknown_ids.update(missing)
            query.relevant_ids = [pid for pid in query.relevant_ids if pid in corpus.index_of]
        query.given_negative_ids = [pid for pid in query.given_negative_ids
                                    if pid in corpus.index_of and pid not in query.relevant_ids]
        if query.relevant_ids:
            kept.append(query)
    if unknown_rows:
        logger.warning(
            "%s: %d passage id(s) not in the corpus (%s) at %d row(s): rows %s; dropped those ids, and %d "
            "query(ies) left without a relevant passage", path, len(unknown_ids), ", ".join(sorted(unknown_ids, key=_id_sort_key)[:10]),
            len(unknown_rows), _format_rows(unknown_rows), len(queries) - len(kept))
    if not kept:
        raise UserError(f"{flag}: no query in {path} has a ground-truth id that exists in the corpus {corpus.source}")
    return kept


def _id_sort_key(pid: str) -> tuple[int, Any]:
    return (0, int(pid)) if pid.lstrip("-").isdigit() else (1, pid)


def _format_rows(rows: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


# ---------------------------------------------------------------------------- split


def split_queries(queries: list[LabelledQuery], dev_ratio: float, seed: int) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """Seeded train/dev split at the query level.

    Rows with the same query text are grouped first, so no query's pairs straddle the split.
    The result depends only on the data and the seed, so every process of a distributed run
    computes the same split.
    """
    if not 0.0 <= dev_ratio < 1.0:
        raise UserError(f"--dev_ratio must be in [0, 1), got {dev_ratio}")
    groups: dict[str, list[LabelledQuery]] = {}
    for query in queries:
        groups.setdefault(query.query.casefold(), []).append(query)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    n_dev = int(round(len(keys) * dev_ratio))
    if dev_ratio > 0 and n_dev == 0 and len(keys) > 1:
        n_dev = 1
    if n_dev >= len(keys):
        raise UserError(f"--dev_ratio {dev_ratio} leaves no training queries out of {len(keys)}")
    dev_keys = set(keys[:n_dev])
    train = [q for q in queries if q.query.casefold() not in dev_keys]
    dev = [q for q in queries if q.query.casefold() in dev_keys]
    return train, dev


def count_pairs(queries: Sequence[LabelledQuery]) -> int:
    return sum(len(q.relevant_ids) for q in queries)
