"""ragtune.train.reranker: examples, the first stage and its fusion, the dev evaluator, batching, loading."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN, LabelledQuery, load_corpus, load_queries
from ragtune.core.metrics import DEFAULT_KS, TRAINING_METRICS
from ragtune.retrieval.negatives import NegativeCandidates

METRIC_KEYS = {f"{m}@{k}" for m in TRAINING_METRICS for k in DEFAULT_KS}


@pytest.fixture(scope="module")
def sample():
    corpus = load_corpus(SAMPLE_CORPUS)
    return corpus, load_queries(SAMPLE_TRAIN, corpus)


# ---------------------------------------------------------------------------- examples (no model)


def _check_examples(queries, corpus, examples, num_hard, num_random, candidates=None):
    relevant = examples.relevant_by_query
    assert len(examples.groups) == sum(len(q.relevant_ids) for q in queries)
    for group in examples.groups:
        query = queries[group.query_index]
        forbidden = relevant[query.query.casefold()]
        assert group.positive_id in forbidden
        negatives = group.hard_ids + group.random_ids
        assert not forbidden & set(negatives), f"a labelled positive of {query.query!r} was drawn as a negative"
        assert len(group.hard_ids) == num_hard and len(group.random_ids) == num_random
        assert len(set(negatives)) == len(negatives), "a positive's negatives must be distinct"
        if candidates is not None:
            assert set(group.hard_ids) <= set(candidates.per_query[group.query_index])
    rows = examples.dataset
    assert len(rows) == len(examples.groups) * (1 + num_hard + num_random)
    assert sum(rows["label"]) == len(examples.groups)
    # Row-level check on texts too: no label-0 row pairs a query with a passage labelled relevant to it.
    relevant_texts = {key: {corpus.text(pid) for pid in ids} for key, ids in relevant.items()}
    for query, passage, label in zip(rows["query"], rows["passage"], rows["label"]):
        assert (passage in relevant_texts[query.casefold()]) == (label == 1.0)


@pytest.mark.parametrize("num_hard,num_random", [(2, 1), (5, 3), (0, 2)])
def test_examples_never_use_a_positive_and_have_the_counts_per_positive(sample, num_hard, num_random):
    from ragtune.retrieval.first_stage import FirstStage
    from ragtune.retrieval.negatives import mine_candidates
    from ragtune.train.reranker.examples import build_reranker_examples

    corpus, queries = sample
    assert any(len(q.relevant_ids) > 1 for q in queries), "the sample must hold multi-positive queries"
    candidates = mine_candidates(queries, FirstStage(corpus), "bm25", (1, 30))
    examples = build_reranker_examples(queries, corpus, candidates, num_hard, num_random, seed=0)
    _check_examples(queries, corpus, examples, num_hard, num_random, candidates)
    assert examples.pos_weight == pytest.approx(num_hard + num_random)
    assert examples.hard_filled_randomly == 0
    # Same seed, same examples (a resumed run sees the same data).
    again = build_reranker_examples(queries, corpus, candidates, num_hard, num_random, seed=0)
    assert again.dataset["passage"] == examples.dataset["passage"]


def test_examples_exclude_positives_of_repeated_queries_and_of_a_polluted_pool(sample):
    from ragtune.train.reranker.examples import build_reranker_examples

    corpus, _ = sample
    ids = corpus.ids
    # The same question twice with different labels: both rows' positives are relevant to it.
    queries = [LabelledQuery("Ai sáng lập CLB?", [ids[0], ids[1]]), LabelledQuery("ai sáng lập clb?", [ids[2]]),
               LabelledQuery("Phòng xưởng mở cửa lúc nào?", [ids[3]])]
    # A candidate pool that (wrongly) contains every positive first: they must still be skipped.
    pool = [ids[2], ids[0], ids[1], *ids[4:10]]
    candidates = NegativeCandidates(per_query=[pool, pool, pool], sources=["test"])
    examples = build_reranker_examples(queries, corpus, candidates, 3, 2, seed=1)
    _check_examples(queries, corpus, examples, 3, 2)
    for group in examples.groups[:3]:
        assert not {ids[0], ids[1], ids[2]} & set(group.hard_ids + group.random_ids)


def test_short_candidate_pool_is_filled_with_uniform_negatives(sample):
    from ragtune.train.reranker.examples import build_reranker_examples

    corpus, queries = sample
    queries = queries[:10]
    candidates = NegativeCandidates(per_query=[[] for _ in queries])
    examples = build_reranker_examples(queries, corpus, candidates, 2, 1, seed=0)
    _check_examples(queries, corpus, examples, 2, 1)
    assert examples.hard_filled_randomly == 2 * len(examples.groups)


def test_negative_counts_are_clamped_to_the_corpus(sample, caplog):
    from ragtune.train.reranker.examples import build_reranker_examples, clamp_negative_counts

    corpus, queries = sample
    with caplog.at_level(logging.WARNING):
        num_hard, num_random = clamp_negative_counts(queries, corpus, 1000, 1)
    fewest_relevant = min(len(q.relevant_ids) for q in queries)
    assert (num_hard, num_random) == (len(corpus) - fewest_relevant, 0)
    assert any("--num_hard_negatives 1000 is more than the corpus allows" in r.message for r in caplog.records)
    assert clamp_negative_counts(queries, corpus, 2, 1) == (2, 1)
    examples = build_reranker_examples(queries[:5], corpus, None, num_hard, num_random, seed=0)
    for group in examples.groups:
        relevant = examples.relevant_by_query[queries[group.query_index].query.casefold()]
        assert len(group.hard_ids) == len(corpus) - len(relevant)  # every passage not labelled relevant


# ---------------------------------------------------------------------------- the first stage and fusion with it


def test_hybrid_first_stage_weight_is_chosen_on_dev_and_used_for_mining_and_dev_candidates(sample, tiny_st):
    from sentence_transformers import SentenceTransformer

    from ragtune.core.fusion import fuse_all, ranking
    from ragtune.retrieval.first_stage import FirstStage
    from ragtune.train.reranker.examples import mine_and_retrieve

    corpus, queries = sample
    train, dev = queries[:12], queries[12:24]
    model = SentenceTransformer(str(tiny_st), device="cpu")
    mined = mine_and_retrieve(train, dev, corpus, model, "both", (1, 10), num_hard=2, top_n=10, first_stage="hybrid")
    assert mined.first_stage == "hybrid" and mined.sources == ["hybrid"]
    stage = FirstStage(corpus, model, kind="hybrid")
    expected = stage.choose_fusion(dev).weight
    assert mined.fusion["dense_weight"] == expected and mined.fusion["depth"] == 100
    # The dev candidates are the fused ranking with that weight, at the fusion's depth (the whole sample
    # corpus): recompute it from the two rankers.
    texts, depth = [q.query for q in dev], min(100, len(corpus))
    fused = fuse_all(stage.runs(texts, depth, "dense"), stage.runs(texts, depth, "bm25"), expected)
    assert mined.dev_candidates == [ranking(run)[:10] for run in fused]
    # Mining ranks from the same fusion: every candidate window is a slice of the hybrid ranking.
    train_ranked = [ranking(run) for run in fuse_all(stage.runs([q.query for q in train], depth, "dense"),
                                                     stage.runs([q.query for q in train], depth, "bm25"), expected)]
    for q, cands, ranked in zip(train, mined.candidates.per_query, train_ranked):
        assert cands == [pid for pid in ranked[:10] if pid not in q.relevant_ids]
    # A fusion the embedding script saved is applied as saved, not chosen again.
    from ragtune.retrieval.first_stage import HybridFusion

    saved = HybridFusion("weighted", 0.9, 100)
    again = mine_and_retrieve(train, dev, corpus, model, "both", (1, 10), 2, 10, "hybrid", saved_fusion=saved)
    assert again.fusion["dense_weight"] == 0.9
    assert again.dev_candidates == [ranking(run)[:10] for run in saved.fuse(stage.runs(texts, depth, "dense"),
                                                                            stage.runs(texts, depth, "bm25"),
                                                                            len(corpus))]
    for q, cands in zip(train, mined.candidates.per_query):
        assert not set(cands) & set(q.relevant_ids)
    # Without --first_stage the reranker keeps its old behaviour: BM25 with no embedding model.
    assert mine_and_retrieve(train, dev, corpus, None, "bm25", (1, 10), 2, 10).first_stage == "bm25"


# ---------------------------------------------------------------------------- evaluator and batching


class ScoreModel:
    """Stands in for a CrossEncoder: scores each (query, passage) pair with a function."""

    def __init__(self, score):
        self.score = score
        self.model_card_data = SimpleNamespace(set_evaluation_metrics=lambda *args: None)

    def predict(self, pairs, **kwargs):
        import numpy as np

        return np.array([self.score(q, p) for q, p in pairs], dtype=np.float32)


def test_dev_evaluator_reranks_the_first_stage_candidates(sample):
    from ragtune.core.fusion import ranking
    from ragtune.core.metrics import query_metrics
    from ragtune.retrieval.first_stage import FirstStage
    from ragtune.train.reranker.evaluator import DevRerankingEvaluator

    corpus, queries = sample
    dev = queries[:12]
    candidates = [ranking(run) for run in FirstStage(corpus).runs([q.query for q in dev], 20)]
    evaluator = DevRerankingEvaluator(corpus, dev, candidates)
    expected_first = [query_metrics(c, q.relevant_ids, DEFAULT_KS, TRAINING_METRICS) for c, q in zip(candidates, dev)]
    assert evaluator.first_stage_metrics["mrr@5"] == pytest.approx(
        sum(m["mrr@5"] for m in expected_first) / len(dev))
    # Constant scores: ties keep the first-stage order.
    assert evaluator.compute(ScoreModel(lambda q, p: 0.0)) == evaluator.first_stage_metrics
    # An oracle puts every relevant candidate first: hit@3 is 1 wherever the first stage found one.
    relevant_texts = {q.query: {corpus.text(pid) for pid in q.relevant_ids} for q in dev}
    oracle = evaluator(ScoreModel(lambda q, p: float(p in relevant_texts[q])))
    found = [bool(set(c) & set(q.relevant_ids)) for c, q in zip(candidates, dev)]
    assert oracle["dev_hit@3"] == pytest.approx(sum(found) / len(dev))
    assert set(oracle) == {f"dev_{k}" for k in METRIC_KEYS}
    assert oracle["dev_mrr@5"] >= evaluator.first_stage_metrics["mrr@5"]


class PlantedReranker:
    """A stand-in reranker whose logit is a fixed function of the passage text."""

    def __init__(self, score):
        self.score = score

    def predict(self, pairs, **kwargs):
        import numpy as np

        return np.array([self.score(passage) for _, passage in pairs], dtype=np.float64)


def test_fused_reranker_on_dev_is_never_worse_than_either_part(sample):
    from ragtune.train.reranker.evaluator import DevRerankingEvaluator

    corpus, queries = sample
    dev = queries[:15]
    # First stage: every query's relevant passages first, then the rest (a perfect first stage).
    candidates = [list(q.relevant_ids) + [p for p in corpus.ids[:10] if p not in q.relevant_ids] for q in dev]
    evaluator = DevRerankingEvaluator(corpus, dev, candidates, primary_metric="ndcg@5")
    relevant_texts = {corpus.text(p) for q in dev for p in q.relevant_ids}
    # A reranker that puts every labelled passage last: alone it is the worst possible.
    backwards = PlantedReranker(lambda text: -1.0 if text in relevant_texts else 1.0)
    alone = evaluator.compute(backwards)
    choice, fused = evaluator.fusion_on_dev(backwards)
    assert alone["ndcg@5"] < evaluator.first_stage_metrics["ndcg@5"]
    assert choice.weight < 0.5 and choice.reference == pytest.approx(evaluator.first_stage_metrics["ndcg@5"])
    assert fused["ndcg@5"] == pytest.approx(evaluator.first_stage_metrics["ndcg@5"])
    # A reranker that knows the labels: fusing keeps its perfect ranking.
    oracle = PlantedReranker(lambda text: 1.0 if text in relevant_texts else -1.0)
    choice, fused = evaluator.fusion_on_dev(oracle)
    assert fused["ndcg@5"] == pytest.approx(1.0)


def test_step_length_grouped_batches_keep_each_steps_examples():
    import random

    from datasets import Dataset

    from ragtune.train.reranker.sampler import StepLengthGroupedBatchSampler

    n, batch, group = 50, 3, 12
    lengths = [random.Random(i).randint(5, 500) for i in range(n)]
    dataset = Dataset.from_dict({"query": ["q"] * n, "passage": ["p"] * n, "label": [0.0] * n})
    sampler = StepLengthGroupedBatchSampler(dataset, batch, False, seed=7, lengths=lengths, group_size=group)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 17
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(n))
    order = list(range(n))
    random.Random(7).shuffle(order)
    for start in range(0, n, group):  # each optimizer step: the same examples as plain shuffling, sorted
        step = flat[start:start + group]
        assert set(step) == set(order[start:start + group])
        assert [lengths[i] for i in step] == sorted(lengths[i] for i in step)
    assert list(sampler) == batches  # deterministic within an epoch
    sampler.set_epoch(1)
    assert list(sampler) != batches


def test_batches_are_padded_to_their_longest_pair_not_max_length(tiny_cross_encoder):
    from ragtune.train.reranker.modeling import load_reranker

    model = load_reranker(str(tiny_cross_encoder), max_seq_length=512)
    assert model.max_seq_length == 512
    features = model.preprocess([("câu hỏi", "một đoạn văn ngắn"), ("hỏi", "ngắn")])
    assert features["input_ids"].shape[1] < 20


def test_a_half_precision_checkpoint_is_loaded_in_fp32(tiny_cross_encoder, tmp_path):
    """transformers v5 loads a checkpoint in its saved dtype by default; AMP needs fp32 master weights."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from ragtune.train.reranker.modeling import load_reranker

    half = tmp_path / "ce-fp16"
    AutoModelForSequenceClassification.from_pretrained(str(tiny_cross_encoder), dtype=torch.float16).save_pretrained(half)
    AutoTokenizer.from_pretrained(str(tiny_cross_encoder)).save_pretrained(half)
    model = load_reranker(str(half), max_seq_length=128)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
