"""training_curves.png: the smoothed loss over the raw one, the learning rate, the dev metrics with the best
checkpoint marked and BM25's dev value as the line to clear; and the runner hands the curves what the scripts know."""

from __future__ import annotations

import argparse
import logging
from types import SimpleNamespace

import matplotlib
import numpy as np
import pytest

from ragtune.train import runner
from ragtune.train.outputs import plot_training_curves, smoothed

matplotlib.use("Agg")

HISTORY = ([{"step": 0, "eval_ndcg@5": 0.40, "eval_mrr@5": 0.35}]
           + [{"step": s, "loss": 2.0 - 0.1 * s + (0.3 if s % 2 else -0.3), "learning_rate": 1e-5 * (1 - s / 20)}
              for s in range(1, 20)]
           + [{"step": 10, "eval_ndcg@5": 0.62, "eval_mrr@5": 0.55}, {"step": 19, "eval_ndcg@5": 0.58,
                                                                        "eval_mrr@5": 0.56}])


@pytest.fixture()
def figure(monkeypatch):
    """The figure plot_training_curves draws (kept open instead of closed)."""
    import matplotlib.pyplot as plt

    drawn = {}
    monkeypatch.setattr(plt, "close", lambda fig=None: drawn.setdefault("fig", fig))
    return drawn


def test_smoothing_follows_the_trend_and_leaves_few_points_alone():
    assert smoothed([1.0, 3.0, 2.0]) == [1.0, 3.0, 2.0]  # 5 points or fewer: nothing to smooth
    noisy = [10 - 0.1 * i + (1 if i % 2 else -1) for i in range(60)]
    curve = smoothed(noisy)
    assert curve[0] == noisy[0]  # debiased: the first point is the first value, not pulled to 0
    assert np.std(np.diff(curve)) < 0.2 * np.std(np.diff(noisy))  # the +-1 zigzag mostly gone
    assert curve[-1] < curve[10] < curve[1]  # the downward trend kept


def test_curves_show_loss_rate_best_checkpoint_and_bm25(tmp_path, figure):
    path = plot_training_curves(HISTORY, "eval_", tmp_path / "curves.png", ("ndcg@5", "mrr@5"), best_step=10,
                                reference={"ndcg@5": 0.5, "recall@5": 0.7})
    assert path.stat().st_size > 1000
    ax_loss, ax_lr, ax_dev = figure["fig"].axes
    raw, smooth = ax_loss.get_lines()
    losses = [e["loss"] for e in HISTORY if "loss" in e]
    assert list(raw.get_ydata()) == losses and raw.get_alpha() < 0.5
    assert list(smooth.get_ydata()) == pytest.approx(smoothed(losses)) and list(smooth.get_ydata()) != losses
    assert list(ax_lr.get_lines()[0].get_ydata()) == [e["learning_rate"] for e in HISTORY if "learning_rate" in e]
    labels = {line.get_label(): line for line in ax_dev.get_lines()}
    assert list(labels["ndcg@5"].get_xdata()) == [0, 10, 19]
    stars = [line for line in ax_dev.get_lines() if line.get_marker() == "*"]
    assert sorted(float(line.get_ydata()[0]) for line in stars) == [0.55, 0.62]  # each metric at step 10
    assert all(float(line.get_xdata()[0]) == 10 for line in stars)
    assert list(labels["BM25 ndcg@5"].get_ydata()) == [0.5, 0.5]
    assert "BM25 recall@5" not in labels  # not a metric drawn
    assert list(labels["best checkpoint (step 10)"].get_xdata()) == [10, 10]


def test_finish_passes_the_best_step_and_bm25_dev_metrics(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(runner, "plot_training_curves", lambda *args, **kwargs: drawn.update(kwargs))
    run = SimpleNamespace(output_dir=tmp_path, expander=None, audit_summary=None, metric_prefix="eval_",
                          started=0.0, model_kind="embedding model", lock=SimpleNamespace(release=lambda: None),
                          args=argparse.Namespace(base_model="base", metric_for_best_model="ndcg@5"))
    trainer = SimpleNamespace(state=SimpleNamespace(log_history=HISTORY, best_global_step=10, best_metric=0.62,
                                                    best_model_checkpoint="checkpoint-10", global_step=19))
    plan = SimpleNamespace(precision=SimpleNamespace(name="fp32"), world_size=1)
    logging.disable(logging.WARNING)
    try:
        runner.TrainingRun.finish(run, trainer, plan, save=lambda folder: None, metrics={
            "dev_metrics": {"bm25": {"ndcg@5": 0.5}, "before": {"ndcg@5": 0.4}, "after": {"ndcg@5": 0.62}}})
    finally:
        logging.disable(logging.NOTSET)
    assert drawn == {"best_step": 10, "reference": {"ndcg@5": 0.5}}
    assert (tmp_path / "metrics.json").exists()
