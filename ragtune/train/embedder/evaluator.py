"""Dev retrieval metrics of the embedding model: during training, at the end, and as a hybrid with BM25."""

from __future__ import annotations

from typing import Any, Sequence

from ragtune.core.data import Corpus, LabelledQuery
from ragtune.core.metrics import DEFAULT_KS, TRAINING_METRICS, query_metrics
from ragtune.core.ranking import dense_top_k, tie_ranks
from ragtune.core.significance import MeansWithQueries
from ragtune.retrieval.encoding import encode_passages, encode_queries
from ragtune.retrieval.first_stage import FirstStage
from ragtune.train.evaluator import DevMetricsEvaluator, cutoffs_note, evaluated_final_metrics
from ragtune.train.outputs import format_metrics_table


class DevRetrievalEvaluator(DevMetricsEvaluator):
    """hit/recall/MRR/nDCG at k on the dev queries, over the full corpus, with trec_eval's definitions.

    Why not ``InformationRetrievalEvaluator``: its MAP divides by min(k, R) rather than R, and we
    want the dev numbers computed exactly as ``evaluate_rag.py`` computes them.
    """

    def __init__(self, corpus: Corpus, queries: Sequence[LabelledQuery], ks: Sequence[int] = DEFAULT_KS,
                 names: Sequence[str] = TRAINING_METRICS, name: str = "dev", batch_size: int = 32,
                 primary_metric: str = "ndcg@5") -> None:
        super().__init__()
        self.corpus = corpus
        self.queries = list(queries)
        self.ks = tuple(ks)
        self.names = tuple(names)
        self.name = name
        self.batch_size = batch_size
        self.primary_metric = primary_metric

    def compute(self, model) -> dict[str, float]:
        q_emb = encode_queries(model, [q.query for q in self.queries], batch_size=self.batch_size)
        p_emb = encode_passages(model, self.corpus.texts, batch_size=self.batch_size)
        idx, _ = dense_top_k(q_emb, p_emb, max(self.ks), tie_ranks(self.corpus.ids))  # evaluate_rag.py's top-k
        per_query = [query_metrics([self.corpus.ids[i] for i in row], q.relevant_ids, self.ks, self.names)
                     for row, q in zip(idx, self.queries)]
        return MeansWithQueries(per_query)  # the card's intervals need the per-query values

    def get_config_dict(self) -> dict[str, Any]:
        return {"ks": list(self.ks), "queries": len(self.queries), "passages": len(self.corpus)}



def final_dev_metrics(evaluator: DevRetrievalEvaluator | None, model, trainer) -> dict[str, float]:
    """The fine-tuned model's dev metrics: the best checkpoint's from the training log, or computed on the main
    process (under DDP the other ranks encode their share) when that model was not evaluated in this history."""
    from sentence_transformers.util.distributed import distributed_evaluation

    if evaluator is None:
        return {}
    if evaluated_final_metrics(trainer.state, f"eval_{evaluator.name}_") is not None:  # the same on every rank
        return evaluator.final_metrics(model, trainer.state)
    with distributed_evaluation(model) as run_evaluator:
        return evaluator.final_metrics(model, trainer.state) if run_evaluator else {}


def hybrid_on_dev(corpus: Corpus, model, dev_queries: Sequence[LabelledQuery], metric: str, rule: str
                  ) -> tuple[dict[str, Any], dict[str, float], dict[str, float]]:
    """The hybrid first stage (BM25 + this model) on the dev queries: its fusion record, its metrics, BM25's.

    The dense weight is chosen on the dev queries by ``rule`` at the hybrid's own candidate depth and saved
    in metrics.json with that depth, so that evaluate_rag.py fuses exactly as chosen, never on its test set.
    """
    stage = FirstStage(corpus, model, kind="hybrid")
    choice = stage.choose_fusion(dev_queries, metric, rule)
    k = max(DEFAULT_KS)
    texts = [q.query for q in dev_queries]
    hybrid, bm25 = (MeansWithQueries([query_metrics(ranked, q.relevant_ids, DEFAULT_KS, TRAINING_METRICS)
                                  for ranked, q in zip(stage.rankings(texts, k, kind), dev_queries)])
                    for kind in ("hybrid", "bm25"))
    fusion = {**stage.fusion.record(), **choice.record(), "chosen_on": "dev", "dev_queries": len(dev_queries)}
    return fusion, hybrid, bm25


def dev_table(dev_queries: int, bm25: dict[str, float], before: dict[str, float], after: dict[str, float],
              fusion: dict[str, Any] | None, hybrid: dict[str, float], ks: Sequence[int] = DEFAULT_KS) -> str:
    """The printed dev table: BM25, the base and fine-tuned model, and the hybrid, marked as tuned on these queries;
    ``ks``: the cutoffs shown (:func:`ragtune.train.evaluator.console_cutoffs`)."""
    columns = {"BM25": bm25, "base": before, "fine-tuned": after}
    if hybrid:
        columns[f"hybrid (dense weight {fusion['dense_weight']:.1f}; tuned here: optimistic)"] = hybrid
    return (f"Dev metrics ({dev_queries} held-out queries){cutoffs_note(ks)}:\n"
            + format_metrics_table({k: v for k, v in columns.items() if v}, TRAINING_METRICS, tuple(ks)))
