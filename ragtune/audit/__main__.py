"""The data audit as a command, without training.

    python -m ragtune.audit --corpus C --train_data T [--test_data D] [--report audit.md] [--pii warn]

Audits the data on its own, without training: exit 0 when the audit ran (findings are warnings),
2 on a user error or when ``--pii error`` finds personal information.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import Sequence

from ragtune.audit import add_audit_args, find_leakage, run_audit, write_audit_report
from ragtune.core.cli import new_parser
from ragtune.core.data import load_corpus, load_queries, split_queries
from ragtune.core.errors import run_main
from ragtune.core.io import write_json
from ragtune.core.output_paths import check_args_paths

logger = logging.getLogger("ragtune")


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(__doc__.splitlines()[0])
    parser.prog = "python -m ragtune.audit"
    parser.add_argument("--corpus", required=True, help="Passages (CSV/XLSX/JSONL).")
    parser.add_argument("--train_data", required=True, help="Training queries (CSV/XLSX/JSONL).")
    parser.add_argument("--test_data", default=None, help="Held-out queries checked for leakage from --train_data.")
    parser.add_argument("--dev_ratio", type=float, default=0.0,
                        help="Also report what a seeded dev split of --train_data of this share would leak "
                             "(the fine-tuning scripts' default is 0.2).")
    parser.add_argument("--seed", type=int, default=42, help="Seed of that dev split (as in the scripts).")
    parser.add_argument("--summary_json", default=None, help="Write the JSON summary (no personal values) here.")
    add_audit_args(parser, report_flag="--report")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    args = build_parser().parse_args(argv)
    check_args_paths(args, outputs=("report", "summary_json"))
    corpus = load_corpus(args.corpus, "--corpus")
    train = load_queries(args.train_data, corpus, "--train_data")
    test = load_queries(args.test_data, corpus, "--test_data") if args.test_data else []
    sources = {"corpus": args.corpus, "train": args.train_data}
    if args.test_data:
        sources["test"] = args.test_data
    result = run_audit(corpus, train, test, policy=args.pii, sources=sources)
    summary = result.summary()
    if args.dev_ratio > 0:
        fit, dev = split_queries(result.train, args.dev_ratio, args.seed)
        leaked = find_leakage(fit, dev)
        summary["dev_split"] = {"dev_ratio": args.dev_ratio, "seed": args.seed, "dev_queries": len(dev),
                                "leaked_dev_queries": len({p.test_index for p in leaked}), "pairs": len(leaked)}
        logger.info("a %.0f%% dev split (seed %d) would leak %d of %d dev queries", 100 * args.dev_ratio, args.seed,
                    summary["dev_split"]["leaked_dev_queries"], len(dev))
    write_audit_report(result, args.report)
    if args.summary_json:
        write_json(args.summary_json, summary)
    print(json.dumps(summary, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    run_main(main)
