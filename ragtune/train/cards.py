"""The model card a finished training run leaves next to its model: honest about what the model is and how it did.

sentence-transformers writes a card for the embedding model and the reranker at every save, from its card data;
the generator script writes the adapter's (:func:`ragtune.train.generator.outputs.write_adapter_card`). At the end
of a run (:meth:`ragtune.train.runner.TrainingRun.finish`) :func:`write_training_card` makes the final one honest:

* metadata: ``base_model`` as a Hub id (``--base_model_id``, else what the base folder records; never a local
  path), ``datasets`` (``--dataset_name``), ``language``, ``license`` (``--license``, else the base model's),
  ``library_name``, ``pipeline_tag``, ``tags`` and ``model-index`` with the dev results;
* the main metric (``--metric_for_best_model``) as the headline, and an evaluation table with BM25 and the hybrid
  (or the fused reranker) beside the base and the fine-tuned model, each mean with its interval over the dev
  queries;
* the saved fusion weight with a snippet that uses it, and the data audit;
* no absolute path, and no training example when the audit found personal information that was not redacted
  (sentence-transformers' widget, usage and sample tables are then left out, not just masked).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

from ragtune.audit import pii_publish_refusal
from ragtune.audit.report import pii_summary_line
from ragtune.core.metrics import DEFAULT_KS, TRAINING_METRICS
from ragtune.core.model_card import (
    CardColumn,
    base_model_hub_id,
    base_model_license,
    evaluation_table,
    fusion_section,
    headline,
    interval_note,
    metric_label,
    metric_type,
    portable_model_name,
    scrub_paths,
    with_section,
)
from ragtune.core.redaction import shown

logger = logging.getLogger(__name__)

EVALUATION = "Evaluation"
FUSION = "Fusion with the first stage (saved weight)"
AUDIT = "Data audit"
TAGS = {"embedding": ["ragtune", "retrieval"], "reranker": ["ragtune", "reranker", "retrieval"],
        "adapter": ["ragtune", "rag", "lora", "text-generation"]}
TASKS = {"embedding": ("information-retrieval", "Information Retrieval"),
         "reranker": ("text-ranking", "Reranking"), "adapter": ("text-generation", "RAG answer generation")}
# Training examples sentence-transformers keeps in its card data (the sample tables are rendered from these).
_EXAMPLE_KEYS = ("examples", "_example_columns", "examples_table")


# ------------------------------------------------------------------ what every card says about its model


def card_metadata(config: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata every kind's card shares, from the run's flags (``vars(args)``): base_model (a Hub id or
    left out), datasets, language and license (``--license``, else the base model's own card's)."""
    base = str(config.get("base_model") or "")
    hub_id, _ = base_model_hub_id(base, config.get("base_model_id"))
    license_id = config.get("license") or base_model_license(base, hub_id)
    dataset = config.get("dataset_name")
    return {"base_model": hub_id, "datasets": [dataset] if dataset else None,
            "language": list(config.get("language") or []) or None, "license": license_id}


def provenance_lines(config: Mapping[str, Any]) -> str:
    """What the card's metadata rests on, said in its body: where the base model id came from (or that it is not
    known), the license's source, the data."""
    base = str(config.get("base_model") or "")
    hub_id, source = base_model_hub_id(base, config.get("base_model_id"))
    name = portable_model_name(base)
    if hub_id:
        base_line = f"- Base model: [{hub_id}](https://huggingface.co/{hub_id}) (from {source})"
    else:
        base_line = (f"- Base model: `{name}`, a local folder that records no Hub id, so `base_model` is left out of "
                     f"the metadata (pass `--base_model_id ORG/NAME` when it is a copy of a Hub model)")
    license_id = config.get("license") or base_model_license(base, hub_id)
    license_line = (f"- License: {license_id} (" + ("--license" if config.get("license") else "the base model's")
                    + ")" if license_id else "- License: not recorded by the base model (pass `--license`)")
    corpus, train = (portable_model_name(str(config.get(k) or "")) for k in ("corpus", "train_data"))
    data = config.get("dataset_name")
    data_line = f"- Data: [{data}](https://huggingface.co/datasets/{data})" if data else \
        f"- Data: `{train}` (queries) over `{corpus}` (passages)"
    return "\n".join([base_line, license_line, data_line])


