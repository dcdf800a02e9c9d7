"""Model cards (README.md with Hugging Face metadata): the one writer for the embedding model, reranker and adapter.

Training writes a card next to each model (sentence-transformers writes its own for the embedding model and
the reranker, from its card data, and ``ragtune.train.cards`` rewrites it at the end of the run; ragtune writes the
adapter's), and publishing (``ragtune.evaluate.hub``) writes the card that goes to the Hub. Both build on what is
here, so the metadata, the headline and the evaluation table read the same everywhere. Every card is written
through :func:`ragtune.core.redaction.shown`: no secret, and no personal value unmasked under ``--pii warn``.

What makes a card honest, shared by the local and the published ones: the model it was fine-tuned from as a Hub
id (:func:`base_model_hub_id`, never a local path), no absolute path anywhere (:func:`scrub_paths`), the main
metric as the headline (:func:`headline`), and an evaluation table that puts BM25 and the hybrid beside the model,
each mean with its bootstrap interval over the queries (:func:`evaluation_table`).
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ragtune.core.metrics import split_metric_key
from ragtune.core.redaction import shown


def card_text(data: Any, body: str) -> str:
    """A card's text: the ``huggingface_hub.ModelCardData`` as its YAML header, then the Markdown body."""
    return f"---\n{data.to_yaml()}\n---\n\n{body.lstrip()}"


def write_card(path: str | Path, data: Any, body: str) -> Path:
    """Write a card (``card_text``) to ``path`` (a README.md) and return the path."""
    path = Path(path)
    path.write_text(shown(scrub_paths(card_text(data, body))), encoding="utf-8")
    return path


def with_section(text: str, title: str, body: str, before: str | None = None) -> str:
    """``text`` with a ``## title`` section: replacing the section of that title if there is one, else before the
    section named ``before`` (when present), else at the end."""
    section = f"## {title}\n\n{body.strip()}\n"
    head, tail = split_section(text, title)
    if tail is not None:
        return f"{head.rstrip()}\n\n{section}\n{tail.lstrip()}".rstrip() + "\n"
    anchor = f"\n## {before}\n" if before else None
    if anchor and anchor in text:
        head, _, tail = text.partition(anchor)
        return f"{head.rstrip()}\n\n{section}\n{anchor.lstrip()}{tail}"
    return f"{text.rstrip()}\n\n{section}"


