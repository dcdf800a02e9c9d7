"""predict_rag.py's run: a query file answered by one RAG pipeline, written in the format of the output's extension.

Per query row: the input's columns as they were, then ``retrieved_ids`` (ranked, as a ground-truth column writes
them: ``"15, 37, 2"``), ``retrieved_texts``, ``scores`` (the final score of each passage) and, with a generator,
``answer``. CSV and XLSX cells hold ``retrieved_texts`` as a JSON list and ``scores`` as ``"0.91, 0.88"``; JSONL
holds lists. Labels in the file (a ground-truth column, reference answers) are not used to predict; when present
they are scored with evaluate_rag.py's metrics.

Resuming: every expensive result is cached in ``--cache_dir`` as it is made (passage and query embeddings,
reranker scores every few thousand pairs, each answer as it arrives), so rerunning an interrupted command
recomputes nothing that was finished. Everything that can be wrong with the input is checked before anything is
written, a generator included (an endpoint that does not answer, a model that cannot be loaded).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ragtune.core.answer_metrics import bleu4, rouge_l, string_presence
from ragtune.core.data import Corpus, load_corpus
from ragtune.core.errors import UserError
from ragtune.core.io import write_json, write_xlsx
from ragtune.core.metrics import DEFAULT_KS, RANKING_METRICS, context_metrics, mean_metrics, query_metrics
from ragtune.generation.generators import EndpointOptions, GeneratorSettings
from ragtune.pipeline import Passage, RAGPipeline
from ragtune.pipeline.arguments import RERANK_TOP_N
from ragtune.pipeline.spec import read_evaluation
from ragtune.split import QueryFile, read_query_file

logger = logging.getLogger(__name__)

QUERY_FORMATS = (".csv", ".tsv", ".txt", ".xlsx", ".jsonl")
OUTPUT_FORMATS = (".csv", ".xlsx", ".jsonl")
PREDICTION_COLUMNS = ("retrieved_ids", "retrieved_texts", "scores", "answer")
# Queries answered between two progress updates (each answer is cached as it arrives, whatever this is).
ANSWER_CHUNK = 8
# Excel refuses longer cells.
XLSX_CELL_LIMIT = 32767


def default_cache_dir(output: str | Path) -> Path:
    """``predictions.xlsx`` -> ``predictions.cache/`` beside it: rerunning the same command finds it."""
    output = Path(output)
    return output.with_name(output.stem + ".cache")


def default_metrics_path(output: str | Path) -> Path:
    output = Path(output)
    return output.with_name(output.stem + ".metrics.json")


def read_queries(path: str | Path, flag: str = "--queries") -> QueryFile:
    """The query file's rows as written and, per row, its query (and labels when it has them)."""
    suffix = Path(path).suffix.lower()
    if suffix not in QUERY_FORMATS:
        raise UserError(f"{flag}: {path}: predict_rag.py reads {', '.join(QUERY_FORMATS)} query files, not "
                        f"'{suffix}'")
    return read_query_file(path, flag)


# ---------------------------------------------------------------------------- the pipeline


def build_pipeline(args: Any) -> RAGPipeline:
    """The pipeline the flags name: ``--from DIR --system NAME``, or the explicit model flags."""
    generator = GeneratorSettings.from_flags(args)
    endpoint = EndpointOptions.from_flags(args, workers=args.generator_workers)
    if args.from_dir:
        evaluation = read_evaluation(args.from_dir)
        evaluation.system(args.system)  # an unknown name is an error listing the names
        corpus = load_evaluated_corpus(args.corpus, evaluation.corpus)
        chosen: GeneratorSettings | bool = False if args.no_generator else generator or True
        return RAGPipeline.from_evaluation(args.from_dir, args.system, corpus=corpus, generator=chosen,
                                           endpoint=endpoint, expansions=args.expansions, cache_dir=args.cache_dir,
                                           device=args.device, batch_size=args.batch_size)
    return RAGPipeline.from_models(args.corpus, args.embedding_model, args.reranker_model, args.first_stage,
                                   dense_weight=args.dense_weight,
                                   rerank_top_n=args.rerank_top_n or RERANK_TOP_N,
                                   fuse_reranker=not args.no_reranker_fusion, expansions=args.expansions,
                                   generator=None if args.no_generator else generator, endpoint=endpoint,
                                   cache_dir=args.cache_dir, device=args.device, batch_size=args.batch_size or 32,
                                   max_seq_length=args.max_seq_length, reranker_max_length=args.reranker_max_length)


