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
from ragtune.core.metrics import ranking_metric_keys, split_metric_key
from ragtune.core.model_card import (
    CARD_METRICS,
    CardColumn,
    base_model_hub_id,
    evaluation_table,
    front_matter,
    interval_note,
    is_hub_id,
    portable_model_name,
)
from ragtune.core.model_specs import saved_metrics
from ragtune.core.significance import MeansWithQueries
from ragtune.evaluate.answers import evaluate_answers
from ragtune.evaluate.reports import Report
from ragtune.evaluate.systems import System
from ragtune.generation.generators import EndpointOptions, GeneratorSettings, build_generator
from ragtune.generation.llm_cache import LLMCache
from ragtune.generation.prompt import trained_system_prompt

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


def publish(args: argparse.Namespace, report: Report, base_answers: dict[str, float] | None = None) -> None:
    """Publish the selected models; a problem with any of them refuses every push (nothing half-done)."""
    # Imported here: ragtune.evaluate.hub imports huggingface_hub's upload machinery (HfApi, model cards), which
    # a run that publishes nothing never needs.
    from ragtune.evaluate import hub

    selections = select_for_publishing(report.systems, args.embedding_models, args.reranker_models, args.main_metric)
    wanted = [(kind, repo) for kind, repo in (("embedding", args.hub_embedding_repo),
                                              ("reranker", args.hub_reranker_repo)) if repo]
    problems, requests = [], []
    # The card's table: the ranking metrics a reader compares (the others stay in results.md).
    keys = [key for key in ranking_metric_keys(args.k) if split_metric_key(key)[0] in CARD_METRICS]
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
        columns = card_columns(report.systems, selection)
        requests.append(hub.PublishRequest(
            model_dir=model_dir, repo_id=repo, kind=kind,
            base_model=published_base_model(selection, training, model_dir),
            metrics=_floats(selection.system.metrics),
            # The base model's numbers only when it was evaluated (a single entry is compared with BM25 instead).
            baseline_metrics=_floats(selection.baseline.metrics) if base_evaluated(selection) else {},
            dataset_name=args.dataset_name,  # a Hub dataset id, or none: never the corpus file's name
            results_markdown=(f"{evaluation_table(columns, keys, args.main_metric)}\n\n"
                              f"{interval_note(len(report.queries), 'test')}"),
            training_config=training.get("config"),
            language=list(args.language), license=args.license,
            main_metric=args.main_metric, test_queries=len(report.queries),
            compared_metrics={c.label: dict(c.metrics) for c in columns if not c.is_model and not (
                base_evaluated(selection) and c.label == _label(selection.baseline, selection))},
            fusion=training.get("fusion"), data_audit=training.get("data_audit")))
    if getattr(args, "hub_generator_repo", None):
        adapter_problems, adapter_request = generator_request(args, report, base_answers or {}, hub)
        problems += adapter_problems
        requests += [adapter_request] if adapter_request else []
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


def published_base_model(selection: Selection, training: dict[str, Any], model_dir: Path) -> str:
    """The base model as the published card names it: the Hub id the training run was given (--base_model_id) or
    resolved (its local card's base_model), else the one the base folder records, else the folder's name (never
    a local path; the card then has no base_model metadata)."""
    explicit = (training.get("config") or {}).get("base_model_id")
    recorded = front_matter(Path(model_dir) / "README.md").get("base_model")
    if explicit or (isinstance(recorded, str) and is_hub_id(recorded)):
        return str(explicit or recorded)
    base = base_model_name(selection, training)
    hub_id, _ = base_model_hub_id(base)
    return hub_id or portable_model_name(base)


def card_columns(systems: Sequence[System], selection: Selection) -> list[CardColumn]:
    """The published card's evaluation table: BM25, the baseline, the model, and the model's fused variants (the
    hybrid with BM25, the reranker fused with its first stage), each with its per-query values (intervals)."""
    model = selection.system
    if selection.kind == "embedding":
        variants = [s for s in systems if s.kind == "hybrid" and s.embedding_model == model.embedding_model]
    else:
        variants = [s for s in systems if s.kind in ("hybrid_rerank", "fused_rerank") and
                    s.reranker_model == model.reranker_model and s.embedding_model == model.embedding_model]
    shown: list[System] = []
    for system in [*(s for s in systems if s.kind == "bm25"), selection.baseline, model, *variants]:
        if system is not None and all(system is not s for s in shown):
            shown.append(system)
    return [CardColumn(_label(s, selection), MeansWithQueries(s.per_query) if s.per_query else dict(s.metrics),
                       is_model=s is model) for s in shown]


def base_evaluated(selection: Selection) -> bool:
    """The baseline is the model's base (several entries of its kind), not BM25 or the first stage alone."""
    return selection.baseline is not None and selection.is_base_comparison


def _label(system: System | None, selection: Selection) -> str:
    if system is None:
        return ""
    return system.name + (" (this model)" if system is selection.system else
                          " (base)" if system is selection.baseline and base_evaluated(selection) else "")


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}