def split_section(text: str, title: str) -> tuple[str, str | None]:
    """(text before the ``## title`` section, text after it) with the section itself left out; (text, None) when
    there is no such section. A section runs to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(title)}[ \t]*\n", text, flags=re.MULTILINE)
    if match is None:
        return text, None
    # The next heading, with the "<!--" line that opens it when it is commented out (sentence-transformers' cards).
    end = re.search(r"^(<!--[ \t]*\n)?## ", text[match.end():], flags=re.MULTILINE)
    return text[:match.start()], text[match.end() + end.start():] if end else ""


# ------------------------------------------------------------------ names and paths

# An absolute path of two or more parts, not inside a URL (no ':', '/' or word character before it): POSIX (/a/b,
# ~/a/b) or Windows (C:\\a\\b, C:/a/b). A lone backslash sequence (an escaped \\n in code) is not a path.
_PATH_PART = r"[^\s/\\'\"`<>|()\[\]{},;*]"
_ABSOLUTE_PATH = re.compile(rf"(?<![\w.:/\\~-])(?:~?/(?:{_PATH_PART}+/)+|[A-Za-z]:[/\\](?:{_PATH_PART}+[/\\])+)"
                            rf"{_PATH_PART}*")


def portable_model_name(name: str) -> str:
    """How a card names a model: a Hub id as it is; a local path (absolute, relative or ~) as its folder name."""
    text = str(name).strip()
    if not text:
        return text
    if is_hub_id(text) and not Path(text).expanduser().exists():
        return text
    return Path(text.rstrip("/\\")).name or text


def scrub_paths(text: str) -> str:
    """``text`` with every absolute path replaced by its last part (a model folder by its folder name, a data file by
    its file name): a card is read on other machines, where the path means nothing and may name a user."""

    def last_part(match: re.Match[str]) -> str:
        return [part for part in re.split(r"[/\\]", match.group(0)) if part][-1]

    return _ABSOLUTE_PATH.sub(last_part, text)


def has_absolute_path(text: str) -> bool:
    """Whether ``text`` still holds an absolute path (what :func:`scrub_paths` removes)."""
    return _ABSOLUTE_PATH.search(text) is not None


# ------------------------------------------------------------------ the base model as a Hub id

_HF_CACHE_REPO = re.compile(r"models--([^/\\]+?)--([^/\\]+)")


def is_hub_id(name: str | None) -> bool:
    """``name`` is written like a Hub repo id (``org/name`` or ``name``), not like a path."""
    if not name or name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1 or ":" in name:
        return False
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def front_matter(readme: str | Path) -> dict[str, Any]:
    """The YAML metadata block of a README.md ({} when there is none or it cannot be read)."""
    import yaml

    try:
        text = Path(readme).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.DOTALL)
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def base_model_hub_id(name_or_path: str, explicit: str | None = None) -> tuple[str | None, str]:
    """(the Hub id of the model ``name_or_path`` is, or None; where that came from, for the card).

    ``explicit`` (``--base_model_id``) wins. A Hub id is itself. A local folder (or a GGUF file's folder) names
    its model when it is a Hugging Face cache snapshot (``models--org--name``), when its own card records a
    ``base_model`` (what sentence-transformers writes when it saves a Hub model), or when its config.json
    records a ``_name_or_path`` that is a Hub id. Otherwise None: a card never names a local path instead.
    """
    if explicit:
        return explicit, "--base_model_id"
    text = str(name_or_path).strip()
    path = Path(text).expanduser()
    if not path.exists():
        return (text, "--base_model") if is_hub_id(text) else (None, "not recorded")
    folder = path if path.is_dir() else path.parent
    cached = _HF_CACHE_REPO.search(folder.resolve().as_posix())
    if cached:
        return f"{cached.group(1)}/{cached.group(2)}", "the Hugging Face cache folder it was loaded from"
    recorded = front_matter(folder / "README.md").get("base_model")
    recorded = recorded[0] if isinstance(recorded, list) and recorded else recorded
    if isinstance(recorded, str) and is_hub_id(recorded):
        return recorded, "the base model folder's own model card"
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        config = {}
    named = config.get("_name_or_path") if isinstance(config, dict) else None
    if isinstance(named, str) and is_hub_id(named) and not Path(named).exists():
        return named, "the base model folder's config.json"
    return None, "not recorded"


def base_model_license(name_or_path: str, hub_id: str | None = None) -> str | None:
    """The license the base model's card declares: a local folder's README.md, else the README.md of ``hub_id`` in
    the Hugging Face cache (sentence-transformers downloads it with the model); None when neither says."""
    path = Path(str(name_or_path)).expanduser()
    readmes = [(path if path.is_dir() else path.parent) / "README.md"] if path.exists() else []
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(hub_id, "README.md")
        if isinstance(cached, str):
            readmes.append(Path(cached))
    for readme in readmes:
        license_id = front_matter(readme).get("license")
        if isinstance(license_id, str) and license_id.strip():
            return license_id.strip()
    return None


# ------------------------------------------------------------------ flag types (training and evaluate_rag.py)

LANGUAGE_CODE = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.+-]*$")


def hub_id_arg(text: str) -> str:
    """argparse type: a Hub repo id (``org/name``), for ``--base_model_id`` and ``--dataset_name``."""
    if not is_hub_id(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Hub repo id (write it as org/name, e.g. BAAI/bge-m3)")
    return text


def language_arg(text: str) -> str:
    """argparse type: an ISO 639 language code (vi, en, zh-Hans) for the card's ``language``."""
    if not LANGUAGE_CODE.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a language code (ISO 639, e.g. vi or en); give several "
                                         f"separated by spaces")
    return text


