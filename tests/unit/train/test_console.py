"""The quiet console of the fine-tuning scripts, piece by piece: one line per dev evaluation instead of the Trainer's
raw dictionaries, the final dev metrics taken from the training log instead of a repeated evaluation, no colour code
or known-harmless warning in a log, and the next command to run."""

from __future__ import annotations

import argparse
import logging
import shlex
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import ProgressCallback, TrainerControl, TrainerState

from ragtune.core import io
from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN
from ragtune.train.callbacks import ConsoleProgressCallback, DevSummaryCallback, use_console_progress
from ragtune.train.evaluator import DevMetricsEvaluator, evaluated_final_metrics
from ragtune.train.next_steps import (
    after_embedding_model,
    after_evaluation,
    after_generator,
    after_reranker,
    after_split,
    log_next_commands,
)

HISTORY = [
    {"eval_dev_ndcg@5": 0.40, "eval_dev_hit@5": 0.5, "eval_dev_ndcg@3": 0.3, "eval_runtime": 1.0, "step": 0},
    {"loss": 2.5, "learning_rate": 1e-5, "step": 1},
    {"loss": 2.1, "learning_rate": 2e-5, "step": 4},
    {"eval_dev_ndcg@5": 0.52, "eval_dev_hit@5": 0.6, "eval_dev_ndcg@3": 0.4, "eval_runtime": 1.5, "step": 4},
    {"loss": 1.9, "learning_rate": 2e-5, "step": 8},
    {"eval_dev_ndcg@5": 0.52, "eval_dev_hit@5": 0.7, "eval_dev_ndcg@3": 0.5, "eval_runtime": 1.2, "step": 8},
    {"loss": 1.7, "learning_rate": 1e-5, "step": 12},
    {"eval_dev_ndcg@5": 0.45, "eval_dev_hit@5": 0.6, "eval_dev_ndcg@3": 0.4, "eval_runtime": 1.1, "step": 12},
]


def state_at(step: int, best_checkpoint: str | None = None) -> TrainerState:
    state = TrainerState()
    state.global_step, state.epoch = step, 1.0
    state.log_history = [entry for entry in HISTORY if entry["step"] <= step]
    state.best_model_checkpoint = best_checkpoint
    return state


def test_one_line_per_dev_evaluation_with_the_best_trained_step():
    summary = DevSummaryCallback("eval_dev_", "ndcg@5")
    assert summary.summary(state_at(0), HISTORY[0]) == \
        "dev @ step 0 (base model): ndcg@5 0.4000, hit@5 0.5000 [1.0s]"
    # A tie goes to the later step, as the best checkpoint does; the other cutoffs stay in TensorBoard.
    assert summary.summary(state_at(12), HISTORY[-1]) == \
        "dev @ step 12: ndcg@5 0.4500 (best 0.5200 at step 8), hit@5 0.6000; train loss 1.7 [1.1s]"


def test_the_generators_line_names_its_dev_loss():
    metrics = {"eval_loss": 1.25, "eval_rouge_l": 0.5, "eval_bleu4": 0.2, "eval_runtime": 3.0,
               "eval_samples_per_second": 1.0, "epoch": 1.0}
    state = TrainerState()
    state.global_step, state.log_history = 2, [{"loss": 1.5, "step": 2}, {**metrics, "step": 2}]
    assert DevSummaryCallback("eval_", "rouge_l").summary(state, metrics) == \
        "dev @ step 2: rouge_l 0.5000 (best 0.5000 at step 2), dev loss 1.2500, bleu4 0.2000; train loss 1.5 [3.0s]"


def test_the_raw_log_dictionaries_reach_the_console_only_with_verbose(capsys):
    args, state, control = SimpleNamespace(), TrainerState(), TrainerControl()
    state.max_steps = 10
    logs = {"loss": 2.5, "learning_rate": 1e-5, "eval_samples_per_second": 0.0}
    for verbose in (False, True):
        callback = ConsoleProgressCallback(verbose)
        callback.on_train_begin(args, state, control)
        callback.on_log(args, state, control, logs=dict(logs))
        bar = callback.training_bar
        callback.on_train_end(args, state, control)
        printed = capsys.readouterr().out
        assert ("'eval_samples_per_second'" in printed) is verbose, printed
        if not verbose:
            assert bar.postfix == "loss=2.5, lr=1e-05"


def test_the_trainers_console_callback_is_swapped(tmp_path):
    import torch
    from transformers import Trainer, TrainingArguments

    trainer = Trainer(model=torch.nn.Linear(2, 1), args=TrainingArguments(output_dir=str(tmp_path), report_to="none"))
    use_console_progress(trainer, verbose=False)
    kinds = [type(c) for c in trainer.callback_handler.callbacks]
    assert ConsoleProgressCallback in kinds and ProgressCallback not in kinds