def audit_section(summary: Mapping[str, Any] | None) -> str:
    """The "Data audit" section: what the training data held (counts only, never values)."""
    if not summary:
        return ""
    leakage = summary["leakage"]
    pii_line = pii_summary_line(summary["pii"], "redacted before training", "**not redacted**")
    return (f"- Personal information in the training data: {pii_line}\n"
            f"- Dev queries with a near-copy among the training queries: {leakage['leaked_test_queries']} of "
            f"{leakage['test_queries']}\n"
            f"- Duplicate passage groups in the corpus: {summary['duplicate_passages']['groups']}\n")


def shows_no_examples(summary: Mapping[str, Any] | None) -> bool:
    """The audit found personal information it did not redact: the card shows no training example at all."""
    return bool(summary) and pii_publish_refusal({"data_audit": summary}) is not None


# ------------------------------------------------------------------ the card of a finished run


def write_training_card(output_dir: str | Path, trainer: Any, config: Mapping[str, Any], metrics: Mapping[str, Any],
                        audit: Mapping[str, Any] | None) -> Path | None:
    """Rewrite ``output_dir/README.md`` as the run's honest card (see the module docstring); returns its path, or
    None when the model has no card (nothing is written then). ``config``: the run's flags; ``metrics``: what the
    script passes to ``finish`` (``dev_metrics``, ``fusion``, ``dev_queries``)."""
    from huggingface_hub import ModelCard

    readme, name = Path(output_dir) / "README.md", Path(output_dir).name
    model = getattr(trainer, "model", None)
    kind = model_kind(model)
    if kind == "adapter":  # its card is write_adapter_card's: add the audit, drop the paths
        if not readme.is_file():
            return None
        card = ModelCard(readme.read_text(encoding="utf-8"))
    else:
        metadata = card_metadata(config)
        card = ModelCard(rendered_card(model, name, metadata, shows_no_examples(audit)))
        card.text = retrieval_body(card.text, kind, name, trainer, config, metrics)
        set_metadata(card.data, kind, name, metadata, config, metrics)
    if audit:
        card.text = with_section(card.text, AUDIT, audit_section(audit))
    card.text = "\n" + card.text.lstrip()
    readme.write_text(shown(scrub_paths(str(card))), encoding="utf-8")
    return readme


def model_kind(model: Any) -> str:
    """"embedding", "reranker" (sentence-transformers' CrossEncoder) or "adapter" (anything without card data)."""
    if model is None or not hasattr(model, "model_card_data"):
        return "adapter"
    from sentence_transformers import CrossEncoder

    return "reranker" if isinstance(model, CrossEncoder) else "embedding"


def rendered_card(model: Any, name: str, metadata: Mapping[str, Any], without_examples: bool) -> str:
    """sentence-transformers' card of ``model`` rendered again from its card data, titled ``name``, with the base
    model, language and license of ``metadata`` (its own text names them too), without any training example when
    ``without_examples`` (widget sentences, the usage snippet's sentences, the sample tables)."""
    from sentence_transformers.base.model_card import generate_model_card

    data = model.model_card_data
    data.model_name = name
    data.base_model = metadata.get("base_model")
    data.language = list(metadata.get("language") or [])
    data.license = metadata.get("license")
    if without_examples:
        data.widget = []
        data.generate_widget_examples = False
        data.usage_examples = None  # its generic default sentences, not the data's
        data.usage_examples_display = None
        for info in [*(data.train_datasets or []), *(data.eval_datasets or [])]:
            for key in _EXAMPLE_KEYS:
                info.pop(key, None)
    return generate_model_card(model)


def set_metadata(data: Any, kind: str, name: str, metadata: Mapping[str, Any], config: Mapping[str, Any],
                 metrics: Mapping[str, Any]) -> None:
    """The card's metadata block (a ``huggingface_hub.ModelCardData``): the shared fields (``metadata``, from
    :func:`card_metadata`), ragtune's tags, and the fine-tuned model's dev results as the model-index, main metric
    first."""
    from huggingface_hub import EvalResult

    for key, value in metadata.items():
        setattr(data, key, value)
    data.tags = list(dict.fromkeys([*(data.tags or []), *TAGS[kind]]))
    data.model_name = name
    after = (metrics.get("dev_metrics") or {}).get("after") or {}
    main = str(config.get("metric_for_best_model") or "")
    task_type, task_name = TASKS[kind]
    dataset = config.get("dataset_name")
    data.eval_results = [
        EvalResult(task_type=task_type, task_name=task_name, dataset_type=dataset or "custom",
                   dataset_name=dataset or f"held-out dev queries ({metrics.get('dev_queries')})",
                   dataset_split="dev", metric_type=metric_type(key), metric_name=metric_label(key),
                   metric_value=round(float(after[key]), 4))
        for key in [main] * (main in after) + [k for k in after if k != main]] or None


