"""The data audit's markdown report and log table. Only masked values reach either: texts go through mask_text."""

from __future__ import annotations

from itertools import islice
from typing import Iterable, Sequence

from ragtune.audit.pii import mask_text
from ragtune.audit.result import AuditResult

MAX_ROWS = 200  # per table in the markdown report; the counts above each table are complete


def pii_summary_line(pii: dict, redacted: str, not_redacted: str = "not redacted") -> str:
    """One line on personal information from a summary's ``pii`` entry (counts only): for cards and reports."""
    if not pii["checked"]:
        return "not checked (`--pii off`)"
    if not pii["total"]:
        return "none found"
    kinds = ", ".join(f"{kind} {n}" for kind, n in pii["counts"].items())
    return f"{pii['total']} value(s) ({kinds}), " + (redacted if pii["redacted"] else not_redacted)


def _cell(text: object, limit: int = 90) -> str:
    text = mask_text(str(text)).replace("|", "\\|").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pii_table_lines(result: AuditResult, limit: int | None = None) -> list[str]:
    """Plain-text table for the log: file, row, field, kind, masked value."""
    rows = [f.as_row() for f in result.pii_findings[:limit]]
    header = ("file", "row", "field", "kind", "masked")
    widths = [max([len(h)] + [len(r[h]) for r in rows]) for h in header]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(r[h].ljust(w) for h, w in zip(header, widths)) for r in rows]
    return lines


def render_markdown(result: AuditResult) -> str:
    """The audit report: sources, then one section per check, each with its counts and a table of what it found."""
    summary = result.summary()
    out = ["# Data audit", ""]
    out += [f"Sources: {', '.join(f'{k}: `{v}`' for k, v in result.sources.items()) or 'in memory'}", ""]
    out += _pii_section(result, summary["pii"])
    out += _leakage_section(result, summary["leakage"])
    out += _train_duplicates_section(result)
    out += _duplicate_passages_section(result, summary["duplicate_passages"])
    out += _conflicting_labels_section(result)
    return "\n".join(out)


def _table(headers: Sequence[str], rows: Iterable[str]) -> list[str]:
    """A markdown table of at most MAX_ROWS ``rows`` (already formatted), then a blank line."""
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers), *islice(rows, MAX_ROWS), ""]


def _pii_section(result: AuditResult, pii: dict) -> list[str]:
    out = ["## Personal information", ""]
    if pii["policy"] == "off":
        return out + ["Not checked (`--pii off`).", ""]
    out += [f"Policy `{pii['policy']}`: {pii_summary_line(pii, 'redacted in the copy used', 'NOT redacted')}.", ""]
    if result.pii_findings:
        rows = (f"| {_cell(r['file'])} | {r['row']} | {r['field']} | {r['kind']} | {r['masked']} |"
                for r in (f.as_row() for f in result.pii_findings))
        out += _table(("file", "row", "field", "kind", "masked value"), rows)
        if len(result.pii_findings) > MAX_ROWS:
            out.insert(-1, f"\n… and {len(result.pii_findings) - MAX_ROWS} more.")
    return out


def _leakage_section(result: AuditResult, leak: dict) -> list[str]:
    out = ["## Train/test leakage", ""]
    if not result.test:
        return out + ["No test set given.", ""]
    out += [f"{leak['pairs']} pair(s) at token-set Jaccard >= {leak['threshold']} (case, accents, punctuation "
            f"and word order ignored); {leak['leaked_test_queries']} of {len(result.test)} test queries leaked.", ""]
    if result.leaked_pairs:
        rows = (f"| {tq.row} | {sq.row} | {p.similarity:.2f}{' (exact)' if p.exact else ''} | "
                f"{_cell(tq.query)} | {_cell(sq.query)} |"
                for p, tq, sq in ((p, result.train[p.train_index], result.test[p.test_index])
                                  for p in result.leaked_pairs))
        out += _table(("train row", "test row", "similarity", "train query", "test query"), rows)
    return out


def _train_duplicates_section(result: AuditResult) -> list[str]:
    out = ["## Near-duplicate queries inside the training set", "",
           f"{len(result.train_near_duplicates)} pair(s) at the same threshold: a random dev split puts some "
           f"of them on both sides.", ""]
    if result.train_near_duplicates:
        rows = (f"| {a.row} | {b.row} | {score:.2f} | {_cell(a.query)} | {_cell(b.query)} |"
                for a, b, score in ((result.train[i], result.train[j], score)
                                    for i, j, score in result.train_near_duplicates))
        out += _table(("row", "row", "similarity", "query", "query"), rows)
    return out


def _duplicate_passages_section(result: AuditResult, dup: dict) -> list[str]:
    out = ["## Duplicate passages", "",
           f"{dup['groups']} group(s) holding {dup['passages']} passages; {dup['queries_with_unlabelled_twin']} "
           f"labelled queries have a relevant passage whose twin is not labelled (it counts as a negative).", ""]
    if result.duplicate_passages:
        rows = (f"| {_ids_cell(g.ids)} | {g.kind} | {g.similarity:.2f} | {_cell(result.corpus.text(g.ids[0]), 70)} |"
                for g in result.duplicate_passages)
        out += _table(("passage ids", "kind", "lowest Jaccard", "text"), rows)
    return out


def _ids_cell(ids: Sequence[str], shown: int = 10) -> str:
    return ", ".join(ids[:shown]) + (f" (+{len(ids) - shown})" if len(ids) > shown else "")


def _conflicting_labels_section(result: AuditResult) -> list[str]:
    out = ["## Conflicting labels", "",
           f"{len(result.conflicting_labels)} query text(s) labelled with different passages.", ""]
    if result.conflicting_labels:
        rows = (f"| {_cell(c.query)} | "
                + "; ".join(f"{name} {row}: {', '.join(ids)}" for name, row, ids in c.occurrences) + " |"
                for c in result.conflicting_labels)
        out += _table(("query", "labels (set row: ids)"), rows)
    return out