# ------------------------------------------------------------------ the generator's LoRA adapter
# The adapter is judged on this evaluation's test answers: the best answered system's contexts (by --main_metric),
# at the first --answer_k, generated once with the adapter and once with its base model alone (same prompts, same
# system prompt), so that both sides of the card are on the same test queries.
ANSWER_CARD_METRICS = ("rouge_l", "bleu4", "string_presence")  # the first is the main answer metric


def answer_keys(k: int) -> list[str]:
    """The answer metrics a generator card shows, main first (``rouge_l@5``, ``bleu4@5``, ``string_presence@5``)."""
    return [f"{name}@{k}" for name in ANSWER_CARD_METRICS]


def answered_system(args: argparse.Namespace, report: Report) -> System | None:
    """The system whose contexts judge the adapter: the best by --main_metric among those with answers."""
    main = answer_keys(args.answer_k[0])[0]
    answered = [s for s in report.systems if s.metrics.get(main) is not None]
    return _best(answered, args.main_metric) if answered else None


def base_answer_metrics(args: argparse.Namespace, report: Report, cache_dir: Path) -> dict[str, float]:
    """The base generator's answer metrics on :func:`answered_system`'s contexts, the adapter left off: what the
    adapter card compares with (generated only when --hub_generator_repo asks for a card)."""
    system = answered_system(args, report)
    if system is None or not args.generator_adapter:
        return {}
    k = args.answer_k[0]
    base_flags = argparse.Namespace(**{**vars(args), "generator_adapter": None})
    generator = build_generator(GeneratorSettings.from_flags(base_flags), LLMCache(cache_dir / "llm_cache.jsonl"),
                                args.device, EndpointOptions.from_flags(base_flags, workers=args.judge_workers))
    # The base answers with the adapter's own prompt: only the weights differ.
    generator.system_prompt = trained_system_prompt(args.generator_adapter)
    twin = System(system.name, system.kind, system.embedding_model, system.reranker_model, system.ranked,
                  system.scores, per_query=[{} for _ in report.queries])
    logger.info("Generating the base model's answers on %s's contexts for the adapter card", system.name)
    evaluate_answers([twin], report.queries, report.corpus, [k], generator, None, None)
    return {key: float(value) for key in answer_keys(k) if (value := twin.metrics.get(key)) is not None}


def generator_request(args: argparse.Namespace, report: Report, base_answers: dict[str, float],
                      hub: Any) -> tuple[list[str], Any]:
    """The adapter's publish request, or why it is refused: no adapter or answers, a regression below the base
    model on the main answer metric (unless --allow_regression), unredacted personal information (unless
    --allow_pii)."""
    repo = args.hub_generator_repo
    adapter = Path(args.generator_adapter or "").expanduser()
    system = answered_system(args, report)
    if not args.generator_adapter or not (adapter / "adapter_config.json").is_file():
        return [f"--hub_generator_repo {repo}: --generator_adapter must be a LoRA adapter folder"], None
    if system is None or not base_answers:
        return [f"--hub_generator_repo {repo}: no test answers to judge the adapter by (give --generator_local)"], None
    keys = answer_keys(args.answer_k[0])
    main = keys[0]
    metrics = {key: float(system.metrics[key]) for key in keys if system.metrics.get(key) is not None}
    training = saved_metrics(adapter)
    problems = []
    pii_reason = pii_publish_refusal(training)
    if pii_reason:
        if args.allow_pii:
            logger.warning("Publishing %s although %s (--allow_pii)", adapter, pii_reason.split(";")[0])
        else:
            problems.append(f"generator adapter '{adapter}': {pii_reason}")
    if metrics.get(main, float("-inf")) < base_answers.get(main, float("-inf")):
        message = (f"generator adapter '{adapter}' scores {main} {metrics.get(main, float('nan')):.4f} below its base "
                   f"model ({base_answers[main]:.4f}) on {system.name}'s contexts")
        if not args.allow_regression:
            problems.append(message + "; pass --allow_regression to publish it anyway")
        else:
            logger.warning("Publishing %s (--allow_regression)", message)
    if problems:
        return problems, None
    base_model = (training.get("config") or {}).get("base_model_id") or training.get("base_model") or \
        args.generator_local
    hub_id, _ = base_model_hub_id(str(base_model))
    columns = [CardColumn("base model", dict(base_answers)), CardColumn("this adapter", metrics, is_model=True)]
    return [], hub.PublishRequest(
        model_dir=adapter, repo_id=repo, kind="generator",
        base_model=hub_id or portable_model_name(str(base_model)),
        metrics=metrics, baseline_metrics=dict(base_answers), dataset_name=args.dataset_name,
        results_markdown=(f"Answers generated greedily from the top {args.answer_k[0]} passages of `{system.name}` "
                          f"for each test query, by the base model alone and with this adapter.\n\n"
                          f"{evaluation_table(columns, keys, main)}\n\n{interval_note(len(report.queries), 'test')}"),
        training_config=training.get("config"), language=list(args.language), license=args.license,
        main_metric=main, test_queries=len(report.queries), data_audit=training.get("data_audit"))
