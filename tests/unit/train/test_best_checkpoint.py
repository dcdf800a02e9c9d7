"""Best-checkpoint ties go to the later checkpoint (more training at an equal dev score), in ragtune's save-best
callback and in the installed Trainer's own best-model tracking; an adapter equal to its base is a warning, at
the end of training and in the --merge check."""

from __future__ import annotations

import argparse
import logging

import pytest
import torch
from transformers import Trainer, TrainerControl, TrainerState
from transformers.trainer_utils import SaveStrategy

from ragtune.train.callbacks import best_model_callbacks


def evaluate_like_the_trainer(scores: list[tuple[int, float]], greater_is_better: bool = True, patience: int = 0):
    """Each (step, score) as the Trainer handles an evaluation during training: the callbacks' ``on_evaluate`` in
    the runner's order, then the installed ``Trainer._determine_best_metric``. Returns the state, and per step
    whether a checkpoint was asked for and whether early stopping fired."""
    args = argparse.Namespace(metric_for_best_model="eval_rouge_l", greater_is_better=greater_is_better,
                              save_strategy=SaveStrategy.STEPS, early_stopping_patience=patience)
    trainer = argparse.Namespace(args=args, state=TrainerState())
    callbacks = best_model_callbacks(args, has_dev=True)
    saves, stopped = {}, {}
    for step, score in scores:
        trainer.state.global_step = step
        control = TrainerControl()
        metrics = {"eval_rouge_l": score}
        for callback in callbacks:
            control = callback.on_evaluate(args, trainer.state, control, metrics=metrics) or control
        Trainer._determine_best_metric(trainer, metrics=metrics, trial=None)
        saves[step], stopped[step] = control.should_save, control.should_training_stop
    return trainer.state, saves, stopped


def test_a_tie_goes_to_the_later_checkpoint():
    state, saves, _ = evaluate_like_the_trainer([(2, 0.5), (4, 0.5), (6, 0.5)])
    assert state.best_global_step == 6 and state.best_metric == 0.5  # the score itself, not a nudged one
    assert all(saves.values())  # each tie is saved: load_best_model_at_end can only load a checkpoint that exists

    state, saves, _ = evaluate_like_the_trainer([(2, 0.5), (4, 0.6), (6, 0.6), (8, 0.4)])
    assert state.best_global_step == 6 and state.best_metric == 0.6 and not saves[8]


def test_a_tie_goes_to_the_later_checkpoint_when_lower_is_better():
    state, _, _ = evaluate_like_the_trainer([(2, 1.5), (4, 1.2), (6, 1.2), (8, 1.3)], greater_is_better=False)
    assert state.best_global_step == 6 and state.best_metric == 1.2


def test_a_tie_is_still_no_improvement_for_early_stopping():
    _, _, stopped = evaluate_like_the_trainer([(2, 0.5), (4, 0.5), (6, 0.5)], patience=2)
    assert stopped == {2: False, 4: False, 6: True}


# ---------------------------------------------------------------------------- an adapter equal to its base


def lora_model(init_lora_weights: bool = True):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = torch.nn.Sequential()
    base.add_module("proj", torch.nn.Linear(4, 4))
    return get_peft_model(base, LoraConfig(r=2, target_modules=["proj"], init_lora_weights=init_lora_weights))


def test_an_adapter_whose_lora_b_is_still_zero_is_reported_unchanged(caplog):
    from ragtune.train.generator.lora import adapter_is_unchanged, warn_if_adapter_unchanged

    fresh = lora_model()
    assert adapter_is_unchanged(fresh) is True
    with caplog.at_level(logging.WARNING):
        warn_if_adapter_unchanged(fresh)
    assert "The final adapter equals its base model" in caplog.text

    caplog.clear()
    trained = lora_model(init_lora_weights=False)
    assert adapter_is_unchanged(trained) is False
    assert adapter_is_unchanged(torch.nn.Linear(4, 4)) is None  # not a LoRA model: nothing to say
    with caplog.at_level(logging.WARNING):
        warn_if_adapter_unchanged(trained)
        warn_if_adapter_unchanged(torch.nn.Linear(4, 4))
    assert caplog.text == ""


@pytest.mark.parametrize("zero_adapter", [True, False])
def test_the_merge_check_compares_the_merged_model_with_the_base(zero_adapter, tiny_gpt2, tmp_path, caplog):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ragtune.generation.inference import load_tokenizer
    from ragtune.train.generator.merge import merge_adapter

    base, adapter = tiny_gpt2
    if zero_adapter:  # peft's default initialisation: B = 0, the adapter adds nothing
        adapter = tmp_path / "zero-lora"
        get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                       LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"])).save_pretrained(str(adapter))
    tokenizer = load_tokenizer(str(base))
    prompts = [tokenizer.encode(text) for text in ("xin chao", "raic la gi", "cau lac bo")]
    with caplog.at_level(logging.WARNING):
        result = merge_adapter(str(base), adapter, tmp_path / "merged", tokenizer, prompts, 8)
    assert result["checked"] == 3 and result["identical"] == 3
    warned = "answers exactly like the base model" in caplog.text
    if zero_adapter:
        assert result["same_as_base"] == 3 and warned
    else:
        assert result["same_as_base"] < 3 and not warned