def load_evaluated_corpus(given: str | None, record: dict[str, Any]) -> Corpus | None:
    """``--corpus`` or the evaluated corpus file; redacted as the evaluation redacted it (``--pii redact``), so
    that the passages are the ones evaluated. None: let the pipeline say the corpus is missing."""
    if given is None and not (record.get("path") and Path(record["path"]).is_file()):
        return None
    corpus = load_corpus(given or record["path"])
    if record.get("pii") == "redact":
        from ragtune.audit import run_audit

        corpus = run_audit(corpus, [], [], policy="redact").corpus
        logger.info("The evaluation ran on a redacted copy of the corpus (--pii redact): so does this run")
    return corpus


# ---------------------------------------------------------------------------- predicting


@dataclass
class Predictions:
    """Per query: its passages, best first, and its answer (None without a generator)."""

    passages: list[list[Passage]]
    answers: list[str] | None
    answers_generated: int = 0
    answers_cached: int = 0


def predict(pipeline: RAGPipeline, queries: Sequence[str], k: int, progress: bool | None = None) -> Predictions:
    """Every query's top ``k`` (all queries at once: the embeddings and reranker pairs of the whole file are
    computed and cached together), then, with a generator, the answers ``ANSWER_CHUNK`` queries at a time."""
    from tqdm.auto import tqdm

    logger.info("Retrieving the top %d passages of %d queries with %s", k, len(queries), pipeline.name)
    passages = pipeline.retrieve_batch(queries, k)
    if pipeline.generator is None:
        return Predictions(passages, None)
    before = generated_count(pipeline.generator)
    answers: list[str] = []
    with tqdm(total=len(queries), desc="answer", unit="query", disable=None if progress is None else not progress) \
            as bar:
        for start in range(0, len(queries), ANSWER_CHUNK):
            chunk = slice(start, start + ANSWER_CHUNK)
            answers += [a.answer for a in pipeline.answer_batch(queries[chunk], k, passages[chunk])]
            bar.update(len(queries[chunk]))
    generated = generated_count(pipeline.generator) - before
    return Predictions(passages, answers, generated, len(queries) - generated)


def generated_count(generator: Any) -> int:
    """Answers the generator has generated so far (not read from the cache)."""
    return int(getattr(generator, "requests", 0))


# ---------------------------------------------------------------------------- the output file


def format_score(score: float) -> str:
    return f"{score:.6g}" if math.isfinite(score) else ""


def prediction_fields(passages: Sequence[Passage], answer: str | None, as_lists: bool) -> dict[str, Any]:
    """The columns added to a row: lists in JSONL, text cells in CSV/XLSX."""
    texts = [p.text for p in passages]
    scores = [p.score if math.isfinite(p.score) else None for p in passages]
    fields: dict[str, Any] = {
        "retrieved_ids": ", ".join(p.id for p in passages),
        "retrieved_texts": texts if as_lists else json.dumps(texts, ensure_ascii=False),
        "scores": scores if as_lists else ", ".join(format_score(p.score) for p in passages),
    }
    if answer is not None:
        fields["answer"] = answer
    return fields


def input_records(query_file: QueryFile) -> list[dict[str, Any]]:
    """The input rows as records with their original column names and values (empty cells as None)."""
    if isinstance(query_file.rows, list):  # JSONL lines as written
        return [json.loads(line) for line in query_file.rows]
    records = query_file.rows.to_dict(orient="records")
    return [{str(key): (None if value is None or (isinstance(value, float) and math.isnan(value)) else value)
             for key, value in record.items()} for record in records]


