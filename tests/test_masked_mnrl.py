"""Full batches with a relevance-masked MNRL: a query never treats a passage labelled relevant to it as a negative."""

from __future__ import annotations

import pytest
import torch


def examples_and_model(tiny_st):
    from sentence_transformers import SentenceTransformer

    from ragtune.data import SAMPLE_CORPUS, SAMPLE_TRAIN, load_corpus, load_queries
    from ragtune.embedding import build_training_examples

    corpus = load_corpus(SAMPLE_CORPUS)
    queries = load_queries(SAMPLE_TRAIN, corpus)
    # Queries with several labelled passages put a query's own second positive into its batch.
    multi = [q for q in queries if len(q.relevant_ids) > 1][:3]
    examples = build_training_examples(multi, corpus, None, 1, seed=0)
    return corpus, examples, SentenceTransformer(str(tiny_st), device="cpu")


def test_mask_covers_exactly_the_relevant_in_batch_candidates(tiny_st):
    from ragtune.embedding import RelevanceMaskedMNRL

    corpus, examples, model = examples_and_model(tiny_st)
    loss = RelevanceMaskedMNRL(model, examples, corpus)
    rows = list(range(len(examples.dataset)))
    mask = loss.candidate_mask(rows, rows)
    columns = [c for c in examples.dataset.column_names if c != "anchor"]
    for i in rows:
        relevant = examples.relevant_by_query[examples.row_query[i]]
        for col, name in enumerate(columns):
            for j in rows:
                pid = corpus.ids[corpus.texts.index(examples.dataset[j][name])]
                expected = pid in relevant and not (i == j and col == 0)
                assert bool(mask[i, col * len(rows) + j]) == expected, (i, name, j)
    assert mask.any()  # these queries' second positives share their batch
    assert not mask[range(len(rows)), range(len(rows))].any()  # never a row's own positive


def test_masked_loss_is_cross_entropy_without_the_relevant_candidates(tiny_st):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from ragtune.embedding import RelevanceMaskedMNRL, with_row_labels

    corpus, examples, model = examples_and_model(tiny_st)
    data = with_row_labels(examples)
    assert data["label"] == list(range(len(examples.dataset)))
    columns = [c for c in examples.dataset.column_names]
    embeddings = [model.encode(list(examples.dataset[c]), convert_to_tensor=True) for c in columns]
    labels = torch.tensor(data["label"])
    loss = RelevanceMaskedMNRL(model, examples, corpus)
    value = loss.compute_loss_from_embeddings(embeddings, labels)

    queries, docs = embeddings[0], torch.cat(embeddings[1:])
    logits = loss.scale * torch.nn.functional.cosine_similarity(queries[:, None], docs[None], dim=-1)
    logits = logits.masked_fill(loss.candidate_mask(list(range(len(queries))), list(range(len(queries)))),
                                float("-inf"))
    expected = torch.nn.functional.cross_entropy(logits, torch.arange(len(queries)))
    assert float(value) == pytest.approx(float(expected), rel=1e-5)
    plain = MultipleNegativesRankingLoss(model).compute_loss_from_embeddings(embeddings, labels)
    assert float(plain) > float(value)  # the plain loss still pushes the query's own positives away
    with pytest.raises(ValueError, match="with_row_labels"):
        loss.compute_loss_from_embeddings(embeddings, None)