def license_arg(text: str) -> str:
    """argparse type: a Hub license id (apache-2.0, mit, cc-by-4.0, other) for the card's ``license``."""
    if not LICENSE_ID.match(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a Hub license id (e.g. apache-2.0, mit, cc-by-4.0, other)")
    return text


# ------------------------------------------------------------------ the evaluation: headline and table


# The ranking metrics a card's tables show, in this order (precision, F1 and context metrics stay in the reports).
CARD_METRICS = ("ndcg", "mrr", "map", "recall", "hit")


@dataclass(frozen=True)
class CardColumn:
    """One system of a card's evaluation table: its label and mean metrics (a
    :class:`ragtune.core.significance.MeansWithQueries` gives each mean its interval)."""

    label: str
    metrics: Mapping[str, float]
    is_model: bool = False  # the model the card is about (bold in the table, named in the headline)


def ordered_keys(keys: Sequence[str], main_metric: str) -> list[str]:
    """``keys`` with the main metric first, the others in their order."""
    return [main_metric] * (main_metric in keys) + [key for key in keys if key != main_metric]


def metric_cell(metrics: Mapping[str, float], key: str) -> str:
    """``0.7125 [0.61, 0.81]``: the mean and, when the per-query values came with it, its 95% interval."""
    value = metrics.get(key)
    if value is None:
        return "–"
    interval = metrics.interval(key) if callable(getattr(metrics, "interval", None)) else None
    return f"{value:.4f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")


def evaluation_table(columns: Sequence[CardColumn], keys: Sequence[str], main_metric: str) -> str:
    """Metric rows (main metric first, in bold) x system columns, each cell a mean with its 95% interval."""
    columns = [c for c in columns if c.metrics]
    rows = [key for key in ordered_keys(keys, main_metric) if any(key in c.metrics for c in columns)]
    header = "| metric | " + " | ".join(f"**{c.label}**" if c.is_model else c.label for c in columns) + " |"
    lines = [header, "|:---|" + "---:|" * len(columns)]
    for key in rows:
        name = f"**{key}** (main)" if key == main_metric else key
        lines.append(f"| {name} | " + " | ".join(metric_cell(c.metrics, key) for c in columns) + " |")
    return "\n".join(lines)


def interval_note(queries: int | None, split: str) -> str:
    """The sentence under an evaluation table: what the numbers are and what the brackets mean."""
    counted = f"{queries} {split} queries" if queries is not None else f"the {split} queries"
    return (f"Means over {counted} (binary relevance, trec_eval definitions); in brackets the 95% percentile-bootstrap "
            f"interval of each mean over the queries (10,000 resamples; none where the per-query values were not kept, "
            f"e.g. a base model evaluated before a resume). On a few dozen queries, differences inside these intervals "
            f"may be noise.")


def headline(main_metric: str, columns: Sequence[CardColumn], queries: int | None, split: str) -> str:
    """The card's first numbers: the model's main metric (with its interval) against every other system's, and a
    warning when BM25 (or any other system shown) does better on it."""
    model = next((c for c in columns if c.is_model and main_metric in c.metrics), None)
    if model is None:
        return ""
    others = [c for c in columns if c is not model and main_metric in c.metrics]
    counted = f"{queries} held-out {split} queries" if queries is not None else f"the held-out {split} queries"
    text = f"**{main_metric} {metric_cell(model.metrics, main_metric)}** on {counted} (main metric)"
    if others:
        text += "; " + ", ".join(f"{c.label} {c.metrics[main_metric]:.4f}" for c in others)
    text += "."
    better = [c.label for c in others if c.metrics[main_metric] > model.metrics[main_metric]]
    if better:
        text += (f"\n\n> **Below {', '.join(better)} on {main_metric}.** On these queries the model alone is not the "
                 "best choice: use the better system shown in the table.")
    return text


def metric_label(key: str) -> str:
    """``ndcg@5`` -> ``NDCG@5``: how the Hub's model-index names a metric."""
    name, k = split_metric_key(key)
    label = {"ndcg": "NDCG", "mrr": "MRR", "map": "MAP", "hit": "Hit", "recall": "Recall", "precision": "Precision",
             "f1": "F1", "rouge_l": "ROUGE-L", "bleu4": "BLEU-4", "string_presence": "String presence"
             }.get(name.lower(), name)
    return f"{label}@{k}" if k is not None else label


def metric_type(key: str) -> str:
    """``ndcg@5`` -> ``ndcg_at_5``: the model-index metric type."""
    name, k = split_metric_key(key)
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_") or "metric"
    return f"{slug}_at_{k}" if k is not None else slug


# ------------------------------------------------------------------ using the saved fusion weights


