"""The dev evaluator contract of the embedding and reranker scripts: metrics computed on the main process."""

from __future__ import annotations

import logging

from sentence_transformers.base.evaluation import SentenceEvaluator

logger = logging.getLogger(__name__)


class DevMetricsEvaluator(SentenceEvaluator):
    """Subclasses implement ``compute(model) -> {"ndcg@5": ..., ...}``; this reports it to the Trainer.

    Metrics are prefixed with ``name`` ("dev"), so the Trainer logs ``eval_dev_ndcg@5``, and stored
    in the model card data so the saved card carries them.
    """

    name = "dev"

    def __init__(self) -> None:
        super().__init__()
        # compute()'s result at each step, with the per-query values it kept: the model card's intervals.
        self.scored: dict[int, dict[str, float]] = {}

    def compute(self, model) -> dict[str, float]:
        raise NotImplementedError

    def __call__(self, model, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
        metrics = self.compute(model)
        self.scored[steps] = metrics
        logger.info("dev @ step %s: %s", steps,
                    ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.endswith("@5")))
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics
