"""Split a query file into a train and a test file at the query level; near-copies of a query stay on its side.

    python -m ragtune.split --train_data train_data_proptit.xlsx --test_ratio 0.2 --seed 42 --output_dir data/

writes ``data/train_data_proptit_train.xlsx`` and ``data/train_data_proptit_test.xlsx``: the input's rows and
columns exactly as they were, partitioned, in its format (.csv, .tsv, .txt, .xlsx, .jsonl; a byte-order mark
is kept, as UTF-8's), each side in the input's row order. Queries that are near-copies of each other (the
audit's leakage check: token-set Jaccard >= 0.8 with case, accents and punctuation ignored, joined
transitively) form one group and land on one side, so the test side leaks nothing by construction. The split
depends only on the file and ``--seed``. The audit (personal information, leakage, near-duplicates; duplicate
passages with ``--corpus``) runs on the two sides before anything is written, and its summary is printed.

Existing output files are replaced only with ``--overwrite``; an output that would be the input file itself
(a link to it) is refused always. Bad input is one line and exit 2, with nothing written.
"""

from __future__ import annotations

import argparse
import codecs
import io
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ragtune.audit import add_audit_args, run_audit, write_audit_report
from ragtune.audit.leakage import near_duplicate_groups
from ragtune.core.cli import new_parser
from ragtune.core.data import (
    QUERY_COLUMNS,
    Corpus,
    LabelledQuery,
    check_input_file,
    load_corpus,
    normalize_id,
    normalize_text,
    parse_id_list,
    pick_columns,
    read_table,
    read_text,
)
from ragtune.core.errors import UserError, run_main
from ragtune.core.io import write_xlsx
from ragtune.core.output_lock import OutputDirLock
from ragtune.core.output_paths import check_args_paths
from ragtune.train.next_steps import after_split, log_next_commands

logger = logging.getLogger("ragtune.split")

# Formats written back as they were read (.xls/.xlsm cannot be written by openpyxl, a .json array is not kept).
SEPARATORS = {".csv": ",", ".txt": ",", ".tsv": "\t"}
SPREADSHEETS = {".xlsx"}
JSON_LINES = {".jsonl"}
WRITABLE = (*SEPARATORS, *SPREADSHEETS, *JSON_LINES)


@dataclass
class QueryFile:
    """A query file's rows as read (for writing back unchanged) and, per row, the query the audit checks."""

    path: Path
    queries: list[LabelledQuery]
    rows: Any  # pandas DataFrame (CSV/TSV/XLSX, original headers) or list of JSONL lines (as written)
    byte_order_mark: bool = False
    sheet_name: str = "Sheet1"

    def __len__(self) -> int:
        return len(self.queries)

    def write(self, parts: Sequence[tuple[Sequence[int], Path]]) -> None:
        """For each (row indices, path): those rows, in that order, in this file's format.

        Every part is written to ``<name>.tmp`` first and renamed only once all are written, so a failure leaves
        no half-written file and no side without the other.
        """
        written = []
        for indices, path in parts:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            self._write_rows(list(indices), tmp)
            written.append((tmp, path))
        for tmp, path in written:
            tmp.replace(path)

    def _write_rows(self, indices: list[int], path: Path) -> None:
        suffix = self.path.suffix.lower()
        encoding = "utf-8-sig" if self.byte_order_mark else "utf-8"
        if suffix in JSON_LINES:
            path.write_text("".join(self.rows[i] + "\n" for i in indices), encoding=encoding)
        elif suffix in SPREADSHEETS:
            write_xlsx(self.rows.iloc[indices], path, sheet_name=self.sheet_name)
        else:
            self.rows.iloc[indices].to_csv(path, index=False, sep=SEPARATORS[suffix], encoding=encoding)


