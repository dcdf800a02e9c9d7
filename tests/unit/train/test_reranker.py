"""fine_tune_reranker.py and ragtune.train.reranker.modeling: examples, evaluator, batching, end to end, resume, bad input."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import run_script

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN, LabelledQuery, load_corpus, load_queries
from ragtune.core.metrics import DEFAULT_KS, TRAINING_METRICS
from ragtune.retrieval.negatives import NegativeCandidates

TEMPLATE = ["--batch_size", "3", "--gradient_accumulation_steps", "8", "--epochs", "4", "--lr", "2e-5", "--fp16",
            "--gradient_checkpointing", "--dev_ratio", "0.2", "--num_hard_negatives", "2",
            "--num_random_negatives", "1"]
METRIC_KEYS = {f"{m}@{k}" for m in TRAINING_METRICS for k in DEFAULT_KS}
# Tiny models gain nothing from threads; on a shared 2-core machine extra threads only oversubscribe it.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def sample():
    corpus = load_corpus(SAMPLE_CORPUS)
    return corpus, load_queries(SAMPLE_TRAIN, corpus)


def run_reranker(*args: str) -> subprocess.CompletedProcess:
    return run_script("fine_tune_reranker.py", *args, env=ONE_THREAD)


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " ERROR " in line or line.startswith("error")]


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
    from ragtune.train.reranker.examples import build_reranker_examples
    from ragtune.retrieval.first_stage import FirstStage

    corpus, queries = sample
    assert any(len(q.relevant_ids) > 1 for q in queries), "the sample must hold multi-positive queries"
    candidates = FirstStage(corpus).mine(queries, "bm25", (1, 30))
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
    from ragtune.core.metrics import query_metrics
    from ragtune.train.reranker.evaluator import DevRerankingEvaluator
    from ragtune.retrieval.first_stage import FirstStage

    corpus, queries = sample
    dev = queries[:12]
    candidates = FirstStage(corpus).rank([q.query for q in dev], 20)
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


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_template_command_end_to_end(tiny_cross_encoder, tmp_path):
    """The guide's command, exactly, plus --base_model/--output_dir; --fp16 on CPU warns once, trains in fp32."""
    out = tmp_path / "reranker"
    result = run_reranker(*TEMPLATE, "--base_model", str(tiny_cross_encoder), "--output_dir", str(out))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    if not torch.cuda.is_available():
        assert output.count("--fp16 needs a GPU") == 1
    for name in ("metrics.json", "model.safetensors", "config.json", "README.md", "training_curves.png"):
        assert (out / name).is_file(), name
    assert list((out / "runs").rglob("events.out.tfevents.*")), "no TensorBoard logs"
    metrics = json.loads((out / "metrics.json").read_text())
    for stage in ("first_stage", "before", "after"):
        assert set(metrics["dev_metrics"][stage]) == METRIC_KEYS, stage
    assert metrics["first_stage"] == "bm25"
    assert metrics["hard_negatives_per_positive"] == 2 and metrics["random_negatives_per_positive"] == 1
    assert metrics["pos_weight"] == pytest.approx(3.0)
    # Reranker fusion: the weight chosen on dev (grid 0..1; 1 = the reranker alone, 0 = the first stage alone) is
    # saved for evaluate_rag.py, and the fused ranking is at least as good on dev as either part.
    fusion, dev = metrics["fusion"], metrics["dev_metrics"]
    assert fusion["first_stage"] == "bm25" and 0.0 <= fusion["reranker_weight"] <= 1.0
    assert dev["fused"]["ndcg@5"] >= max(dev["after"]["ndcg@5"], dev["first_stage"]["ndcg@5"]) - 1e-9
    assert "fused (reranker weight" in result.stdout
    assert "first stage (bm25)" in result.stdout and "fine-tuned" in result.stdout
    assert "Dev metrics: first stage, base and fine-tuned reranker" in (out / "README.md").read_text()

    from sentence_transformers import CrossEncoder
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    pairs = [("CLB thành lập năm nào?", "RAIC ra đời ngày 14 tháng 10 năm 2013."), ("Ai?", "Không liên quan.")]
    reranker = CrossEncoder(str(out))
    scores = reranker.predict(pairs, activation_fn=torch.nn.Identity())
    hf_model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    with torch.no_grad():
        logits = hf_model(**tokenizer([p[0] for p in pairs], [p[1] for p in pairs], padding=True,
                                      return_tensors="pt")).logits
    assert logits.shape == (2, 1)
    assert torch.allclose(logits[:, 0], torch.as_tensor(scores), atol=1e-4)