def test_the_final_models_metrics_come_from_the_log_when_it_was_evaluated():
    assert evaluated_final_metrics(state_at(12, "out/checkpoint-8"), "eval_dev_") == \
        {"ndcg@5": 0.52, "hit@5": 0.7, "ndcg@3": 0.5}
    # No best checkpoint reloaded: the last step's model, evaluated at that step.
    assert evaluated_final_metrics(state_at(12), "eval_dev_")["ndcg@5"] == 0.45
    last_not_evaluated = state_at(12)
    last_not_evaluated.global_step = 13
    assert evaluated_final_metrics(last_not_evaluated, "eval_dev_") is None


class CountingEvaluator(DevMetricsEvaluator):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def compute(self, model) -> dict[str, float]:
        self.calls += 1
        return {"ndcg@5": 0.99}


def test_the_embedding_and_reranker_scripts_do_not_evaluate_the_best_checkpoint_again():
    from ragtune.train.embedder.evaluator import final_dev_metrics as embedder_final
    from ragtune.train.reranker.evaluator import final_dev_metrics as reranker_final

    stored = []
    model = SimpleNamespace(model_card_data=SimpleNamespace(set_evaluation_metrics=lambda *a: stored.append(a)))
    for final in (embedder_final, reranker_final):
        evaluator = CountingEvaluator()
        trainer = SimpleNamespace(state=state_at(12, "out/checkpoint-8"))
        assert final(evaluator, model, trainer) == {"ndcg@5": 0.52, "hit@5": 0.7, "ndcg@3": 0.5}
        assert evaluator.calls == 0
        assert stored[-1][1] == {"dev_ndcg@5": 0.52, "dev_hit@5": 0.7, "dev_ndcg@3": 0.5}  # the card's numbers
        assert final(evaluator, model, SimpleNamespace(state=state_at(12))) == {"ndcg@5": 0.45, "hit@5": 0.6,
                                                                               "ndcg@3": 0.4}  # the last step's
        unevaluated = state_at(12)  # the final model was never evaluated: it is now, once
        unevaluated.global_step = 13
        assert final(evaluator, model, SimpleNamespace(state=unevaluated)) == {"ndcg@5": 0.99}
        assert evaluator.calls == 1


def test_the_generators_final_answers_are_the_best_steps_not_generated_again():
    from ragtune.train.generator.evaluator import DevAnswerEvaluator, KeepAnswersByStep, base_and_final_dev_metrics

    evaluator = DevAnswerEvaluator(tokenizer=None, prompt_ids=[[1]], references=["a"], max_new_tokens=4)
    evaluator.metrics_unless_stopped = lambda model: pytest.fail("generated again")
    keep = KeepAnswersByStep(evaluator)
    state = TrainerState()
    for step, rouge, answer in [(0, 0.1, "base"), (2, 0.6, "best"), (4, 0.3, "last")]:
        state.global_step = step
        state.log_history.append({"eval_rouge_l": rouge, "eval_loss": 1.0, "eval_runtime": 2.0, "step": step})
        evaluator.last_answers = [answer]
        keep.on_evaluate(None, state, None)
    state.best_model_checkpoint = "out/checkpoint-2"
    before, after = base_and_final_dev_metrics(SimpleNamespace(state=state), evaluator, model=None)
    assert before == {"rouge_l": 0.1, "loss": 1.0} and after == {"rouge_l": 0.6, "loss": 1.0}
    assert evaluator.last_answers == ["best"]  # metrics.json's dev_answers: the final adapter's


def test_no_colour_code_reaches_a_log_line_and_the_load_report_is_one_line():
    record = logging.LogRecord("transformers.modeling_utils", logging.WARNING, __file__, 1,
                               "\x1b[1mBertForSequenceClassification LOAD REPORT\x1b[0m from: m\nKey | Status\n"
                               "classifier.bias   | MISSING | \nclassifier.weight | MISSING | \n", (), None)
    assert io.LoadReportSummary().filter(record)
    line = io.PlainFormatter("%(levelname)s %(message)s").format(record)
    assert line == "WARNING BertForSequenceClassification LOAD REPORT from: m: 2 missing weight(s) (--verbose " \
                   "shows which)"
    colours = logging.LogRecord("x", logging.INFO, __file__, 1, "\x1b[33myellow\x1b[0m and \x1b[A up", (), None)
    assert "\x1b" not in io.PlainFormatter("%(message)s").format(colours)


