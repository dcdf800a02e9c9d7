"""Publishing the generator's LoRA adapter: refused below the base model on the main answer metric (unless
--allow_regression), refused with unredacted personal information (unless --allow_pii)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from ragtune.evaluate import hub
from ragtune.evaluate.publishing import answered_system, generator_request
from ragtune.evaluate.systems import System


def make_args(adapter: Path, **overrides) -> argparse.Namespace:
    values = dict(hub_generator_repo="alice/vi-generator", generator_adapter=str(adapter), generator_local="base",
                  answer_k=[5], main_metric="ndcg@5", allow_regression=False, allow_pii=False, dataset_name=None,
                  language=["vi"], license="apache-2.0", corpus="corpus.csv")
    return argparse.Namespace(**{**values, **overrides})


class FakeReport:
    def __init__(self, systems):
        self.systems, self.queries = systems, [object()] * 4


@pytest.fixture
def adapter(tmp_path) -> Path:
    folder = tmp_path / "lora"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    return folder


def report_with(rouge: float) -> FakeReport:
    return FakeReport([
        System("bm25", "bm25", metrics={"ndcg@5": 0.3}),
        System("dense", "dense", metrics={"ndcg@5": 0.6, "rouge_l@5": rouge, "bleu4@5": 0.1,
                                          "string_presence@5": 0.5}),
        System("other", "dense", metrics={"ndcg@5": 0.4, "rouge_l@5": 0.9}),
    ])


def test_the_best_answered_system_judges_the_adapter(adapter):
    assert answered_system(make_args(adapter), report_with(0.4)).name == "dense"


def test_an_adapter_below_its_base_is_refused(adapter):
    problems, request = generator_request(make_args(adapter), report_with(0.30), {"rouge_l@5": 0.35}, hub)
    assert request is None
    assert len(problems) == 1 and "below its base model" in problems[0] and "--allow_regression" in problems[0]


def test_allow_regression_publishes_it(adapter):
    problems, request = generator_request(make_args(adapter, allow_regression=True), report_with(0.30),
                                          {"rouge_l@5": 0.35, "bleu4@5": 0.2}, hub)
    assert problems == [] and request.kind == "generator"
    assert request.metrics["rouge_l@5"] == 0.30 and request.baseline_metrics["rouge_l@5"] == 0.35


def test_an_adapter_above_its_base_is_published_with_a_card(adapter):
    problems, request = generator_request(make_args(adapter), report_with(0.5), {"rouge_l@5": 0.35}, hub)
    assert problems == []
    card, metadata = hub.build_model_card(request)
    assert metadata["library_name"] == "peft" and metadata["pipeline_tag"] == "text-generation"
    [result] = metadata["model-index"][0]["results"][:1]
    names = " ".join(m["name"] for m in result["metrics"]).lower()
    assert "rouge" in names and "bleu" in names and "presence" in names  # the test answer metrics
    assert "0.3500" in str(card) and "0.5000" in str(card)


def test_unredacted_personal_information_refuses_the_adapter(adapter):
    (adapter / "metrics.json").write_text(json.dumps({"data_audit": {"pii": {"total": 3, "redacted": False,
                                                                             "counts": {"email": 3}}}}))
    problems, request = generator_request(make_args(adapter), report_with(0.5), {"rouge_l@5": 0.35}, hub)
    assert request is None and "personal value" in problems[0]
    problems, request = generator_request(make_args(adapter, allow_pii=True), report_with(0.5),
                                          {"rouge_l@5": 0.35}, hub)
    assert problems == [] and request is not None
