"""Markdown report and log table. Only masked values reach either: query texts go through mask_text."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ragtune.audit.pii import mask_text

if TYPE_CHECKING:
    from ragtune.audit import AuditResult

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


def pii_table_lines(result: "AuditResult", limit: int | None = None) -> list[str]:
    """Plain-text table for the log: file, row, field, kind, masked value."""
    rows = [f.as_row() for f in result.pii_findings[:limit]]
    header = ("file", "row", "field", "kind", "masked")
    widths = [max([len(h)] + [len(r[h]) for r in rows]) for h in header]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(r[h].ljust(w) for h, w in zip(header, widths)) for r in rows]
    return lines


def render_markdown(result: "AuditResult") -> str:
    s = result.summary()
    out = ["# Data audit", ""]
    out += [f"Sources: {', '.join(f'{k}: `{v}`' for k, v in result.sources.items()) or 'in memory'}", ""]

    out += ["## Personal information", ""]
    pii = s["pii"]
    if pii["policy"] == "off":
        out += ["Not checked (`--pii off`).", ""]
    else:
        out += [f"Policy `{pii['policy']}`: {pii_summary_line(pii, 'redacted in the copy used', 'NOT redacted')}.",
                ""]
        if result.pii_findings:
            out += ["| file | row | field | kind | masked value |", "|---|---|---|---|---|"]
            for f in result.pii_findings[:MAX_ROWS]:
                r = f.as_row()
                out.append(f"| {_cell(r['file'])} | {r['row']} | {r['field']} | {r['kind']} | {r['masked']} |")
            if len(result.pii_findings) > MAX_ROWS:
                out.append(f"\n… and {len(result.pii_findings) - MAX_ROWS} more.")
            out.append("")

    out += ["## Train/test leakage", ""]
    leak = s["leakage"]
    if not result.test:
        out += ["No test set given.", ""]
    else:
        out += [f"{leak['pairs']} pair(s) at token-set Jaccard >= {leak['threshold']} (case, accents, punctuation "
                f"and word order ignored); {leak['leaked_test_queries']} of {len(result.test)} test queries leaked.", ""]
        if result.leaked_pairs:
            out += ["| train row | test row | similarity | train query | test query |", "|---|---|---|---|---|"]
            for p in result.leaked_pairs[:MAX_ROWS]:
                tq, sq = result.train[p.train_index], result.test[p.test_index]
                out.append(f"| {tq.row} | {sq.row} | {p.similarity:.2f}{' (exact)' if p.exact else ''} | "
                           f"{_cell(tq.query)} | {_cell(sq.query)} |")
            out.append("")

    out += ["## Near-duplicate queries inside the training set", ""]
    out += [f"{len(result.train_near_duplicates)} pair(s) at the same threshold: a random dev split puts some "
            f"of them on both sides.", ""]
    if result.train_near_duplicates:
        out += ["| row | row | similarity | query | query |", "|---|---|---|---|---|"]
        for i, j, score in result.train_near_duplicates[:MAX_ROWS]:
            a, b = result.train[i], result.train[j]
            out.append(f"| {a.row} | {b.row} | {score:.2f} | {_cell(a.query)} | {_cell(b.query)} |")
        out.append("")

    out += ["## Duplicate passages", ""]
    dup = s["duplicate_passages"]
    out += [f"{dup['groups']} group(s) holding {dup['passages']} passages; {dup['queries_with_unlabelled_twin']} "
            f"labelled queries have a relevant passage whose twin is not labelled (it counts as a negative).", ""]
    if result.duplicate_passages:
        out += ["| passage ids | kind | lowest Jaccard | text |", "|---|---|---|---|"]
        for g in result.duplicate_passages[:MAX_ROWS]:
            ids = ", ".join(g.ids[:10]) + (f" (+{len(g.ids) - 10})" if len(g.ids) > 10 else "")
            out.append(f"| {ids} | {g.kind} | {g.similarity:.2f} | "
                       f"{_cell(result.corpus.text(g.ids[0]), 70)} |")
        out.append("")

    out += ["## Conflicting labels", ""]
    out += [f"{len(result.conflicting_labels)} query text(s) labelled with different passages.", ""]
    if result.conflicting_labels:
        out += ["| query | labels (set row: ids) |", "|---|---|"]
        for c in result.conflicting_labels[:MAX_ROWS]:
            labels = "; ".join(f"{name} {row}: {', '.join(ids)}" for name, row, ids in c.occurrences)
            out.append(f"| {_cell(c.query)} | {labels} |")
        out.append("")
    return "\n".join(out)
