#!/usr/bin/env python
"""Run the RAG system you chose on new questions: retrieved passages (and answers) for every query of a file.

    python predict_rag.py --from outputs/eval --system best --queries test_data.xlsx --output predictions.xlsx

--from DIR --system NAME rebuilds a system exactly as evaluate_rag.py evaluated it in DIR (its systems.json:
first stage, models, fusion weights and depths, reranker top N, query expansion, generator); --system best is
the best system of that evaluation by its main metric. Instead of --from, name the models: --embedding_model,
--reranker_model, --generator_local (+ --generator_adapter) or --generator_base_url/--generator_model; fusion
weights are then the ones the training scripts saved in the model folders.

The output (CSV, XLSX or JSONL, by --output's extension) holds the query file's columns as they were, then
retrieved_ids ("15, 37, 2", as a ground-truth column), retrieved_texts, scores and, with a generator, answer.
Labels in the query file are not used to predict; when present they are scored with evaluate_rag.py's metrics
(printed, and written to <output>.metrics.json). Everything is cached in --cache_dir as it is computed: an
interrupted run resumes where it stopped when the same command is run again.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

from ragtune.core.cli import new_parser
from ragtune.core.data import SAMPLE_TEST
from ragtune.core.errors import UserError, run_main
from ragtune.core.io import setup_logging
from ragtune.core.output_lock import OutputDirLock
from ragtune.pipeline.arguments import (
    add_generator_args,
    add_run_args,
    add_system_args,
    check_pipeline_paths,
    validate_pipeline_args,
)
from ragtune.predict import (
    OUTPUT_FORMATS,
    build_pipeline,
    default_cache_dir,
    default_metrics_path,
    metrics_table,
    predict,
    read_queries,
    score_predictions,
    write_metrics,
    write_predictions,
)

logger = logging.getLogger("predict_rag")


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__)
    data = parser.add_argument_group("queries and output")
    data.add_argument("--queries", default=str(SAMPLE_TEST),
                      help="Query file (CSV/TSV/XLSX/JSONL) with a Query (or query) column; other columns are copied "
                           "to the output, labels (Ground truth document / relevant_ids, answers) scored.")
    data.add_argument("--output", default="outputs/predictions.csv",
                      help=f"Predictions file; its extension ({', '.join(OUTPUT_FORMATS)}) sets the format.")
    data.add_argument("--k", type=int, default=5, help="Passages retrieved per query (and given to the generator).")
    add_system_args(parser)
    add_generator_args(parser)
    add_run_args(parser, cache_help="Embeddings, reranker scores and answers, kept as they are computed (a rerun "
                                    "resumes from them). Default: <output name>.cache beside --output.")
    return parser


def validate_args(args: argparse.Namespace) -> None:
    """Every flag checked, and the default paths filled in, before any file is read."""
    validate_pipeline_args(args)
    if Path(args.output).suffix.lower() not in OUTPUT_FORMATS:
        raise UserError(f"--output {args.output}: give a file ending in {', '.join(OUTPUT_FORMATS)} (the format)")
    if Path(args.output).is_dir():
        raise UserError(f"--output {args.output} is a folder; give a file")
    args.cache_dir = args.cache_dir or str(default_cache_dir(args.output))
    args.metrics_output = str(default_metrics_path(args.output))
    check_pipeline_paths(args, outputs=("output", "cache_dir", "metrics_output"))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(quiet=("sentence_transformers", "transformers"))
    validate_args(args)
    # The queries, the system and its generator are checked before anything is written.
    query_file = read_queries(args.queries)
    pipeline = build_pipeline(args)
    pipeline.check_generator(query_file.queries[0].query)
    with OutputDirLock(args.cache_dir, flag="--cache_dir"):  # one run per cache
        predictions = predict(pipeline, [q.query for q in query_file.queries], args.k)
        write_predictions(args.output, query_file, predictions)
        if predictions.answers is not None:
            logger.info("Answers: %d generated, %d from the cache (%s)", predictions.answers_generated,
                        predictions.answers_cached, args.cache_dir)
        metrics = score_predictions(query_file, predictions, pipeline.corpus, args.k)
        if metrics:
            write_metrics(args.metrics_output, metrics, pipeline)
    logger.info("Wrote %d predictions of %s to %s", len(query_file), pipeline.name, args.output)
    if metrics:
        print(f"\n{pipeline.name}, labels of {args.queries} (also in {args.metrics_output}):\n")
        print(metrics_table(metrics) + "\n")
    return 0


if __name__ == "__main__":
    run_main(main)