# ---------------------------------------------------------------------------- bad input


def _bad_csv(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.csv"
    path.write_text("id,content\n1,hello\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("args,message", [
    (["--corpus", "/no/such/corpus.csv"], "--corpus: file not found"),
    (["--corpus", "BAD_CSV"], "needs columns"),
    (["--batch_size", "0"], "--batch_size must be at least 1"),
    (["--dev_ratio", "1"], "--dev_ratio must be in [0, 1)"),
    (["--num_random_negatives", "-1"], "--num_random_negatives must be >= 0"),
    (["--hard_negative_source", "dense"], "--hard_negative_source dense needs --embedding_model"),
])
def test_bad_flags_and_files_exit_2_with_one_line(tmp_path, args, message):
    args = [str(_bad_csv(tmp_path)) if a == "BAD_CSV" else a for a in args]
    out = tmp_path / "out"
    result = run_reranker(*args, "--output_dir", str(out))
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    errors = error_lines(output)
    assert len(errors) == 1 and message in errors[0], output[-3000:]
    assert not out.exists(), "nothing may be written before the input is validated"


def test_unknown_model_exits_2_with_one_line(tmp_path):
    out = tmp_path / "out"
    result = run_reranker("--base_model", str(tmp_path / "no-such-model"), "--output_dir", str(out))
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    errors = error_lines(output)
    assert len(errors) == 1 and "--base_model" in errors[0] and "no-such-model" in errors[0]
    assert not out.exists()


def test_finished_output_dir_is_not_overwritten(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    result = run_reranker("--output_dir", str(out))
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "Traceback" not in output
    errors = error_lines(output)
    assert len(errors) == 1 and "already holds a finished model" in errors[0] and "--overwrite_output_dir" in errors[0]
    assert (out / "metrics.json").read_text() == "{}"


@pytest.mark.slow
def test_too_many_hard_negatives_are_clamped_and_training_works(tiny_cross_encoder, tmp_path):
    out = tmp_path / "out"
    result = run_reranker("--base_model", str(tiny_cross_encoder), "--output_dir", str(out),
                          "--num_hard_negatives", "1000", "--max_steps", "1", "--batch_size", "16",
                          "--gradient_accumulation_steps", "1")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "--num_hard_negatives 1000 is more than the corpus allows" in output
    metrics = json.loads((out / "metrics.json").read_text())
    corpus, queries = load_corpus(SAMPLE_CORPUS), load_queries(SAMPLE_TRAIN, load_corpus(SAMPLE_CORPUS))
    assert metrics["hard_negatives_per_positive"] == len(corpus) - min(len(q.relevant_ids) for q in queries)


@pytest.mark.slow
def test_plain_encoder_gets_a_new_head_and_embedding_model_is_the_first_stage(tiny_encoder, tiny_st, tmp_path):
    out = tmp_path / "out"
    result = run_reranker("--base_model", str(tiny_encoder), "--embedding_model", str(tiny_st),
                          "--output_dir", str(out), "--max_steps", "2", "--evaluation_steps", "1",
                          "--checkpoint_save_steps", "1", "--gradient_accumulation_steps", "1")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "has no sequence-classification head" in output and "starts untrained" in output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["first_stage"] == "dense"
    assert metrics["hard_negative_sources"] == ["bm25", "dense"]
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(out))
    assert model.config.num_labels == 1 and model.config.architectures == ["BertForSequenceClassification"]