def write_predictions(path: str | Path, query_file: QueryFile, predictions: Predictions) -> Path:
    """The input rows plus the prediction columns, in the format of ``path``'s extension, written atomically."""
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    records = input_records(query_file)
    replaced = sorted({name for record in records for name in PREDICTION_COLUMNS if name in record})
    if replaced:
        logger.warning("--queries %s already has column(s) %s: replaced by the predictions", query_file.path,
                       ", ".join(replaced))
    answers = predictions.answers or [None] * len(records)
    rows = []
    for record, passages, answer in zip(records, predictions.passages, answers):
        kept = {key: value for key, value in record.items() if key not in PREDICTION_COLUMNS}
        rows.append({**kept, **prediction_fields(passages, answer, suffix == ".jsonl")})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if suffix == ".jsonl":
        tmp.write_text("".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows),
                       encoding="utf-8")
    elif suffix == ".xlsx":
        write_xlsx(pd.DataFrame(fit_cells(rows)), tmp)
    else:
        pd.DataFrame(rows).to_csv(tmp, index=False, encoding="utf-8-sig")  # a BOM: spreadsheets read it as UTF-8
    tmp.replace(path)
    return path


def fit_cells(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows whose text cells fit Excel's limit (longer ones cut, with a warning): Excel would refuse the file."""
    cut = 0
    for row in rows:
        for key, value in row.items():
            if isinstance(value, str) and len(value) > XLSX_CELL_LIMIT:
                row[key] = value[:XLSX_CELL_LIMIT - 1] + "…"
                cut += 1
    if cut:
        logger.warning("%d cell(s) longer than Excel's %d characters were cut in the XLSX output (use .jsonl or "
                       ".csv for the full texts)", cut, XLSX_CELL_LIMIT)
    return rows


# ---------------------------------------------------------------------------- labels


def score_predictions(query_file: QueryFile, predictions: Predictions, corpus: Corpus,
                      k: int) -> dict[str, Any] | None:
    """evaluate_rag.py's metrics over the rows that carry labels: ranking and ID-based context metrics at the
    cutoffs up to ``k``, and with answers and reference answers string presence, ROUGE-L and BLEU-4. None when
    the file has no labels."""
    ks = sorted({c for c in DEFAULT_KS if c <= k} | {k})
    labelled = [i for i, q in enumerate(query_file.queries) if q.relevant_ids]
    out: dict[str, Any] = {}
    if labelled:
        unknown = sorted({pid for i in labelled for pid in query_file.queries[i].relevant_ids
                          if pid not in corpus.index_of})
        if unknown:
            logger.warning("--queries: %d labelled id(s) are not in the corpus (%s): they count as misses",
                           len(unknown), ", ".join(unknown[:10]))
        per_query = []
        for i in labelled:
            ids, relevant = [p.id for p in predictions.passages[i]], query_file.queries[i].relevant_ids
            per_query.append({**query_metrics(ids, relevant, ks, RANKING_METRICS), **context_metrics(ids, relevant,
                                                                                                     ks)})
        out.update({"queries_scored": len(labelled), "k": ks, "retrieval": mean_metrics(per_query)})
    with_reference = [i for i, q in enumerate(query_file.queries) if q.answer]
    if predictions.answers is not None and with_reference:
        answers = [predictions.answers[i] for i in with_reference]
        references = [query_file.queries[i].answer for i in with_reference]
        out["answers"] = {"queries_scored": len(with_reference),
                          "string_presence": sum(map(string_presence, answers, references)) / len(answers),
                          "rouge_l": sum(map(rouge_l, answers, references)) / len(answers),
                          "bleu4": bleu4(answers, references)}
    return out or None


def metrics_table(metrics: dict[str, Any]) -> str:
    """The final table predict_rag.py prints: each metric at each cutoff, and the answer metrics."""
    lines = []
    if "retrieval" in metrics:
        ks, values = metrics["k"], metrics["retrieval"]
        names = [*RANKING_METRICS, "context_precision", "context_recall"]
        lines.append(f"{'metric':<18}" + "".join(f"{'@' + str(k):>9}" for k in ks))
        lines += [f"{name:<18}" + "".join(f"{values[f'{name}@{k}']:>9.4f}" for k in ks) for name in names]
        lines.append(f"({metrics['queries_scored']} labelled queries)")
    if "answers" in metrics:
        answers = metrics["answers"]
        lines.append("answers: " + ", ".join(f"{name} {answers[name]:.4f}" for name in
                                             ("string_presence", "rouge_l", "bleu4"))
                     + f" ({answers['queries_scored']} queries with a reference answer)")
    return "\n".join(lines)


def write_metrics(path: str | Path, metrics: dict[str, Any], pipeline: RAGPipeline) -> None:
    write_json(path, {"system": pipeline.name, "kind": pipeline.spec.kind, **metrics})