def test_only_the_known_harmless_warnings_are_silenced():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        io.setup_logging()
        for category, message in [(FutureWarning, "`CrossEncoder` only defines `gradient_checkpointing_enable`, x"),
                                  (FutureWarning, "`is_gradient_checkpointing` is deprecated and will be removed"),
                                  (UserWarning, "'pin_memory' argument is set as true but no accelerator is found"),
                                  (FutureWarning, "something else is deprecated"),
                                  (UserWarning, "pin_memory is fine")]:
            warnings.warn(message, category)
    assert [str(w.message) for w in caught] == ["something else is deprecated", "pin_memory is fine"]
    trainer_utils = logging.getLogger("transformers.trainer_utils")
    record = trainer_utils.makeRecord(trainer_utils.name, logging.WARNING, __file__, 1,
                                      "mtime may not be reliable on this filesystem, falling back", (), None)
    other = trainer_utils.makeRecord(trainer_utils.name, logging.WARNING, __file__, 1, "another warning", (), None)
    assert not trainer_utils.filter(record) and trainer_utils.filter(other)


def sample_args(**changes) -> argparse.Namespace:
    return argparse.Namespace(**{"output_dir": "outputs/my model", "corpus": str(SAMPLE_CORPUS),
                                 "train_data": str(SAMPLE_TRAIN), "embedding_model": "outputs/bge-m3-finetuned",
                                 "base_model": "Qwen/Qwen2.5-1.5B-Instruct", **changes})


def test_the_next_commands_name_the_real_folders_and_parse_with_the_next_scripts_flags(tmp_path):
    import evaluate_rag
    from ragtune.train.generator.arguments import build_parser as generator_parser
    from ragtune.train.reranker.arguments import build_parser as reranker_parser

    parsers = {"fine_tune_reranker.py": reranker_parser(), "fine_tune_generator.py": generator_parser(),
               "evaluate_rag.py": evaluate_rag.build_parser()}
    (tmp_path / "mine_test.csv").write_text("Query,Ground truth document\n")
    custom = sample_args(corpus="my corpus.csv", train_data=str(tmp_path / "mine_train.csv"))
    commands = [*after_embedding_model(sample_args()), *after_reranker(sample_args()), *after_generator(custom)]
    assert commands[0] == "python fine_tune_reranker.py --embedding_model 'outputs/my model'"
    assert commands[1] == "python fine_tune_generator.py --embedding_model outputs/bge-m3-finetuned"
    assert commands[2] == ("python evaluate_rag.py --embedding_models outputs/bge-m3-finetuned --reranker_models "
                           "'outputs/my model'")
    assert commands[3] == ("python evaluate_rag.py --embedding_models outputs/bge-m3-finetuned --generator_local "
                           "Qwen/Qwen2.5-1.5B-Instruct --generator_adapter 'outputs/my model' --corpus 'my corpus.csv' "
                           f"--test_data {tmp_path / 'mine_test.csv'}")
    for command in commands:
        words = shlex.split(command)
        assert words[0] == "python"
        parsers[words[1]].parse_args(words[2:])  # every flag exists there (an unknown one exits 2)


def test_the_split_and_the_evaluation_name_their_next_command_with_the_files_they_wrote(caplog):
    import predict_rag
    import ragtune.app
    from ragtune.train.embedder.arguments import build_parser as embedder_parser

    parsers = {"fine_tune_bge_m3.py": embedder_parser(), "predict_rag.py": predict_rag.build_parser(),
               "-m ragtune.app": ragtune.app.build_parser()}
    after = after_split(None, Path("data/my queries_train.xlsx"))
    assert after == ["python fine_tune_bge_m3.py --corpus YOUR_CORPUS.csv --train_data 'data/my queries_train.xlsx'"]
    evaluation = after_evaluation(argparse.Namespace(output_dir="outputs/my eval"))
    assert evaluation == ["python predict_rag.py --from 'outputs/my eval' --system best --queries YOUR_QUERIES.xlsx "
                          "--output predictions.xlsx", "python -m ragtune.app --from 'outputs/my eval' --system best"]
    for command in after + evaluation:
        script = command.split(" --")[0].removeprefix("python ")
        parsers[script].parse_args(shlex.split(command.removeprefix(f"python {script}")))
    with caplog.at_level(logging.INFO, logger="ragtune.train.next_steps"):
        log_next_commands(after + evaluation)
    assert "(YOUR_CORPUS.csv: the passages" in caplog.text and "(YOUR_QUERIES.xlsx: the questions" in caplog.text
