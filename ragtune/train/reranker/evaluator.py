"""The reranker's dev metrics: reranking the first stage's candidates during training, at the end, and fused."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.fusion import DEFAULT_WEIGHT_RULE, WeightChoice, choose_weight, fuse_all, ranking
from ragtune.core.metrics import DEFAULT_KS, TRAINING_METRICS, query_metrics
from ragtune.core.ranking import rerank_order
from ragtune.core.significance import MeansWithQueries
from ragtune.train.evaluator import DevMetricsEvaluator, cutoffs_note
from ragtune.train.outputs import format_metrics_table

logger = logging.getLogger(__name__)


class DevRerankingEvaluator(DevMetricsEvaluator):
    """hit/recall/MRR/nDCG at k of the reranked first-stage top-N on the dev queries (trec_eval definitions).

    The candidate lists are fixed (computed once, before training), so the first stage's own metrics
    are computed once too (:attr:`first_stage_metrics`); each call only scores the (query, candidate)
    pairs. Rankings are by raw logit (no sigmoid, so no ties from saturation); equal scores keep the
    first-stage order. A query whose relevant passages are not among its candidates scores 0.

    Why not ``CrossEncoderRerankingEvaluator``: its MAP has no cutoff and it reports MRR/nDCG only at
    one k; we want the same definitions as ``evaluate_rag.py`` at every k.

    :meth:`fusion_on_dev` also fuses the reranker's score with the first stage's
    (``first_stage_scores``, one ``{id: score}`` per query; the candidates' rank order when not
    given) and picks the reranker's weight on these dev queries.
    """

    def __init__(self, corpus: Corpus, queries: Sequence[LabelledQuery], candidates: Sequence[Sequence[str]],
                 ks: Sequence[int] = DEFAULT_KS, names: Sequence[str] = TRAINING_METRICS, name: str = "dev",
                 batch_size: int = 32, primary_metric: str = "ndcg@5",
                 first_stage_scores: Sequence[dict[str, float]] | None = None) -> None:
        super().__init__()
        if len(candidates) != len(queries):
            raise ValueError(f"{len(candidates)} candidate lists for {len(queries)} queries")
        self.queries = list(queries)
        self.candidates = [list(c) for c in candidates]
        # Without scores, the first stage's order is its score (best first, evenly spaced).
        self.first_stage_scores = [{pid: float(run[pid]) for pid in cands} for run, cands in
                                   zip(first_stage_scores, self.candidates)] if first_stage_scores else \
            [{pid: -float(i) for i, pid in enumerate(cands)} for cands in self.candidates]
        self.ks = tuple(ks)
        self.names = tuple(names)
        self.name = name
        self.batch_size = batch_size
        self.primary_metric = primary_metric
        self.pairs = [(q.query, corpus.text(pid)) for q, cands in zip(self.queries, self.candidates) for pid in cands]
        self.first_stage_metrics = self.metrics_of(self.candidates)
        self.candidate_recall = float(np.mean([
            len(set(c) & set(q.relevant_ids)) / len(set(q.relevant_ids)) for q, c in zip(self.queries, self.candidates)
        ])) if self.queries else 0.0

    def metrics_of(self, rankings: Sequence[Sequence[str]]) -> dict[str, float]:
        return MeansWithQueries([query_metrics(r, q.relevant_ids, self.ks, self.names)
                             for r, q in zip(rankings, self.queries)])

    def scores(self, model) -> list[dict[str, float]]:
        """The reranker's raw logit of every candidate, per query."""
        scores = model.predict(self.pairs, batch_size=self.batch_size, show_progress_bar=False,
                               activation_fn=torch.nn.Identity(), convert_to_numpy=True)
        runs, start = [], 0
        for cands in self.candidates:
            runs.append({pid: float(x) for pid, x in zip(cands, scores[start:start + len(cands)])})
            start += len(cands)
        return runs

    def fusion_on_dev(self, model, metric: str | None = None, rule: str = DEFAULT_WEIGHT_RULE
                      ) -> tuple[WeightChoice, dict[str, float]]:
        """(reranker weight chosen on these dev queries by ``rule`` on ``metric``, dev metrics of the fused ranking).

        Weight 1 is the reranker alone, 0 the first stage alone; both are fused over the same candidates,
        the first stage's top N. The weight is chosen and reported on the same dev queries, so the fused
        dev numbers are optimistic; the test set never takes part.
        """
        metric = (metric or self.primary_metric).removeprefix(f"{self.name}_")  # "dev_ndcg@5" -> "ndcg@5"
        reranker_runs = self.scores(model)
        choice = choose_weight(reranker_runs, self.first_stage_scores, [q.relevant_ids for q in self.queries],
                               metric, rule=rule)
        fused = fuse_all(reranker_runs, self.first_stage_scores, choice.weight)
        return choice, self.metrics_of([ranking(run) for run in fused])

    def rerank(self, model) -> list[list[str]]:
        scores = model.predict(self.pairs, batch_size=self.batch_size, show_progress_bar=False,
                               activation_fn=torch.nn.Identity(), convert_to_numpy=True)
        rankings, start = [], 0
        for cands in self.candidates:
            s = scores[start:start + len(cands)]
            start += len(cands)
            rankings.append([cands[i] for i in rerank_order(s)])
        return rankings

    def compute(self, model) -> dict[str, float]:
        return self.metrics_of(self.rerank(model))

    def get_config_dict(self) -> dict[str, Any]:
        return {"ks": list(self.ks), "queries": len(self.queries),
                "candidates_per_query": max((len(c) for c in self.candidates), default=0)}