def hybrid_snippet(model: str, corpus: str, dense_weight: float, depth: int) -> str:
    """Python that retrieves with BM25 + ``model`` fused as evaluated: ``ragtune.pipeline.RAGPipeline`` with the
    saved dense weight (each source's top ``depth`` passages, min-max normalised, then weighted)."""
    return (f"from ragtune.pipeline import RAGPipeline\n\n"
            f"# BM25 + this model, fused with the weight chosen on the dev queries (top {depth} of each source).\n"
            f"pipeline = RAGPipeline.from_models({corpus!r}, embedding_model={model!r}, first_stage=\"hybrid\",\n"
            f"                                   dense_weight={dense_weight:g})\n"
            f"for passage in pipeline.retrieve(\"câu hỏi của người dùng\", k=5):\n"
            f"    print(passage.rank, passage.id, round(passage.score, 3))\n")


def reranker_fusion_snippet(model: str, reranker_weight: float, depth: int) -> str:
    """Python (sentence-transformers only) that reranks a first stage's top ``depth`` the way the weight was chosen:
    the reranker's raw logits and the first stage's scores, each min-max normalised over those passages, then
    ``reranker_weight`` x reranker + (1 - ``reranker_weight``) x first stage."""
    return (f"import torch\n"
            f"from sentence_transformers import CrossEncoder\n\n"
            f"reranker = CrossEncoder({model!r})\n"
            f"RERANKER_WEIGHT, TOP_N = {reranker_weight:g}, {depth}  # chosen on the dev queries\n\n\n"
            f"def minmax(scores):\n"
            f"    low, high = min(scores), max(scores)\n"
            f"    return [1.0 if high - low <= 1e-12 else (s - low) / (high - low) for s in scores]\n\n\n"
            f"def rerank(query, passages, first_stage_scores):\n"
            f"    \"\"\"The first stage's top TOP_N passages and their scores (best first) -> (fused score, passage).\"\"\"\n"
            f"    passages, first_stage_scores = passages[:TOP_N], first_stage_scores[:TOP_N]\n"
            f"    logits = reranker.predict([(query, p) for p in passages], activation_fn=torch.nn.Identity())\n"
            f"    fused = [RERANKER_WEIGHT * r + (1 - RERANKER_WEIGHT) * f\n"
            f"             for r, f in zip(minmax([float(x) for x in logits]), minmax(first_stage_scores))]\n"
            f"    return sorted(zip(fused, passages), reverse=True)\n\n\n"
            f"print(rerank(\"câu hỏi của người dùng\", [\"đoạn văn thứ nhất\", \"đoạn văn thứ hai\"], [12.5, 9.1]))\n")


def fusion_section(kind: str, model: str, fusion: Mapping[str, Any] | None, corpus: str = "corpus.csv") -> str:
    """The card's section on the saved fusion weight (chosen on dev, saved in metrics.json), with a snippet that
    uses it; "" when the run saved none."""
    if not fusion:
        return ""
    where = (f"chosen on {fusion.get('dev_queries', 'the')} dev queries by the `{fusion.get('rule', 'smoothed')}` "
             f"rule on {fusion.get('metric', 'the main metric')}")
    if kind == "embedding" and fusion.get("dense_weight") is not None:
        weight, depth = float(fusion["dense_weight"]), int(fusion.get("depth") or 100)
        text = (f"Dense weight **{weight:g}** against BM25 ({where}; each source's top {depth} passages min-max "
                f"normalised per query, then `{weight:g} x dense + {1 - weight:g} x BM25`). The same weight is saved "
                f"in the model folder's `metrics.json` (`fusion`), where `evaluate_rag.py` and `predict_rag.py` "
                f"read it.\n\n```python\n{hybrid_snippet(model, corpus, weight, depth)}```\n")
    elif kind == "reranker" and fusion.get("reranker_weight") is not None:
        weight, depth = float(fusion["reranker_weight"]), int(fusion.get("depth") or 20)
        first = fusion.get("first_stage") or "the first stage"
        text = (f"Reranker weight **{weight:g}** against the first stage ({first}; {where}; over its top {depth} "
                f"passages, both scores min-max normalised per query; 1 is the reranker alone). Saved in the model "
                f"folder's `metrics.json` (`fusion`).\n\n```python\n"
                f"{reranker_fusion_snippet(model, weight, depth)}```\n")
    else:
        return ""
    return text
