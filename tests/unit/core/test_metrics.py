"""ragtune.core.metrics against trec_eval (pytrec_eval) on hand-made and random rankings, ties included."""

from __future__ import annotations

import random

import numpy as np
import pytest
from trec_reference import KS, trec_metrics, trec_order

from ragtune.core.metrics import (
    RANKING_METRICS,
    context_metrics,
    first_hit_rank,
    mean_metrics,
    query_metrics,
    rank_weighted_precision,
)
from ragtune.core.ranking import TopK, rank_by_score, tie_ranks

# Hand-made queries: {query: (scores per document, relevant documents)}. Ties on purpose, several
# relevant passages, a relevant passage never retrieved, a run shorter than k, no hit at all.
HAND_MADE = {
    "ties_at_top": ({"d1": 0.5, "d2": 0.5, "d3": 0.5, "d4": 0.9, "d5": 0.1, "d6": 0.1, "d7": 0.0, "d8": 0.0},
                    {"d1", "d3"}),
    "tie_across_cut": ({"15": 0.8, "37": 0.7, "4": 0.7, "63": 0.7, "100": 0.7, "2": 0.1, "9": 0.1, "11": 0.05},
                       {"4", "100", "9"}),
    "several_relevant": ({f"p{i}": 1.0 - i / 20 for i in range(12)}, {"p0", "p2", "p5", "p9", "p11"}),
    "relevant_not_retrieved": ({"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.5, "e": 0.4, "f": 0.3, "g": 0.2, "h": 0.1},
                               {"b", "zzz"}),
    "short_run": ({"x1": 0.3, "x2": 0.2, "x3": 0.2}, {"x3", "x9"}),
    "no_hit": ({f"n{i}": float(i % 3) for i in range(10)}, {"missing"}),
    "all_tied": ({f"t{i}": 1.0 for i in range(9)}, {"t0", "t8", "t4"}),
    "numeric_ids_string_order": ({"9": 1.0, "10": 1.0, "100": 1.0, "2": 1.0, "20": 0.5}, {"2", "100"}),
}


def ours(run, qrels, ks=KS):
    out = {}
    for q, docs in run.items():
        ranked = rank_by_score(list(docs), list(docs.values()))
        out[q] = query_metrics(ranked, [d for d, r in qrels[q].items() if r > 0], ks)
    return out


def assert_same(mine: dict, theirs: dict) -> None:
    for q in theirs:
        for key, value in theirs[q].items():
            assert mine[q][key] == pytest.approx(value, abs=1e-12), f"{q} {key}: ours {mine[q][key]}, trec {value}"


def test_hand_made_rankings_match_trec_eval():
    run = {q: scores for q, (scores, _) in HAND_MADE.items()}
    qrels = {q: {d: 1 for d in rel} for q, (_, rel) in HAND_MADE.items()}
    assert_same(ours(run, qrels), trec_metrics(run, qrels))


def test_hand_made_values_by_hand():
    # ties_at_top: trec order d4 (0.9), then the 0.5 tie by id descending: d3, d2, d1.
    scores, rel = HAND_MADE["ties_at_top"]
    ranked = rank_by_score(list(scores), list(scores.values()))
    assert ranked[:4] == ["d4", "d3", "d2", "d1"]
    m = query_metrics(ranked, rel, (3,))
    assert m["hit@3"] == 1.0
    assert m["precision@3"] == pytest.approx(1 / 3)
    assert m["recall@3"] == pytest.approx(1 / 2)
    assert m["mrr@3"] == pytest.approx(1 / 2)
    assert m["map@3"] == pytest.approx((1 / 2) / 2)
    assert m["ndcg@3"] == pytest.approx((1 / np.log2(3)) / (1 + 1 / np.log2(3)))
    # String order, not numeric: "9" > "20" > "2" > "100" > "10".
    scores, _ = HAND_MADE["numeric_ids_string_order"]
    assert rank_by_score(list(scores), list(scores.values())) == ["9", "2", "100", "10", "20"]


@pytest.mark.parametrize("seed", range(5))
def test_random_rankings_with_ties_match_trec_eval(seed):
    rng = random.Random(seed)
    run, qrels = {}, {}
    for q in range(40):
        n_docs = rng.randint(2, 25)
        docs = [str(rng.randint(1, 60)) for _ in range(n_docs)]
        docs = list(dict.fromkeys(docs))
        # Scores on a coarse grid: many ties, some across the k cutoffs.
        run[f"q{q}"] = {d: round(rng.random() * 4) / 4 for d in docs}
        relevant = rng.sample(docs, rng.randint(1, min(5, len(docs))))
        if rng.random() < 0.3:
            relevant.append("999")  # relevant but never retrieved
        qrels[f"q{q}"] = {d: 1 for d in relevant}
    mine = ours(run, qrels)
    assert_same(mine, trec_metrics(run, qrels))
    # The macro average is trec_eval's "all" line.
    rankings = [rank_by_score(list(run[q]), list(run[q].values())) for q in run]
    means = mean_metrics([query_metrics(r, list(qrels[q])) for r, q in zip(rankings, run)])
    for key in means:
        assert means[key] == pytest.approx(np.mean([mine[q][key] for q in run]))


def test_metric_names_and_first_hit():
    m = query_metrics(["a", "b", "c"], {"c"}, (1, 2, 3))
    assert set(m) == {f"{n}@{k}" for n in RANKING_METRICS for k in (1, 2, 3)}
    assert first_hit_rank(["a", "b", "c"], {"c"}) == 3
    assert first_hit_rank(["a"], {"z"}) is None


# ---------------------------------------------------------------------------- context metrics (ID-based)


def test_context_precision_is_ragas_formula_with_labels():
    # verdicts 1,0,1: (1/1 + 2/3) / 2
    assert rank_weighted_precision([1, 0, 1]) == pytest.approx((1 + 2 / 3) / 2)
    assert rank_weighted_precision([0, 0, 0]) == 0.0
    m = context_metrics(["a", "x", "b", "y", "c"], {"a", "b", "c", "d"}, (3, 5))
    assert m["context_precision@3"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["context_precision@5"] == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    assert m["context_recall@3"] == pytest.approx(2 / 4)
    assert m["context_recall@5"] == pytest.approx(3 / 4)
    # Differs from trec's AP@k, which divides by R (4) rather than the hits in the top k.
    assert query_metrics(["a", "x", "b", "y", "c"], {"a", "b", "c", "d"}, (5,))["map@5"] == pytest.approx(
        (1 + 2 / 3 + 3 / 5) / 4)


# ---------------------------------------------------------------------------- chunked top-k = trec order


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
def test_chunked_top_k_equals_full_sort_in_trec_order(chunk):
    rng = np.random.default_rng(chunk)
    ids = [str(i) for i in rng.permutation(200)[:40]]
    scores = np.round(rng.random((12, len(ids))) * 3) / 3  # heavy ties
    scores[0] = 0.0  # every passage tied
    ranks = tie_ranks(ids)
    for k in (1, 5, 7, 40):
        top = TopK(len(scores), k, ranks)
        for start in range(0, len(ids), chunk):
            for q0 in range(0, len(scores), 5):
                top.update(q0, start, scores[q0:q0 + 5, start:start + chunk])
        idx, _ = top.result()
        for q in range(len(scores)):
            expected = trec_order(ids, scores[q])[:k]
            assert [ids[i] for i in idx[q]] == expected
            assert rank_by_score(ids, scores[q])[:k] == expected
