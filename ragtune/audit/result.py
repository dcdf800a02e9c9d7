"""What a data audit found: :class:`AuditResult`, with the JSON-safe summary every script records."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ragtune.audit.duplicates import NEAR_DUPLICATE_THRESHOLD, ConflictingLabel, DuplicateGroup, labelled_twins
from ragtune.audit.leakage import LEAK_THRESHOLD, LeakedPair
from ragtune.audit.pii import KINDS, PiiFinding
from ragtune.core.data import Corpus, LabelledQuery


@dataclass
class AuditResult:
    policy: str
    corpus: Corpus
    train: list[LabelledQuery]
    test: list[LabelledQuery]
    sources: dict[str, str] = field(default_factory=dict)
    pii_findings: list[PiiFinding] = field(default_factory=list)
    redacted: bool = False
    leaked_pairs: list[LeakedPair] = field(default_factory=list)
    train_near_duplicates: list[tuple[int, int, float]] = field(default_factory=list)
    duplicate_passages: list[DuplicateGroup] = field(default_factory=list)
    conflicting_labels: list[ConflictingLabel] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def pii_counts(self) -> dict[str, int]:
        counts = Counter(f.kind for f in self.pii_findings)
        return {kind: counts[kind] for kind in KINDS if counts[kind]}

    @property
    def leaked_test_indices(self) -> set[int]:
        """Indices into ``test`` of queries that have a near-copy in ``train``."""
        return {p.test_index for p in self.leaked_pairs}

    def summary(self) -> dict[str, Any]:
        """JSON-safe summary for metrics.json and the model card; holds no personal value, masked or not."""
        return {
            "pii": {
                "policy": self.policy,
                "checked": self.policy != "off",
                "counts": self.pii_counts,
                "total": len(self.pii_findings),
                "redacted": self.redacted,
            },
            "leakage": {
                "threshold": LEAK_THRESHOLD,
                "pairs": len(self.leaked_pairs),
                "exact_pairs": sum(p.exact for p in self.leaked_pairs),
                "leaked_test_queries": len(self.leaked_test_indices),
                "test_queries": len(self.test),
            },
            "train_near_duplicate_pairs": len(self.train_near_duplicates),
            "duplicate_passages": {
                "threshold": NEAR_DUPLICATE_THRESHOLD,
                "groups": len(self.duplicate_passages),
                "passages": sum(len(g.ids) for g in self.duplicate_passages),
                "by_kind": dict(Counter(g.kind for g in self.duplicate_passages)),
                "queries_with_unlabelled_twin": labelled_twins(self.duplicate_passages, [*self.train, *self.test]),
            },
            "conflicting_labels": len(self.conflicting_labels),
        }
