"""Dev metrics of the reranker during training."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence
import numpy as np
import torch
from ragtune.core.data import Corpus, LabelledQuery
from ragtune.train.evaluator import DevMetricsEvaluator
from ragtune.core.fusion import choose_weight, fuse_all, ranking
from ragtune.core.metrics import DEFAULT_KS, TRAINING_METRICS, mean_metrics, query_metrics
from ragtune.core.ranking import rerank_order


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
        return mean_metrics([query_metrics(r, q.relevant_ids, self.ks, self.names)
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

    def fusion_on_dev(self, model, metric: str | None = None) -> tuple[float, dict[str, float]]:
        """(reranker weight chosen on these dev queries by ``metric``, dev metrics of the fused ranking).

        Weight 1 is the reranker alone, 0 the first stage alone. The weight is chosen and reported on
        the same dev queries, so the fused dev numbers are a little optimistic; the test set never
        takes part.
        """
        metric = (metric or self.primary_metric).removeprefix(f"{self.name}_")  # "dev_ndcg@5" -> "ndcg@5"
        reranker_runs = self.scores(model)
        weight, _ = choose_weight(reranker_runs, self.first_stage_scores, [q.relevant_ids for q in self.queries],
                                  metric)
        fused = fuse_all(reranker_runs, self.first_stage_scores, weight)
        return weight, self.metrics_of([ranking(run) for run in fused])

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


def append_dev_metrics_to_card(output_dir: str | Path, table: str, description: str) -> None:
    """Add the first stage / base / fine-tuned dev table to the model card (README.md) the trainer wrote.

    It goes before the card's "Training Details" section (right after its own evaluation section), or at
    the end of a card without one.
    """
    card = Path(output_dir) / "README.md"
    text = card.read_text(encoding="utf-8") if card.exists() else ""
    section = f"## Dev metrics: first stage, base and fine-tuned reranker\n\n{description}\n\n```\n{table}\n```\n\n"
    anchor = "\n## Training Details"
    if anchor in text:
        head, _, tail = text.partition(anchor)
        text = f"{head.rstrip()}\n\n{section}{anchor.lstrip()}{tail}"
    else:
        text = f"{text.rstrip()}\n\n{section}".lstrip()
    card.write_text(text, encoding="utf-8")

