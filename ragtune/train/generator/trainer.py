"""The generator's Trainer: the causal-LM loss on given labels, and dev answers generated at each evaluation.

Why the plain transformers ``Trainer`` and not TRL's ``SFTTrainer``: our examples arrive already
tokenised with answer-only labels and context-only truncation (see tokenize.py), which is what
SFTTrainer would otherwise do for us, less well (its ``assistant_only_loss`` needs ``{% generation %}``
markers Qwen3's template lacks, and its truncation cuts the end of the sequence: the answer);
SFTConfig's bf16 default also fails on a T4. What is left for a trainer is a causal-LM loss on
given labels, which the Trainer does, plus generated-answer metrics merged into ``evaluate()`` so
that best-model selection and early stopping see ``eval_rouge_l``.
"""

from __future__ import annotations

from typing import Any

from transformers import Trainer

from ragtune.train.generator.evaluator import DevAnswerEvaluator


class GeneratorTrainer(Trainer):
    """A Trainer whose evaluation adds generated-answer metrics (``eval_rouge_l``, ...) to ``eval_loss``.

    They are added inside ``evaluation_loop``, before ``evaluate()`` logs them and calls the
    callbacks, so best-checkpoint selection, EarlyStoppingCallback, TensorBoard and the log history
    all see them. Generation runs on the main process and is shared with the other ranks.
    """

    def __init__(self, *args: Any, answer_evaluator: DevAnswerEvaluator | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answer_evaluator = answer_evaluator

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        if self.answer_evaluator is not None and len(self.answer_evaluator):
            model = self.accelerator.unwrap_model(self.model)
            metrics = self.answer_evaluator.shared_metrics(model)  # an interrupt raises on every rank
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in metrics.items()})
        return output