def read_query_file(path: str | Path, flag: str = "--train_data") -> QueryFile:
    """Read a query file for splitting: its raw rows plus one :class:`LabelledQuery` per row (labels optional).

    Only a query column is required (``Query`` or ``query``); ground-truth ids are read when present, for the
    audit's conflicting-label check, and never checked against a corpus: a split keeps every row.
    """
    path = check_input_file(path, flag)
    suffix = path.suffix.lower()
    if suffix not in WRITABLE:
        raise UserError(f"{flag}: python -m ragtune.split reads and writes {', '.join(WRITABLE)} files, not "
                        f"'{suffix}' ({path}); save it as .xlsx, .csv or .jsonl first")
    table = read_table(path, flag)
    if not table.records:
        raise UserError(f"{flag}: {path} holds no queries")
    query_col, ids_col, answer_col, _ = pick_columns(table.records, QUERY_COLUMNS, 1, path, flag)
    queries = []
    for index, record in enumerate(table.records):
        text = record.get(query_col)
        if table.is_json and text is not None and not isinstance(text, str):
            raise UserError(f"{flag}: {path} {table.where(index)}: field '{query_col}' must be a string")
        if text is None or text != text or not str(text).strip():  # None, NaN (an empty XLSX cell), blank
            raise UserError(f"{flag}: {path} {table.where(index)}: blank query in column '{query_col}'")
        answer = record.get(answer_col)
        queries.append(LabelledQuery(
            query=normalize_text(text),
            relevant_ids=_ids(record.get(ids_col)),
            answer=normalize_text(answer) if isinstance(answer, str) else "",
            row=table.numbers[index]))
    query_file = QueryFile(path=path, queries=queries, rows=None)
    _read_rows(query_file, len(table.records), flag)
    return query_file