def dev_evaluator(data, mined, args, batch_size: int) -> DevRerankingEvaluator:
    """The evaluator over the dev queries' first-stage candidates (``--rerank_top_n`` of ``mined``)."""
    evaluator = DevRerankingEvaluator(data.corpus, data.dev, mined.dev_candidates, batch_size=batch_size,
                                      primary_metric=args.metric_for_best_model, first_stage_scores=mined.dev_scores)
    logger.info("Dev: reranking the top %d of %s; %.1f%% of the relevant passages are among them (the ceiling "
                "for recall)", args.rerank_top_n, mined.first_stage, 100 * evaluator.candidate_recall)
    return evaluator


def final_dev_metrics(evaluator: DevRerankingEvaluator | None, model, trainer) -> dict[str, float]:
    """The fine-tuned reranker's dev metrics (metric names without the ``dev_`` prefix): the best checkpoint's from
    the training log, computed again only when that model was not evaluated in this history."""
    return evaluator.final_metrics(model, trainer.state) if evaluator else {}


def fusion_record(evaluator: DevRerankingEvaluator, model, mined, metric: str, rule: str
                  ) -> tuple[dict[str, Any], dict[str, float]]:
    """The reranker fused with its first stage on dev: the record saved in metrics.json, and its dev metrics.

    The final score mixes the reranker's and the first stage's (normalised over the first stage's top N,
    the ``depth`` saved with the weight), with the weight chosen on dev by ``rule`` and saved, so that
    evaluate_rag.py fuses exactly as chosen; weight 1 is the reranker alone.
    """
    choice, fused = evaluator.fusion_on_dev(model, metric, rule)
    fusion = {"first_stage": mined.first_stage, "first_stage_fusion": mined.fusion,
              "reranker_weight": choice.weight, "depth": max((len(c) for c in evaluator.candidates), default=0),
              **choice.record(), "chosen_on": "dev", "dev_queries": len(evaluator.queries)}
    return fusion, fused


@dataclass
class DevReport:
    """The reranker's dev numbers side by side: first stage, base reranker, fine-tuned, fused."""

    first_stage: str
    rerank_top_n: int
    base_model: str
    dev_queries: int
    first_stage_metrics: dict[str, float]
    bm25: dict[str, float]
    before: dict[str, float]
    after: dict[str, float]
    fusion: dict[str, Any] | None = None
    fused: dict[str, float] = field(default_factory=dict)

    def dev_metrics(self) -> dict[str, dict[str, float]]:
        return {"bm25": self.bm25, "first_stage": self.first_stage_metrics, "before": self.before,
                "after": self.after, **({"fused": self.fused} if self.fused else {})}

    def table(self, ks: Sequence[int] = DEFAULT_KS) -> str:
        columns = {"BM25": self.bm25} if self.first_stage != "bm25" else {}
        columns.update({f"first stage ({self.first_stage})": self.first_stage_metrics, "base reranker": self.before,
                        "fine-tuned": self.after})
        if self.fused:
            columns[f"fused (reranker weight {self.fusion['reranker_weight']:.1f}; tuned here: optimistic)"] = \
                self.fused
        return format_metrics_table(columns, TRAINING_METRICS, tuple(ks))

    def console_table(self, ks: Sequence[int] = DEFAULT_KS) -> str:
        """``ks``: the cutoffs shown (:func:`ragtune.train.evaluator.console_cutoffs`); the card shows every one."""
        return (f"Dev metrics ({self.dev_queries} held-out queries, top {self.rerank_top_n} of {self.first_stage} "
                f"reranked){cutoffs_note(ks)}:\n{self.table(ks)}")
