"""Dev metrics on generated answers (not teacher-forced logits), and the Trainer that reports them.

Why the plain transformers ``Trainer`` and not TRL's ``SFTTrainer``: our examples arrive already
tokenised with answer-only labels and context-only truncation (see tokenize.py), which is what
SFTTrainer would otherwise do for us, less well (its ``assistant_only_loss`` needs ``{% generation %}``
markers Qwen3's template lacks, and its truncation cuts the end of the sequence: the answer);
SFTConfig's bf16 default also fails on a T4. What is left for a trainer is a causal-LM loss on
given labels, which the Trainer does, plus generated-answer metrics merged into ``evaluate()`` so
that best-model selection and early stopping see ``eval_rouge_l``.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from transformers import Trainer

from ragtune.core.answer_metrics import bleu4, rouge_l, string_presence
from ragtune.generation.inference import generate

logger = logging.getLogger(__name__)



def answer_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-L and string presence per answer, corpus BLEU-4: the project's definitions (ragtune.evaluate.answers)."""
    n = max(len(references), 1)
    return {"rouge_l": sum(rouge_l(p, r) for p, r in zip(predictions, references)) / n,
            "bleu4": bleu4(list(predictions), list(references)),
            "string_presence": sum(string_presence(p, r) for p, r in zip(predictions, references)) / n}


class DevAnswerEvaluator:
    """Greedy answers to the dev prompts (the training prompts, cut the same way), scored against references."""

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], references: Sequence[str],
                 max_new_tokens: int, batch_size: int = 8) -> None:
        self.tokenizer = tokenizer
        self.prompt_ids = list(prompt_ids)
        self.references = list(references)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.last_answers: list[str] = []

    def __len__(self) -> int:
        return len(self.references)

    def __call__(self, model: Any) -> dict[str, float]:
        started = time.perf_counter()
        answers = generate(model, self.tokenizer, self.prompt_ids, self.max_new_tokens, self.batch_size)
        self.last_answers = answers
        metrics = answer_metrics(answers, self.references)
        logger.info("Dev answers (%d, greedy, <= %d new tokens) in %.1fs: %s", len(answers), self.max_new_tokens,
                    time.perf_counter() - started, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics


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
            from ragtune.train.distributed import compute_on_main_and_share

            model = self.accelerator.unwrap_model(self.model)
            metrics = compute_on_main_and_share(lambda: self.answer_evaluator(model))
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in metrics.items()})
        return output
