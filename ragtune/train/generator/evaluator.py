"""Dev metrics on generated answers (not teacher-forced logits): what picks the best adapter."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Sequence

from ragtune.core.answer_metrics import REFERENCE_ANSWER_METRICS, bleu4, rouge_l, string_presence
from ragtune.generation.inference import generate
from ragtune.train.outputs import dev_metrics_from_history

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




def dev_evaluator(tokenizer: Any, dev_tokens: Sequence[Any], dev_examples: Sequence[Any], args: Any
                  ) -> DevAnswerEvaluator:
    """Greedy answers to the first ``--max_dev_generations`` dev prompts, scored against their references."""
    generated = dev_tokens[:args.max_dev_generations]
    return DevAnswerEvaluator(tokenizer, [t.prompt_ids for t in generated],
                              [e.answer for e in dev_examples[:len(generated)]], args.max_new_tokens,
                              args.generation_batch_size)


def base_and_final_dev_metrics(trainer: Any, evaluator: DevAnswerEvaluator | None, model: Any
                               ) -> tuple[dict[str, float], dict[str, float]]:
    """The base model's dev metrics (the first evaluation) and the final adapter's.

    The final adapter's are taken from the history when the best adapter is the last step's, which was
    just evaluated; otherwise its answers are generated again.
    """
    keep = (*REFERENCE_ANSWER_METRICS, "loss")
    history = dev_metrics_from_history(trainer.state.log_history, "eval_")
    before = {k: v for k, v in history[0][1].items() if k in keep} if history else {}
    if not (evaluator and len(evaluator)):
        return before, {}
    best = trainer.state.best_model_checkpoint
    best_step = int(Path(best).name.split("-")[-1]) if best else None
    if history and best_step == history[-1][0] == trainer.state.global_step:
        return before, {k: v for k, v in history[-1][1].items() if k in keep}
    return before, evaluator(model)
