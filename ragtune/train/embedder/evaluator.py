"""Dev retrieval metrics during training."""

from __future__ import annotations

from typing import Any, Sequence
from ragtune.core.data import Corpus, LabelledQuery
from ragtune.train.evaluator import DevMetricsEvaluator
from ragtune.core.metrics import DEFAULT_KS, TRAINING_METRICS, query_metrics, mean_metrics
from ragtune.core.ranking import dense_top_k, tie_ranks
from ragtune.retrieval.encoding import encode_passages, encode_queries


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
        return mean_metrics(per_query)

    def get_config_dict(self) -> dict[str, Any]:
        return {"ks": list(self.ks), "queries": len(self.queries), "passages": len(self.corpus)}

