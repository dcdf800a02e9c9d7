"""The audit layer: data checked before training and publishing for personal information, leakage, duplicates.

Modules: ``pii`` (detection, masking, redaction), ``leakage`` and ``duplicates`` (near-copies, compared on
text folded by ``text``), ``report`` (the markdown report and the log table). This package holds the one
call every script makes::

    result = run_audit(corpus, train, test, policy=args.pii, sources={...})
    corpus, train, test = result.corpus, result.train, result.test   # redacted copies under --pii redact
    metrics["data_audit"] = result.summary()                        # JSON-safe, masked only
    write_audit_report(result, args.audit_report)                   # at the run's first write

Call it after the data is loaded and flags are validated, before anything is written: under
``--pii error`` it raises :class:`~ragtune.core.errors.UserError` (exit 2) and writes nothing.
Full personal values are never logged, printed or written; only masks like ``09•••••678``.

Imports: ``ragtune.core`` and ``ragtune.audit`` only.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from ragtune.audit.duplicates import ConflictingLabel, DuplicateGroup, find_conflicting_labels, find_duplicate_passages
from ragtune.audit.leakage import LEAK_THRESHOLD, LeakedPair, find_leakage, near_duplicate_queries
from ragtune.audit.pii import PiiFinding, Redactor, find_pii, mask, mask_shown_data, mask_text
from ragtune.audit.report import pii_table_lines, render_markdown
from ragtune.audit.result import AuditResult
from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.errors import UserError
from ragtune.core.io import write_text

__all__ = [
    "PII_POLICIES",
    "AuditResult",
    "ConflictingLabel",
    "DuplicateGroup",
    "LeakedPair",
    "PiiFinding",
    "add_audit_args",
    "find_conflicting_labels",
    "find_duplicate_passages",
    "find_leakage",
    "find_pii",
    "mask",
    "mask_text",
    "near_duplicate_queries",
    "pii_publish_refusal",
    "run_audit",
    "scan_pii",
    "write_audit_report",
]

logger = logging.getLogger(__name__)

PII_POLICIES = ("warn", "redact", "error", "off")
LOG_TABLE_ROWS = 20


def add_audit_args(parser: argparse.ArgumentParser, report_flag: str = "--audit_report") -> None:
    """``--pii`` and the report path, for every script that reads training or test data."""
    group = parser.add_argument_group("data audit")
    group.add_argument("--pii", choices=PII_POLICIES, default="warn",
                       help="Personal information (phones, emails, CCCD/CMND, bank accounts, student ids, birth "
                            "dates) in corpus and queries: warn = log a masked table; redact = use a copy with "
                            "placeholders like [SĐT_1] (source files untouched); error = exit 2 before writing "
                            "anything; off = skip the check.")
    group.add_argument(report_flag, type=Path, default=None,
                       help="Write the audit (PII table with masked values, leakage pairs, duplicates) as markdown.")


def _texts_of(corpus: Corpus, named: Mapping[str, Sequence[LabelledQuery]], sources: Mapping[str, str]):
    """(file, row, field, text, setter key) for every text the audit scans."""
    corpus_file = sources.get("corpus", corpus.source or "corpus")
    for i, (pid, text) in enumerate(zip(corpus.ids, corpus.texts)):
        yield corpus_file, f"id {pid}", "text", text, ("corpus", i, "text")
    for name, queries in named.items():
        file = sources.get(name, name)
        for i, query in enumerate(queries):
            yield file, str(query.row or i + 1), "query", query.query, (name, i, "query")
            if query.answer:
                yield file, str(query.row or i + 1), "answer", query.answer, (name, i, "answer")


def scan_pii(corpus: Corpus, named: Mapping[str, Sequence[LabelledQuery]], sources: Mapping[str, str] | None = None,
             redact: bool = False) -> tuple[list[PiiFinding], Corpus, dict[str, list[LabelledQuery]]]:
    """Find personal values everywhere; with ``redact``, also return redacted copies (inputs untouched)."""
    sources = sources or {}
    redactor = Redactor()
    findings: list[PiiFinding] = []
    new_texts = list(corpus.texts)
    new_sets = {name: list(queries) for name, queries in named.items()}
    for file, row, field_name, text, (name, index, attr) in _texts_of(corpus, named, sources):
        found = find_pii(text)
        if not found:
            continue
        findings.extend(dataclasses.replace(f, file=file, row=row, field=field_name) for f in found)
        if redact:
            redacted = redactor.redact(text, found)
            if name == "corpus":
                new_texts[index] = redacted
            else:
                new_sets[name][index] = dataclasses.replace(new_sets[name][index], **{attr: redacted})
    if not redact:
        return findings, corpus, {name: list(queries) for name, queries in named.items()}
    new_corpus = Corpus(ids=list(corpus.ids), texts=new_texts, source=corpus.source)
    return findings, new_corpus, new_sets


def run_audit(corpus: Corpus, train: Sequence[LabelledQuery], test: Sequence[LabelledQuery] = (), *,
              policy: str = "warn", sources: Mapping[str, str] | None = None) -> AuditResult:
    """Audit corpus + queries; see the module docstring. ``sources`` maps "corpus"/"train"/"test" to file names.

    Writes nothing: the caller writes the report (:func:`write_audit_report`) at its first write, so that a run
    that fails later in its checks leaves no report behind.
    """
    if policy not in PII_POLICIES:
        raise UserError(f"--pii must be one of {', '.join(PII_POLICIES)}, got {policy!r}")
    mask_shown_data(policy)  # from now on, every log line, card and report masks personal values (unless off)
    started = time.perf_counter()
    sources = dict(sources or {})
    named = {"train": list(train), "test": list(test)}
    result = AuditResult(policy=policy, corpus=corpus, train=named["train"], test=named["test"], sources=sources)

    if policy != "off":
        findings, new_corpus, new_sets = scan_pii(corpus, named, sources, redact=policy == "redact")
        result.pii_findings = findings
        if findings and policy == "error":
            first = findings[0].as_row()
            raise UserError(
                f"--pii error: {len(findings)} personal value(s) found ({_counts_text(result.pii_counts)}); first: "
                f"{first['file']} {first['row']} {first['field']} {first['kind']} {first['masked']}. "
                f"Use --pii redact to train on a redacted copy, or --pii warn to see the full table")
        if policy == "redact":
            result.corpus, result.train, result.test = new_corpus, new_sets["train"], new_sets["test"]
            result.redacted = True

    result.leaked_pairs = find_leakage(result.train, result.test)
    result.train_near_duplicates = near_duplicate_queries(result.train)
    result.duplicate_passages = find_duplicate_passages(result.corpus)
    result.conflicting_labels = find_conflicting_labels({k: v for k, v in
                                                         (("train", result.train), ("test", result.test)) if v})
    result.seconds = time.perf_counter() - started
    _log(result)
    return result


def write_audit_report(result: AuditResult, path: str | Path | None) -> None:
    """The audit as markdown at ``path`` (``--audit_report``; nothing when None), written atomically."""
    if path is None:
        return
    write_text(path, render_markdown(result) + "\n")
    logger.info("audit report written to %s", path)


def _counts_text(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in counts.items()) or "none"


def _log(result: AuditResult) -> None:
    s = result.summary()
    if result.pii_findings:
        action = "redacted in the copy used here" if result.redacted else "NOT redacted (use --pii redact)"
        logger.warning("personal information: %d value(s) (%s), %s", len(result.pii_findings),
                       _counts_text(result.pii_counts), action)
        if not result.redacted:
            for line in pii_table_lines(result, LOG_TABLE_ROWS):
                logger.warning("  %s", line)
            if len(result.pii_findings) > LOG_TABLE_ROWS:
                logger.warning("  ... and %d more (see the audit report)", len(result.pii_findings) - LOG_TABLE_ROWS)
    if result.leaked_pairs:
        logger.warning("leakage: %d test quer(ies) of %d have a near-copy in the training queries (%d pair(s), "
                       "Jaccard >= %.2f)", s["leakage"]["leaked_test_queries"], len(result.test),
                       len(result.leaked_pairs), LEAK_THRESHOLD)
    if result.duplicate_passages:
        duplicates = s["duplicate_passages"]
        logger.warning("duplicates: %d group(s) of duplicate or overlapping passages (%d passages); %d labelled "
                       "queries have an unlabelled twin", duplicates["groups"], duplicates["passages"],
                       duplicates["queries_with_unlabelled_twin"])
    if result.conflicting_labels:
        logger.warning("conflicting labels: %d query text(s) are labelled with different passages",
                       len(result.conflicting_labels))
    logger.debug("data audit done in %.1fs", result.seconds)  # findings are warned about above; timing is detail


def pii_publish_refusal(metrics: Mapping[str, Any]) -> str | None:
    """Why a model must not be published (its metrics.json records unredacted personal information), or None.

    Reads the ``data_audit`` entry written from :meth:`AuditResult.summary` (a bare summary works too).
    """
    audit = metrics.get("data_audit", metrics)
    pii = audit.get("pii") if isinstance(audit, Mapping) else None
    if not isinstance(pii, Mapping):
        return None
    total = int(pii.get("total") or 0)
    if total and not pii.get("redacted"):
        return (f"its training data held {total} personal value(s) ({_counts_text(pii.get('counts') or {})}) that "
                f"were not redacted; retrain with --pii redact, or pass --allow_pii to publish anyway")
    return None
