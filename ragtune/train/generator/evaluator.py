"""Dev metrics on generated answers (not teacher-forced logits): what picks the best adapter."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable, Sequence

from transformers import TrainerCallback

from ragtune.core.answer_metrics import REFERENCE_ANSWER_METRICS, bleu4, rouge_l, string_presence
from ragtune.generation.inference import generate
from ragtune.train.callbacks import TrainingInterrupted
from ragtune.train.distributed import compute_on_main_and_share, is_main_process
from ragtune.train.evaluator import evaluated_final_metrics, final_model_step
from ragtune.train.outputs import dev_metrics_from_history

logger = logging.getLogger(__name__)


def answer_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-L and string presence per answer, corpus BLEU-4: as ragtune.evaluate.answers defines them."""
    n = max(len(references), 1)
    return {"rouge_l": sum(rouge_l(p, r) for p, r in zip(predictions, references)) / n,
            "bleu4": bleu4(list(predictions), list(references)),
            "string_presence": sum(string_presence(p, r) for p, r in zip(predictions, references)) / n}


class StopWhenRequested:
    """A generation stopping criterion: every sequence stops at the next token once ``should_stop()`` is true."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full((input_ids.shape[0],), self.should_stop(), dtype=torch.bool, device=input_ids.device)


def generate_unless_stopped(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                            batch_size: int, should_stop: Callable[[], bool]) -> list[str] | None:
    """``generate``'s answers, or None as soon as ``should_stop()`` is true (checked at every generated token).

    Batches are generate's own (longest prompts first), one call each, so the answers are the same as one
    call would give; a batch cut short is discarded.
    """
    from transformers import StoppingCriteriaList

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    criteria = StoppingCriteriaList([StopWhenRequested(should_stop)])
    answers: dict[int, str] = {}
    for start in range(0, len(order), max(1, batch_size)):
        batch = order[start:start + max(1, batch_size)]
        if should_stop():
            return None
        batch_answers = generate(model, tokenizer, [prompts[i] for i in batch], max_new_tokens, batch_size,
                                 stopping_criteria=criteria)
        if should_stop():
            return None
        answers.update(zip(batch, batch_answers))
    return [answers[i] for i in range(len(prompts))]


def never() -> bool:
    return False


class DevAnswerEvaluator:
    """Greedy answers to the dev prompts (the training prompts, cut the same way), scored against references.

    ``should_stop`` (the run's interrupt state, ``InterruptCheckpointCallback.stop_requested``) is polled at
    every generated token: a SIGTERM or Ctrl-C during the evaluation, which takes minutes at real sizes,
    stops it at once with :class:`TrainingInterrupted` and the run saves right after.
    """

    def __init__(self, tokenizer: Any, prompt_ids: Sequence[Sequence[int]], references: Sequence[str],
                 max_new_tokens: int, batch_size: int = 8, should_stop: Callable[[], bool] | None = None) -> None:
        self.tokenizer = tokenizer
        self.prompt_ids = list(prompt_ids)
        self.references = list(references)
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.should_stop = should_stop or never
        self.last_answers: list[str] = []
        self.answers_by_step: dict[int, list[str]] = {}  # filled by KeepAnswersByStep

    def __len__(self) -> int:
        return len(self.references)

    def __call__(self, model: Any) -> dict[str, float]:
        """The dev metrics of ``model``; raises TrainingInterrupted when stopped."""
        metrics = self.metrics_unless_stopped(model)
        if metrics is None:
            raise TrainingInterrupted("dev evaluation interrupted")
        return metrics

    def shared_metrics(self, model: Any) -> dict[str, float]:
        """Generated on the main process and shared with every rank; when stopped, every rank raises
        TrainingInterrupted (the main process alone raising would leave the others waiting for its result)."""
        metrics = compute_on_main_and_share(lambda: self.metrics_unless_stopped(model))
        if metrics is None:
            raise TrainingInterrupted("dev evaluation interrupted")
        return metrics

    def metrics_unless_stopped(self, model: Any) -> dict[str, float] | None:
        started = time.perf_counter()
        answers = generate_unless_stopped(model, self.tokenizer, self.prompt_ids, self.max_new_tokens,
                                          self.batch_size, self.should_stop)
        if answers is None:
            logger.warning("Dev evaluation stopped after %.1fs (interrupted)", time.perf_counter() - started)
            return None
        self.last_answers = answers
        metrics = answer_metrics(answers, self.references)
        # The console's line per evaluation is ragtune.train.callbacks.DevSummaryCallback's.
        logger.debug("Dev answers (%d, greedy, <= %d new tokens) in %.1fs: %s", len(answers), self.max_new_tokens,
                     time.perf_counter() - started, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        return metrics


def dev_evaluator(tokenizer: Any, dev_tokens: Sequence[Any], dev_examples: Sequence[Any], args: Any,
                  should_stop: Callable[[], bool] | None = None) -> DevAnswerEvaluator:
    """Greedy answers to the first ``--max_dev_generations`` dev prompts, scored against their references."""
    generated = dev_tokens[:args.max_dev_generations]
    return DevAnswerEvaluator(tokenizer, [t.prompt_ids for t in generated],
                              [e.answer for e in dev_examples[:len(generated)]], args.max_new_tokens,
                              args.generation_batch_size, should_stop)


def base_and_final_dev_metrics(trainer: Any, evaluator: DevAnswerEvaluator | None, model: Any
                               ) -> tuple[dict[str, float], dict[str, float]]:
    """The base model's dev metrics (the first evaluation) and the final adapter's.

    The final adapter's are the Trainer's logged ones when it evaluated exactly that adapter (the best, reloaded)
    and its answers were kept (:class:`KeepAnswersByStep`; ``evaluator.last_answers`` are then those answers);
    otherwise (a best step from before a resume) its answers are generated again.
    """
    keep = (*REFERENCE_ANSWER_METRICS, "loss")
    history = dev_metrics_from_history(trainer.state.log_history, "eval_")
    before = {k: v for k, v in history[0][1].items() if k in keep} if history else {}
    if not (evaluator and len(evaluator)):
        return before, {}
    logged = evaluated_final_metrics(trainer.state, "eval_")
    answers = evaluator.answers_by_step.get(final_model_step(trainer.state))
    if logged is not None and (answers is not None or not is_main_process()):  # only the main process answers
        evaluator.last_answers = answers or []
        return before, {k: v for k, v in logged.items() if k in keep}
    return before, evaluator(model)


class KeepAnswersByStep(TrainerCallback):
    """Keep each dev evaluation's answers under its step, so that the final adapter's answers (metrics.json's
    ``dev_answers``) need not be generated again when the best adapter is reloaded."""

    def __init__(self, evaluator: DevAnswerEvaluator) -> None:
        self.evaluator = evaluator

    def on_evaluate(self, args, state, control, **kwargs):
        if self.evaluator.last_answers:
            self.evaluator.answers_by_step[state.global_step] = self.evaluator.last_answers
        return control