def _ids(value: Any) -> list[str]:
    """Ground-truth ids as the loader reads them; anything unreadable counts as unlabelled (only the audit uses it)."""
    if isinstance(value, (list, tuple)):
        return [normalize_id(v) for v in value if isinstance(v, (str, int, float)) and not isinstance(v, bool)]
    return parse_id_list(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else []


def _read_rows(query_file: QueryFile, expected: int, flag: str) -> None:
    """The same records as :func:`ragtune.core.data.read_table` saw, kept as written (headers included)."""
    import pandas as pd

    path = query_file.path
    suffix = path.suffix.lower()
    with path.open("rb") as handle:
        start = handle.read(4)
    query_file.byte_order_mark = start.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    if suffix in JSON_LINES:
        # read_table skips blank lines; the others are kept byte for byte (a CRLF file keeps its "\r").
        query_file.rows = [line for line in read_text(path, flag).split("\n") if line.strip()]
    elif suffix in SPREADSHEETS:
        with pd.ExcelFile(path) as workbook:
            query_file.sheet_name = str(workbook.sheet_names[0])
            query_file.rows = pd.read_excel(workbook, sheet_name=0, dtype=object)
    else:
        query_file.rows = pd.read_csv(io.StringIO(read_text(path, flag)), dtype=object, keep_default_na=False,
                                      sep=SEPARATORS[suffix])
    if len(query_file.rows) != expected:
        raise RuntimeError(f"{path}: {len(query_file.rows)} rows read back, {expected} expected")


def check_test_ratio(test_ratio: float) -> None:
    if not 0.0 < test_ratio < 1.0:  # NaN fails too
        raise UserError(f"--test_ratio must be in (0, 1), got {test_ratio}")


def split_indices(texts: Sequence[str], test_ratio: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, test) indices of ``texts``, each ascending, near-copies on one side (see :func:`split_groups`)."""
    return split_groups(near_duplicate_groups(texts), len(texts), test_ratio, seed)


def split_groups(groups: Sequence[Sequence[int]], total: int, test_ratio: float,
                 seed: int) -> tuple[list[int], list[int]]:
    """(train, test) indices, each ascending: the ``groups`` (of ``total`` indices) are shuffled with ``seed`` and
    placed whole.

    The test side gets ``round(total * test_ratio)`` indices where groups allow: in shuffled order, a group joins
    it when it still fits (a large group of near-copies then tends to stay on the train side). A ratio that leaves
    either side empty is a user error: a split with an empty side is not one.
    """
    check_test_ratio(test_ratio)
    target = round(total * test_ratio)
    if target == 0 or target == total:
        side = "test" if target == 0 else "train"
        raise UserError(f"--test_ratio {test_ratio} of {total} queries leaves the {side} side empty")
    shuffled = [list(group) for group in groups]
    random.Random(seed).shuffle(shuffled)
    test: list[int] = []
    for group in shuffled:
        if len(test) + len(group) <= target:
            test.extend(group)
    if not test:
        smallest = min(len(group) for group in shuffled)
        raise UserError(f"--test_ratio {test_ratio} asks for {target} test queries of {total}, but the smallest "
                        f"group of near-copy queries, which must stay on one side, has {smallest}")
    chosen = set(test)
    return [i for i in range(total) if i not in chosen], sorted(test)


def output_paths(input_path: Path, output_dir: Path) -> tuple[Path, Path]:
    """``<output_dir>/<stem>_train<ext>`` and ``<stem>_test<ext>``, the input's suffix kept as written."""
    return (output_dir / f"{input_path.stem}_train{input_path.suffix}",
            output_dir / f"{input_path.stem}_test{input_path.suffix}")


def check_outputs(paths: Sequence[Path], overwrite: bool) -> None:
    """Refuse outputs that exist (unless ``overwrite``) or cannot be files, before anything is written (an output
    that is the input, or a link to it, is the output guard's: check_args_paths)."""
    for path in paths:
        if path.parent.exists() and not path.parent.is_dir():
            raise UserError(f"--output_dir: {path.parent} is a file, not a folder")
        if path.is_dir():
            raise UserError(f"--output_dir: {path} is a folder; remove it or choose another --output_dir")
        if path.exists() and not overwrite:
            raise UserError(f"--output_dir: {path} already exists; pass --overwrite to replace it")


def build_parser():
    parser = new_parser(__doc__)
    parser.prog = "python -m ragtune.split"
    parser.add_argument("--train_data", required=True, help="The labelled queries to split (CSV/TSV/XLSX/JSONL).")
    parser.add_argument("--test_ratio", type=float, default=0.2, help="Share of the queries for the test side, in (0, 1).")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the split (same file and seed: same split).")
    parser.add_argument("--output_dir", type=Path, required=True,
                        help="Folder for <stem>_train<ext> and <stem>_test<ext> (created if needed).")
    parser.add_argument("--overwrite", action="store_true", help="Replace output files that already exist.")
    parser.add_argument("--corpus", default=None,
                        help="Passages, for the audit only (personal information and duplicate passages); the "
                             "split itself never reads them.")
    add_audit_args(parser, report_flag="--report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)
    args = build_parser().parse_args(argv)
    check_test_ratio(args.test_ratio)
    if args.pii == "redact":
        raise UserError("--pii redact: python -m ragtune.split writes the rows as they are; use --pii warn or error "
                        "here, and --pii redact in the script that trains on them")
    train_path, test_path = output_paths(Path(args.train_data), args.output_dir)
    check_args_paths(args, outputs=("output_dir", "report"),
                     more_outputs={"the train side of --output_dir": train_path,
                                   "the test side of --output_dir": test_path})
    query_file = read_query_file(args.train_data)
    check_outputs((train_path, test_path), args.overwrite)
    with OutputDirLock(args.output_dir):
        return split_and_write(args, query_file, train_path, test_path)


def split_and_write(args: argparse.Namespace, query_file: QueryFile, train_path: Path, test_path: Path) -> int:
    """The split, the audit (--pii error stops here, before anything is written), the two files and the summary."""
    corpus = load_corpus(args.corpus) if args.corpus else Corpus(ids=[], texts=[])
    groups = near_duplicate_groups([q.query for q in query_file.queries])
    train_rows, test_rows = split_groups(groups, len(query_file), args.test_ratio, args.seed)
    train = [query_file.queries[i] for i in train_rows]
    test = [query_file.queries[i] for i in test_rows]
    sources = {"train": str(train_path), "test": str(test_path)}
    if args.corpus:
        sources["corpus"] = args.corpus
    result = run_audit(corpus, train, test, policy=args.pii, sources=sources)  # --pii error: exits 2 here
    query_file.write([(train_rows, train_path), (test_rows, test_path)])
    write_audit_report(result, args.report)
    groups = [group for group in groups if len(group) > 1]
    summary = {"split": {"input": str(query_file.path), "rows": len(query_file), "test_ratio": args.test_ratio,
                         "seed": args.seed, "train": str(train_path), "train_rows": len(train_rows),
                         "test": str(test_path), "test_rows": len(test_rows),
                         "near_duplicate_groups": len(groups),
                         "rows_in_near_duplicate_groups": sum(len(g) for g in groups)},
               "audit": result.summary()}
    logger.info("wrote %d train rows to %s and %d test rows to %s (seed %d); %d group(s) of near-copy queries "
                "(%d rows) kept on one side; %d test quer(ies) leaked", len(train_rows), train_path, len(test_rows),
                test_path, args.seed, len(groups), summary["split"]["rows_in_near_duplicate_groups"],
                summary["audit"]["leakage"]["leaked_test_queries"])
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    log_next_commands(after_split(args.corpus, train_path))
    return 0


if __name__ == "__main__":
    run_main(main)