def retrieval_body(body: str, kind: str, name: str, trainer: Any, config: Mapping[str, Any],
                   metrics: Mapping[str, Any]) -> str:
    """The embedding model's or reranker's card body: the headline under the title, the evaluation section (BM25,
    first stage, base, fine-tuned, hybrid or fused, with intervals) in place of sentence-transformers' own, the
    saved fusion weight with its snippet."""
    main = str(config.get("metric_for_best_model"))
    columns = dev_columns(kind, metrics.get("dev_metrics") or {}, metrics.get("fusion") or {}, trainer)
    queries = metrics.get("dev_queries")
    keys = [f"{m}@{k}" for m in TRAINING_METRICS for k in DEFAULT_KS]
    summary = headline(main, columns, queries, "dev")
    if columns and summary:
        section = (f"{evaluation_table(columns, keys, main)}\n\n{interval_note(queries, 'dev')} "
                   f"{dev_caveat(kind, config)}\n\n{provenance_lines(config)}\n")
    else:
        section = f"No dev evaluation (`--dev_ratio 0`): the model was not measured.\n\n{provenance_lines(config)}\n"
    body = with_headline(with_section(body, EVALUATION, section, before="Training Details"), summary)
    fusion = fusion_section(kind, name, metrics.get("fusion"), portable_model_name(str(config.get("corpus") or
                                                                                        "corpus.csv")))
    return with_section(body, FUSION, fusion, before="Training Details") if fusion else body


def with_headline(body: str, summary: str) -> str:
    """``body`` with ``summary`` as the paragraph right under its ``# title``."""
    if not summary:
        return body
    lines = body.lstrip().split("\n", 1)
    if not lines[0].startswith("# "):
        return f"{summary}\n\n{body}"
    return f"{lines[0]}\n\n{summary}\n\n{lines[1].lstrip() if len(lines) > 1 else ''}"


def dev_columns(kind: str, dev: Mapping[str, Any], fusion: Mapping[str, Any], trainer: Any) -> list[CardColumn]:
    """The evaluation table's systems, as the script measured them on the dev queries."""
    scored = list((getattr(getattr(trainer, "evaluator", None), "scored", None) or {}).values())
    before, after = (with_per_query(dev.get(key) or {}, scored) for key in ("before", "after"))
    if kind == "embedding":
        weight = fusion.get("dense_weight")
        return [CardColumn("BM25", dev.get("bm25") or {}), CardColumn("base model", before or {}),
                CardColumn("fine-tuned (this model)", after, is_model=True),
                CardColumn(f"hybrid: BM25 + this model (dense weight {weight:g})" if weight is not None else "hybrid",
                           dev.get("hybrid") or {})]
    first = fusion.get("first_stage") or "first stage"
    weight = fusion.get("reranker_weight")
    columns = [CardColumn(f"first stage ({first})", dev.get("first_stage") or {}),
               CardColumn("base reranker", before or {}),
               CardColumn("fine-tuned (this model)", after, is_model=True),
               CardColumn(f"fused with the first stage (weight {weight:g})" if weight is not None else "fused",
                          dev.get("fused") or {})]
    return ([CardColumn("BM25", dev.get("bm25") or {})] if first != "bm25" else []) + columns


def with_per_query(means: Mapping[str, float], scored: list[Mapping[str, float]]) -> Mapping[str, float]:
    """``means`` as the dev evaluator computed them during training, per-query values included (the base model's at
    step 0, the best checkpoint's), when it did in this process; else ``means`` as they are (no interval)."""
    return next((s for s in scored if s and s == means), means)


def dev_caveat(kind: str, config: Mapping[str, Any]) -> str:
    """What the dev numbers are and are not: not a test result (the checkpoint and the fusion weight were chosen on
    them); for the reranker, which candidates it reorders."""
    what = "the hybrid's weight" if kind == "embedding" else "the fused reranker's weight"
    reranked = "" if kind == "embedding" else (f"The reranker reorders the first stage's top "
                                               f"{config.get('rerank_top_n')} passages. ")
    return (f"{reranked}The best checkpoint and {what} were chosen on these same dev queries, so the fine-tuned and "
            f"fused numbers are optimistic; `evaluate_rag.py` on a held-out test set gives the numbers to trust.")
