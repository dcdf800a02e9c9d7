"""ragtune.train.embedder: training examples with hard negatives, and batches free of false negatives, also for
the global batch of two processes."""

from __future__ import annotations

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN, load_corpus, load_queries, split_queries
from ragtune.retrieval.first_stage import FirstStage
from ragtune.retrieval.negatives import mine_candidates
from ragtune.train.embedder.examples import build_training_examples
from ragtune.train.embedder.sampler import NoFalseNegativesBatchSampler


def test_no_batch_holds_a_passage_relevant_to_another_query_of_the_batch():
    corpus = load_corpus(SAMPLE_CORPUS)
    train, _ = split_queries(load_queries(SAMPLE_TRAIN, corpus), 0.2, seed=1)
    candidates = mine_candidates(train, FirstStage(corpus), "bm25", (1, 30))
    examples = build_training_examples(train, corpus, candidates, num_hard_negatives=2, seed=1)
    text_to_id = {text: pid for pid, text in zip(corpus.ids, corpus.texts)}
    relevant = {q.query: set(q.relevant_ids) for q in train}
    assert sum(len(r) > 1 for r in relevant.values()) >= 5  # the property is tested where it matters
    data = examples.dataset
    # Hard negatives themselves are never relevant to their own query.
    for row in data:
        assert {text_to_id[row["negative_1"]], text_to_id[row["negative_2"]]}.isdisjoint(relevant[row["anchor"]])
    for world_size in (1, 2):
        sampler = NoFalseNegativesBatchSampler(data, batch_size=8, drop_last=False, seed=3, examples=examples,
                                               world_size=world_size)
        seen = []
        for epoch in range(3):
            sampler.set_epoch(epoch)
            batches = list(sampler)
            assert len(batches) == len(sampler)
            flat = [i for b in batches for i in b]
            if world_size == 1 and epoch == 0:
                assert sorted(flat) == list(range(len(data)))  # every row exactly once
            else:  # a constant number of steps per epoch may repeat a few rows or defer some to the next epoch
                assert len(set(flat)) >= 0.9 * len(data)
            if world_size == 2:
                assert all(len(batches[i]) == len(batches[i + 1]) for i in range(0, len(batches), 2))
            for start in range(0, len(batches), world_size):  # a global batch under DDP
                rows = [data[i] for b in batches[start:start + world_size] for i in b]
                for row in rows:
                    others = {text_to_id[r[c]] for r in rows if r is not row
                              for c in ("positive", "negative_1", "negative_2")}
                    own_negatives = {text_to_id[row["negative_1"]], text_to_id[row["negative_2"]]}
                    assert (others | own_negatives).isdisjoint(relevant[row["anchor"]])
            seen.append(flat)
        assert seen[0] != seen[1]  # reshuffled every epoch
