"""Which models evaluate_rag.py publishes: the best fine-tuned one, against its baseline, and when it is a regression."""

from __future__ import annotations

from ragtune.evaluate.publishing import select_for_publishing
from ragtune.evaluate.systems import System


def _system(name, kind, emb=None, rr=None, ndcg=0.5):
    return System(name=name, kind=kind, embedding_model=emb, reranker_model=rr, metrics={"ndcg@5": ndcg})


def test_select_for_publishing():
    systems = [_system("bm25", "bm25", ndcg=0.4), _system("base", "dense", "base", ndcg=0.5),
               _system("ft1", "dense", "ft1", ndcg=0.7), _system("ft2", "dense", "ft2", ndcg=0.6),
               _system("base+r0", "rerank", "base", "r0", 0.9), _system("ft1+r0", "rerank", "ft1", "r0", 0.75),
               _system("ft1+r1", "rerank", "ft1", "r1", 0.8), _system("ft1+r2", "rerank", "ft1", "r2", 0.72),
               _system("ft2+r0", "rerank", "ft2", "r0", 0.65)]
    sel = select_for_publishing(systems, ["base", "ft1", "ft2"], ["r0", "r1", "r2"], "ndcg@5")
    assert sel["embedding"].model == "ft1" and sel["embedding"].baseline.name == "base"
    assert not sel["embedding"].regression
    # Rerankers are compared on top of the best embedding model (ft1), not on the base.
    assert sel["reranker"].model == "r1" and sel["reranker"].baseline.name == "ft1+r0"
    assert not sel["reranker"].regression
    # A fine-tuned model below its base is a regression.
    sel = select_for_publishing(systems, ["ft1", "ft2"], ["r1", "r2"], "ndcg@5")
    assert sel["embedding"].model == "ft2" and sel["embedding"].regression
    assert sel["reranker"].model == "r2" and sel["reranker"].regression
    # A single entry is published as is, judged against BM25 / the embedding model alone.
    systems[0].metrics["ndcg@5"] = 0.99
    sel = select_for_publishing(systems, ["ft2"], ["r0"], "ndcg@5")
    assert sel["embedding"].baseline.name == "bm25" and sel["reranker"].baseline.name == "ft2"
    # ...and it is not a regression: BM25 is not its base (it is only shown on the card).
    assert sel["embedding"].below_baseline and not sel["embedding"].regression
    assert not sel["reranker"].regression
