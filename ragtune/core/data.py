"""Corpus and labelled queries: loading, the key of a question, the train/dev split; shared by every script.

Formats:
  corpus   CSV/XLSX with NeoRAG columns ``STT``, ``Văn bản`` (a UTF-8 BOM is fine) or ``id``, ``text``;
           JSONL with ``id``, ``text``.
  queries  CSV/XLSX with ``Query``, ``Ground truth document`` (an int or ``"15, 37"``), optional
           ``Ground truth answer``, ``Difficulty``; or ``query``, ``relevant_ids``, ``answer``;
           or FlagEmbedding JSONL ``{"query", "pos": [texts], "neg": [texts]}``.

Passage ids are normalised to strings ("15", not 15 or 15.0) so every format compares equal.
Text files are UTF-8, or UTF-8/UTF-16 with a byte-order mark. Column names are normalised like
passage text (NFC, spaces), so headers saved on macOS (NFD) match.
Errors name rows as a spreadsheet shows them (the header is row 1, the first record row 2) and
JSONL records by their line in the file.
"""

from __future__ import annotations

import codecs
import hashlib
import io
import json
import logging
import random
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from ragtune.core.errors import UserError

logger = logging.getLogger(__name__)

SAMPLE_DATA_DIR = Path(__file__).resolve().parents[1] / "sample_data"
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
    row: int = 0  # spreadsheet row, or JSONL line, for messages
    # Negatives given by the data (FlagEmbedding ``neg``), as corpus ids.
    given_negative_ids: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- helpers


def normalize_text(text: str) -> str:
    """NFC + collapsed whitespace: Vietnamese text from Word/Excel mixes NFC and NFD forms."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFC", str(text))).strip()


def normalize_id(value: Any) -> str:
    """15, 15.0, "15" and " 15 " are the same passage id; so are NFC/NFD spellings of "tài liệu 1"."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = normalize_text(value)
    if re.fullmatch(r"-?\d+\.0+", text):
        text = text.split(".")[0]
    return text


# Ids may contain spaces ("doc 1"), so only these separate them (a line break: Alt+Enter in an Excel cell).
_ID_SEPARATORS = re.compile(r"[,;|\r\n]+")


def parse_id_list(value: Any) -> list[str]:
    """Parse a ground-truth cell: ``15``, ``15.0``, ``"15, 37"``, ``"[15, 37]"``, ``"15;37"``, ``"doc 1|doc 2"``,
    or a list."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif _is_missing(value):
        return []
    elif isinstance(value, (int, float)):
        items = [value]
    else:
        text = str(value).strip()
        if len(text) >= 2 and text[0] + text[-1] in ("[]", "()"):
            text = text[1:-1]
        items = [part.strip().strip("'\"") for part in _ID_SEPARATORS.split(text)]
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


def check_input_file(path: str | Path, flag: str) -> Path:
    """An existing regular file, or a UserError that says what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{flag}: {path} is a directory, not a file")
    if not path.exists():
        raise UserError(f"{flag}: file not found: {path}")
    return path


@dataclass
class Table:
    """The records of a CSV/XLSX/JSONL file, each with the number a user finds it under."""

    records: list[dict[str, Any]]
    numbers: list[int]
    unit: str  # "row" (spreadsheet row, the header is row 1), "line" (JSONL) or "item" (1-based, JSON array)

    @property
    def is_json(self) -> bool:
        return self.unit != "row"

    def where(self, index: int) -> str:
        return f"{self.unit} {self.numbers[index]}"


# Excel's "Unicode Text" and Windows Notepad write UTF-16 with a byte-order mark; Excel's "CSV UTF-8" a UTF-8 one.
_BYTE_ORDER_MARKS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def read_text(path: Path, flag: str) -> str:
    """Decode a text file: UTF-8, or UTF-8/UTF-16 after a byte-order mark.

    Anything else (cp1252, Latin-1, UTF-16 without a mark) is a user error that says how to fix
    the file: guessing a legacy code page would silently turn Vietnamese letters into other ones.
    """
    data = path.read_bytes()
    encoding, start = "utf-8", 0
    for mark, name in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            encoding, start = name, len(mark)
            break
    spreadsheet_text = path.suffix.lower() in {".csv", ".tsv", ".txt"}
    how = "save it as UTF-8" + (" (Excel: Save As > CSV UTF-8)" if spreadsheet_text else "")
    try:
        text = data[start:].decode(encoding)
    except UnicodeDecodeError as err:
        position = start + err.start
        if encoding != "utf-8":
            raise UserError(f"{flag}: {path} starts with a {encoding.upper()} byte-order mark but is not valid "
                            f"{encoding.upper()} (at byte {position}); {how}") from err
        line = data.count(b"\n", 0, position) + 1
        raise UserError(f"{flag}: {path} is not UTF-8 (byte 0x{data[position]:02x} at position {position}, line "
                        f"{line}); {how}") from err
    if "\x00" in text:
        raise UserError(f"{flag}: {path} contains NUL bytes: UTF-16 without a byte-order mark, or not a text "
                        f"file; {how}")
    return text


