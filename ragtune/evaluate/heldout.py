"""The held-out test queries of evaluate_rag.py: loaded strictly, since they define every number it reports."""

from __future__ import annotations

from pathlib import Path

from ragtune.core.data import (
    QUERY_COLUMNS,
    Corpus,
    LabelledQuery,
    check_input_file,
    load_queries,
    parse_id_list,
    pick_columns,
    read_table,
)
from ragtune.core.errors import UserError


def missing_test_ids(path: str | Path, corpus: Corpus, flag: str = "--test_data") -> tuple[dict[str, list[int]], str]:
    """Ground-truth ids of a query table that are not in the corpus, {id: [row or line numbers]}, and the unit.

    ``load_queries`` drops such ids with a warning (right for training data); an evaluation that
    silently dropped them would change recall's denominator, so :func:`load_test_queries` stops.
    """
    table = read_table(check_input_file(path, flag), flag)
    rows = table.records
    if not rows or (table.is_json and "pos" in rows[0] and "query" in rows[0]):
        return {}, table.unit  # empty (reported by load_queries) or FlagEmbedding texts (added to the corpus)
    _, ids_col, *_ = pick_columns(rows, QUERY_COLUMNS, 2, Path(path), flag)
    missing: dict[str, list[int]] = {}
    for index, record in enumerate(rows):
        for pid in parse_id_list(record.get(ids_col)):
            if pid not in corpus.index_of:
                missing.setdefault(pid, []).append(table.numbers[index])
    return missing, table.unit


def load_test_queries(path: str | Path, corpus: Corpus, allow_missing_ids: bool = False,
                      flag: str = "--test_data") -> list[LabelledQuery]:
    """The labelled test queries; a ground-truth id missing from the corpus is an error unless allowed."""
    missing, unit = missing_test_ids(path, corpus, flag)
    if missing and not allow_missing_ids:
        rows = sorted({r for rs in missing.values() for r in rs})
        shown = ", ".join(sorted(missing)[:10]) + (" ..." if len(missing) > 10 else "")
        where = f"{unit}s {', '.join(map(str, rows[:10]))}{' ...' if len(rows) > 10 else ''}"
        raise UserError(f"{flag}: {len(missing)} ground-truth id(s) not in the corpus {corpus.source}: {shown} "
                        f"({where}); fix the ids or the corpus, or pass --allow_missing_ids to drop them")
    return load_queries(path, corpus, flag=flag)
