"""The dev evaluator contract of the embedding and reranker scripts: metrics computed on the main process."""

from __future__ import annotations

import logging
from typing import Any, Sequence

from sentence_transformers.base.evaluation import SentenceEvaluator

from ragtune.core.metrics import DEFAULT_KS
from ragtune.train.checkpoints import checkpoint_step
from ragtune.train.outputs import dev_metrics_from_history

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
        # The console's line per evaluation is ragtune.train.callbacks.DevSummaryCallback's (with the best so far).
        logger.debug("dev @ step %s: %s", steps,
                     ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.endswith("@5")))
        metrics = self.prefix_name_to_metrics(metrics, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def final_metrics(self, model, state: Any) -> dict[str, float]:
        """The final model's dev metrics (names without the ``dev_`` prefix), as the Trainer logged them when it
        evaluated exactly that model (the best checkpoint, reloaded at the end); computed again only when it did not
        (a best step from before a resume is in the history too). The model card gets them either way."""
        logged = evaluated_final_metrics(state, f"eval_{self.name}_")
        if logged is None:
            computed = self(model, epoch=state.epoch, steps=state.global_step)
            return {k.removeprefix(f"{self.name}_"): v for k, v in computed.items()}
        self.store_metrics_in_model_card_data(model, self.prefix_name_to_metrics(dict(logged), self.name),
                                              state.epoch, state.global_step)
        return logged


def final_model_step(state: Any) -> int:
    """The step of the model a run ends with: the best checkpoint's when the Trainer reloaded it
    (``load_best_model_at_end``; it records ``best_model_checkpoint`` only for a checkpoint it saved), else the
    last step's."""
    best = checkpoint_step(state.best_model_checkpoint)
    return best if best is not None else state.global_step


def evaluated_final_metrics(state: Any, prefix: str) -> dict[str, float] | None:
    """The dev metrics the Trainer logged for the final model (:func:`final_model_step`), names without ``prefix``;
    None when that model was never evaluated during training. The same weights give the same numbers: evaluating
    them again would only repeat the line and the time."""
    step = final_model_step(state)
    for logged_step, values in reversed(dev_metrics_from_history(state.log_history, prefix)):
        if logged_step == step:
            return values
    return None


def console_cutoffs(metric: str, verbose: bool = False) -> tuple[int, ...]:
    """The cutoffs a script's final dev table shows on the console: the main metric's (``ndcg@5`` -> 5), or every
    one with ``--verbose``; metrics.json and the model card keep them all."""
    k = metric.rpartition("@")[2]
    return DEFAULT_KS if verbose or not k.isdigit() else (int(k),)


def cutoffs_note(ks: Sequence[int]) -> str:
    """The table title's note when it leaves cutoffs out."""
    return "" if tuple(ks) == tuple(DEFAULT_KS) else f", @{'/@'.join(map(str, ks))} (every cutoff in metrics.json)"