def normalize_header(name: Any) -> str:
    """Column names as passage text is normalised (NFC, spaces), without a stray byte-order mark."""
    return normalize_text(str(name).replace("\ufeff", ""))


def read_table(path: Path, flag: str) -> Table:
    """Read CSV/XLSX/JSONL records with normalised column names."""
    suffix = path.suffix.lower()
    if suffix in {".jsonl", ".json"}:
        return _read_json_records(path, flag)
    if suffix not in {".xlsx", ".xlsm", ".xls", ".csv", ".tsv", ".txt"}:
        raise UserError(f"{flag}: unsupported file type '{suffix}' for {path} (use .csv, .xlsx or .jsonl)")
    import pandas as pd

    try:
        if suffix in {".xlsx", ".xlsm", ".xls"}:
            frame = pd.read_excel(path, dtype=object)
        else:
            frame = pd.read_csv(io.StringIO(read_text(path, flag)), dtype=object, keep_default_na=False,
                                sep="\t" if suffix == ".tsv" else ",")
    except UserError:
        raise
    except Exception as err:  # pandas/openpyxl parse errors are the user's file, not our bug
        raise UserError(f"{flag}: cannot read {path}: {type(err).__name__}: {str(err).splitlines()[0]}") from err
    columns = [normalize_header(col) for col in frame.columns]
    duplicates = sorted({col for col in columns if columns.count(col) > 1})
    if duplicates:
        raise UserError(f"{flag}: {path} has several columns named {', '.join(repr(c) for c in duplicates)} "
                        f"(after removing extra spaces)")
    frame.columns = columns
    records = frame.to_dict(orient="records")
    return Table(records, [offset + 2 for offset in range(len(records))], "row")


def _read_json_records(path: Path, flag: str) -> Table:
    text = read_text(path, flag)
    if path.suffix.lower() == ".json" and text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise UserError(f"{flag}: {path} is not valid JSON: {err}") from err
        numbered = list(enumerate(values, start=1))
        unit = "item"
    else:
        numbered, unit = [], "line"
        # split("\n"), not splitlines(): JSON strings may hold a raw U+2028 or U+0085.
        for line_no, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                numbered.append((line_no, json.loads(line)))
            except json.JSONDecodeError as err:
                raise UserError(f"{flag}: {path} line {line_no} is not valid JSON: {err.msg}") from err
    records = []
    for number, value in numbered:
        if not isinstance(value, dict):
            raise UserError(f"{flag}: {path} {unit} {number}: expected a JSON object ({{\"field\": value, ...}}), "
                            f"got {_describe(value)}")
        records.append({normalize_header(key): item for key, item in value.items()})
    return Table(records, [number for number, _ in numbered], unit)


# ---------------------------------------------------------------------------- JSON field types
# CSV/XLSX cells are whatever the spreadsheet stored; JSON says what a value is, and a wrong one
# (a string where a list belongs) would otherwise be iterated character by character.


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        kind = "a boolean"
    elif isinstance(value, (int, float)):
        kind = "a number"
    elif isinstance(value, str):
        kind = "a string"
    elif isinstance(value, list):
        kind = "a list"
    elif isinstance(value, dict):
        kind = "an object"
    else:
        kind = type(value).__name__
    shown = json.dumps(value, ensure_ascii=False, default=str)
    return f"{kind} ({shown[:40] + '...' if len(shown) > 43 else shown})"


def _is_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (str, int)) or (isinstance(value, float) and value.is_integer())


def _text_problem(value: Any) -> str | None:
    return None if isinstance(value, str) else f"must be a string, got {_describe(value)}"


def _id_problem(value: Any) -> str | None:
    return None if _is_id(value) else f"must be a string or an integer, got {_describe(value)}"


def _label_problem(value: Any) -> str | None:
    ok = isinstance(value, (str, int, float)) and not isinstance(value, bool)
    return None if ok else f"must be a string or a number, got {_describe(value)}"


def _texts_problem(value: Any) -> str | None:
    if not isinstance(value, list):
        return f"must be a list of passage texts, got {_describe(value)}"
    for index, item in enumerate(value, start=1):
        if not isinstance(item, str):
            return f"item {index} must be a passage text (a string), got {_describe(item)}"
    return None


def _ids_problem(value: Any) -> str | None:
    if isinstance(value, list):
        for index, item in enumerate(value, start=1):
            if not _is_id(item):
                return f"item {index} must be a passage id (a string or an integer), got {_describe(item)}"
        return None
    if _is_id(value):
        return None
    return f"must be a list of passage ids, an id or a string like \"15, 37\", got {_describe(value)}"


def _check_json_fields(table: Table, index: int, fields: dict[str, Callable[[Any], str | None]], path: Path,
                       flag: str) -> None:
    """JSON records only: each named field is absent, null or of the right type."""
    if not table.is_json:
        return
    record = table.records[index]
    for name, problem_of in fields.items():
        value = record.get(name)
        problem = None if value is None else problem_of(value)
        if problem:
            raise UserError(f"{flag}: {path} {table.where(index)}: field '{name}' {problem}")


def pick_columns(rows: list[dict[str, Any]], options: Sequence[Sequence[str]], required: int, path: Path,
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
    path = check_input_file(path, flag)
    table = read_table(path, flag)
    if not table.records:
        raise UserError(f"{flag}: {path} holds no passages")
    id_col, text_col = pick_columns(table.records, CORPUS_COLUMNS, 2, path, flag)
    ids: list[str] = []
    texts: list[str] = []
    first_seen: dict[str, str] = {}
    blank: list[int] = []
    for index, record in enumerate(table.records):
        where = table.where(index)
        _check_json_fields(table, index, {id_col: _id_problem, text_col: _text_problem}, path, flag)
        if _is_missing(record.get(id_col)):
            raise UserError(f"{flag}: {path} {where}: missing passage id in column '{id_col}'")
        pid = normalize_id(record[id_col])
        if pid in first_seen:
            raise UserError(f"{flag}: {path} {where}: duplicate passage id {pid} (first seen at {first_seen[pid]})")
        first_seen[pid] = where
        text = record.get(text_col)
        if _is_missing(text):
            blank.append(table.numbers[index])
            continue
        ids.append(pid)
        texts.append(normalize_text(text))
    if blank:
        logger.warning("%s: skipped %d passage(s) with empty text (%ss %s)", path, len(blank), table.unit,
                       _format_rows(blank))
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
    path = check_input_file(path, flag)
    table = read_table(path, flag)
    if not table.records:
        raise UserError(f"{flag}: {path} holds no queries")
    first = table.records[0]
    if table.is_json and "pos" in first and "query" in first:
        queries = _flag_embedding_queries(table, corpus, path, flag)
    else:
        columns = pick_columns(table.records, QUERY_COLUMNS, 2, path, flag)
        queries = _table_queries(table, columns, path, flag)
    return _check_against_corpus(queries, corpus, path, flag, table.unit)


def _table_queries(table: Table, columns: tuple[str, ...], path: Path, flag: str) -> list[LabelledQuery]:
    query_col, ids_col, answer_col, difficulty_col = columns
    fields = {query_col: _text_problem, ids_col: _ids_problem, answer_col: _text_problem,
              difficulty_col: _label_problem}
    queries = []
    for index, record in enumerate(table.records):
        where = table.where(index)
        _check_json_fields(table, index, fields, path, flag)
        text = record.get(query_col)
        if _is_missing(text):
            raise UserError(f"{flag}: {path} {where}: blank query in column '{query_col}'")
        raw_ids = record.get(ids_col)
        if _is_missing(raw_ids):
            raise UserError(f"{flag}: {path} {where}: no ground-truth passage id in column '{ids_col}'")
        ids = parse_id_list(raw_ids)
        if not ids:
            raise UserError(f"{flag}: {path} {where}: cannot read passage ids from {raw_ids!r} in column '{ids_col}'")
        answer = record.get(answer_col)
        difficulty = record.get(difficulty_col)
        queries.append(LabelledQuery(
            query=normalize_text(text),
            relevant_ids=ids,
            answer="" if _is_missing(answer) else normalize_text(answer),
            difficulty="" if _is_missing(difficulty) else normalize_id(difficulty),
            row=table.numbers[index],
        ))
    return queries


_FLAG_EMBEDDING_FIELDS = {"query": _text_problem, "pos": _texts_problem, "neg": _texts_problem, "answer": _text_problem}


def _flag_embedding_queries(table: Table, corpus: Corpus, path: Path, flag: str) -> list[LabelledQuery]:
    """FlagEmbedding records carry passage texts; map them to corpus ids, adding unseen passages."""
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
    for index, record in enumerate(table.records):
        where = table.where(index)
        _check_json_fields(table, index, _FLAG_EMBEDDING_FIELDS, path, flag)
        text = record.get("query")
        if _is_missing(text):
            raise UserError(f"{flag}: {path} {where}: blank query")
        positives = [p for p in (record.get("pos") or []) if not _is_missing(p)]
        if not positives:
            raise UserError(f"{flag}: {path} {where}: field 'pos' must list at least one passage text")
        negatives = [n for n in (record.get("neg") or []) if not _is_missing(n)]
        queries.append(LabelledQuery(
            query=normalize_text(text),
            relevant_ids=list(dict.fromkeys(id_for(p) for p in positives)),
            answer=normalize_text(record.get("answer") or ""),
            row=table.numbers[index],
            given_negative_ids=list(dict.fromkeys(id_for(n) for n in negatives)),
        ))
    if added:
        corpus.__post_init__()
        logger.warning("%s: %d passage text(s) were not in the corpus and were added to it", path, added)
    return queries


def _check_against_corpus(queries: list[LabelledQuery], corpus: Corpus, path: Path, flag: str,
                          unit: str = "row") -> list[LabelledQuery]:
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
    # Ids are split on commas, not spaces ("doc 1" is one id): say so when "15 37" looks like two ids.
    spaced = sorted(pid for pid in unknown_ids if " " in pid and all(part in corpus.index_of for part in pid.split()))
    hint = (f" ('{spaced[0]}' looks like several ids: separate ids with commas)" if spaced else "")
    if unknown_rows:
        logger.warning(
            "%s: %d passage id(s) not in the corpus (%s) at %d %s(s): %ss %s; dropped those ids, and %d "
            "query(ies) left without a relevant passage%s", path, len(unknown_ids),
            ", ".join(sorted(unknown_ids, key=_id_sort_key)[:10]), len(unknown_rows), unit, unit,
            _format_rows(unknown_rows), len(queries) - len(kept), hint)
    if not kept:
        raise UserError(f"{flag}: no query in {path} has a ground-truth id that exists in the corpus {corpus.source}"
                        f"{hint}")
    return kept


def _id_sort_key(pid: str) -> tuple[int, Any]:
    return (0, int(pid)) if pid.lstrip("-").isdigit() else (1, pid)


def _format_rows(rows: Sequence[int], limit: int = 10) -> str:
    shown = ", ".join(str(r) for r in rows[:limit])
    return shown + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


# ---------------------------------------------------------------------------- queries by text


def query_key(text: str) -> str:
    """The key under which rows of the same question are one query: its text, case-folded."""
    return text.casefold()


def relevant_ids_by_query(queries: Sequence[LabelledQuery]) -> dict[str, set[str]]:
    """Every passage id labelled relevant to each question, keyed by :func:`query_key` (case-folded text).

    Keyed by text, not by row, because the same question may appear on several rows with different
    labels ("15" on one, "37" on another): a passage relevant on any of them is relevant to the
    question, so it must never be drawn as a negative for another of its rows. Case-folded because
    "Ai là chủ nhiệm?" and "ai là Chủ nhiệm?" are the same question.
    """
    relevant: dict[str, set[str]] = {}
    for query in queries:
        relevant.setdefault(query_key(query.query), set()).update(query.relevant_ids)
    return relevant


# ---------------------------------------------------------------------------- split


def split_queries(queries: list[LabelledQuery], dev_ratio: float,
                  seed: int) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """Seeded train/dev split at the query level.

    Rows with the same query text are grouped first, so no query's pairs straddle the split.
    The result depends only on the data and the seed, so every process of a distributed run
    computes the same split.
    """
    if not 0.0 <= dev_ratio < 1.0:
        raise UserError(f"--dev_ratio must be in [0, 1), got {dev_ratio}")
    keys = sorted({query_key(q.query) for q in queries})
    random.Random(seed).shuffle(keys)
    n_dev = int(round(len(keys) * dev_ratio))
    if dev_ratio > 0 and n_dev == 0 and len(keys) > 1:
        n_dev = 1
    if n_dev >= len(keys):
        raise UserError(f"--dev_ratio {dev_ratio} leaves no training queries out of {len(keys)}")
    dev_keys = set(keys[:n_dev])
    train = [q for q in queries if query_key(q.query) not in dev_keys]
    dev = [q for q in queries if query_key(q.query) in dev_keys]
    return train, dev


def query_folds(queries: Sequence[LabelledQuery], folds: int, seed: int
                ) -> Iterator[tuple[list[LabelledQuery], list[LabelledQuery]]]:
    """(train, test) per fold for cross-validation at the query level: every question is in one test fold.

    Rows repeating a question (:func:`query_key`) stay together, as in :func:`split_queries`.
    """
    keys = sorted({query_key(q.query) for q in queries})
    random.Random(seed).shuffle(keys)
    for fold in range(folds):
        held = set(keys[fold::folds])
        yield ([q for q in queries if query_key(q.query) not in held],
               [q for q in queries if query_key(q.query) in held])


def count_pairs(queries: Sequence[LabelledQuery]) -> int:
    return sum(len(q.relevant_ids) for q in queries)
