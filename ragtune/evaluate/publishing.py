"""Which evaluated models to publish, and publishing them with model cards carrying this run's numbers.

The rule (see :func:`select_for_publishing`): the first ``--embedding_models`` / ``--reranker_models``
entry is the baseline, the best later entry on the main metric is published, and a model that scores
below its baseline is refused unless ``--allow_regression``, and so is a model whose metrics.json records
personal information in its training data that was not redacted, unless ``--allow_pii``. Nothing is
half-published: every problem is found before the first upload.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ragtune.audit import pii_publish_refusal
from ragtune.core.errors import UserError
from ragtune.core.metrics import ranking_metric_keys
from ragtune.core.model_specs import saved_metrics
from ragtune.evaluate.reports import Report, card_markdown
from ragtune.evaluate.systems import System

logger = logging.getLogger(__name__)


@dataclass
class Selection:
    """The model to publish for one kind, with the system it is judged by and its baseline."""

    kind: str  # "embedding" | "reranker"
    model: str
    system: System
    baseline: System | None
    main_metric: str
    # False when the model is the only entry of its kind: the baseline (BM25, or the embedding model
    # without reranker) is then shown on the card but is not the model's base, so no regression check.
    is_base_comparison: bool = True

    @property
    def below_baseline(self) -> bool:
        if self.baseline is None:
            return False
        return _metric(self.system, self.main_metric) < _metric(self.baseline, self.main_metric)

    @property
    def regression(self) -> bool:
        """A fine-tuned model scoring below its base (the first entry) on the main metric."""
        return self.is_base_comparison and self.below_baseline


def _metric(system: System, key: str) -> float:
    value = system.metrics.get(key)
    return float("-inf") if value is None else float(value)


def _best(systems: Sequence[System], key: str) -> System:
    # max() keeps the first of equal values: with ties, the earlier command-line entry wins.
    return max(systems, key=lambda s: _metric(s, key))


def select_for_publishing(systems: Sequence[System], embedding_models: Sequence[str], reranker_models: Sequence[str],
                          main_metric: str) -> dict[str, Selection]:
    """Which embedding model and reranker to publish.

    Embedding: the first ``--embedding_models`` entry is the baseline; the candidate is the best
    later entry on ``main_metric``. Reranker: every reranker is judged on top of the best embedding
    system; the first ``--reranker_models`` entry is the baseline, the candidate the best later one.
    A single entry is the candidate itself; its card then compares it with BM25 (embedding) or with
    the embedding system alone (reranker), and no regression check applies (no base was evaluated).
    """
    out: dict[str, Selection] = {}
    dense = {s.embedding_model: s for s in systems if s.kind == "dense"}
    dense_list = [dense[m] for m in embedding_models if m in dense]
    if dense_list:
        single = len(dense_list) == 1
        if single:
            baseline = next((s for s in systems if s.kind == "bm25"), None)
            chosen = dense_list[0]
        else:
            baseline, chosen = dense_list[0], _best(dense_list[1:], main_metric)
        out["embedding"] = Selection("embedding", chosen.embedding_model or "", chosen, baseline, main_metric,
                                     not single)
        best_dense = _best(dense_list, main_metric)
        reranked = {s.reranker_model: s for s in systems
                    if s.kind == "rerank" and s.embedding_model == best_dense.embedding_model}
        rerank_list = [reranked[m] for m in reranker_models if m in reranked]
        if rerank_list:
            single = len(rerank_list) == 1
            if single:
                baseline, chosen = best_dense, rerank_list[0]
            else:
                baseline, chosen = rerank_list[0], _best(rerank_list[1:], main_metric)
            out["reranker"] = Selection("reranker", chosen.reranker_model or "", chosen, baseline, main_metric,
                                        not single)
    return out


def publish(args: argparse.Namespace, report: Report) -> None:
    """Publish the selected models; a problem with any of them refuses every push (nothing half-done)."""
    # Imported here: ragtune.evaluate.hub imports huggingface_hub's upload machinery (HfApi, model cards), which
    # a run that publishes nothing never needs.
    from ragtune.evaluate import hub

    selections = select_for_publishing(report.systems, args.embedding_models, args.reranker_models, args.main_metric)
    wanted = [(kind, repo) for kind, repo in (("embedding", args.hub_embedding_repo),
                                              ("reranker", args.hub_reranker_repo)) if repo]
    problems, requests = [], []
    keys = ranking_metric_keys(args.k)
    payload_systems = {s["name"]: s for s in report.payload()["systems"]}
    for kind, repo in wanted:
        selection = selections.get(kind)
        if selection is None:
            problems.append(f"no {kind} system was evaluated to publish to {repo}")
            continue
        model_dir = Path(selection.model).expanduser()
        if not model_dir.is_dir():
            problems.append(f"--hub_{kind}_repo: the selected {kind} model '{selection.model}' is not a local folder "
                            f"(only a model you trained can be published)")
            continue
        training = saved_metrics(model_dir)
        # A published model can reproduce what it was trained on: the fine-tuning run's data audit decides.
        pii_reason = pii_publish_refusal(training)
        refusals = _refusals(args, selection, pii_reason)
        if refusals:
            problems += refusals
            continue
        _warn_allowed(args, selection, pii_reason)
        shown = [payload_systems[s.name] for s in (selection.baseline, selection.system) if s is not None]
        requests.append(hub.PublishRequest(
            model_dir=model_dir, repo_id=repo, kind=kind,
            base_model=base_model_name(selection, training),
            metrics=_floats(selection.system.metrics),
            baseline_metrics=_floats(selection.baseline.metrics) if selection.baseline else {},
            dataset_name=args.dataset_name or Path(args.corpus).stem,
            results_markdown=card_markdown(shown, selection.baseline.name if selection.baseline else None, keys),
            training_config=training.get("config"),
            language=list(args.language), license=args.license))
    if problems:
        raise UserError("not publishing anything: " + "; ".join(problems) + f" (results are in {report.output_dir})")
    logger.info("Publishing %s%s", ", ".join(f"{r.kind} {r.model_dir} -> {r.repo_id}" for r in requests),
                " (dry run)" if args.dry_run else "")
    token = args.hub_token or os.environ.get("HF_TOKEN") or None
    report.published = hub.publish_models(requests, token=token, private=not args.public, dry_run=args.dry_run)
    report.write()


def _refusals(args: argparse.Namespace, selection: Selection, pii_reason: str | None) -> list[str]:
    """Why the selected model must not be published unless a flag allows it: a regression, unredacted PII."""
    refusals = []
    if selection.regression and not args.allow_regression:
        refusals.append(f"{selection.kind} model '{selection.model}' scores {args.main_metric} "
                        f"{selection.system.metrics.get(args.main_metric):.4f} below its baseline "
                        f"'{selection.baseline.name}' ({selection.baseline.metrics.get(args.main_metric):.4f}); pass "
                        f"--allow_regression to publish it anyway")
    if pii_reason and not args.allow_pii:
        refusals.append(f"{selection.kind} model '{selection.model}': {pii_reason}")
    return refusals


def _warn_allowed(args: argparse.Namespace, selection: Selection, pii_reason: str | None) -> None:
    """Log what is published although a check did not pass (a flag allowed it, or the baseline is not its base)."""
    if pii_reason:
        logger.warning("Publishing %s although %s (--allow_pii)", selection.model,
                       pii_reason.split(";")[0])
    if selection.below_baseline:
        logger.warning("Publishing %s although it scores below %s on %s (%.4f < %.4f)%s", selection.model,
                       selection.baseline.name, args.main_metric, selection.system.metrics.get(args.main_metric),
                       selection.baseline.metrics.get(args.main_metric),
                       " (--allow_regression)" if selection.regression else "")


def base_model_name(selection: Selection, training: dict[str, Any]) -> str:
    """The model this one was fine-tuned from: its metrics.json says so; else the baseline entry."""
    if training.get("base_model"):
        return str(training["base_model"])
    if selection.baseline is not None:
        if selection.kind == "reranker" and selection.baseline.reranker_model:
            return selection.baseline.reranker_model
        if selection.kind == "embedding" and selection.baseline.embedding_model:
            return selection.baseline.embedding_model
    return selection.model


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
