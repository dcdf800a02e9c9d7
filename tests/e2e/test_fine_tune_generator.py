"""fine_tune_generator.py as users run it: the template command end to end with --merge, resume after an
interruption, SIGTERM, evaluate_rag.py with the trained adapter, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import LAUNCH_SCRIPT, REPO, assert_one_clear_error, run_script
from launch_script import Recorder, SigtermAt

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN, load_corpus, load_queries, split_queries
from ragtune.core.expansions import load_expansions, load_saved
from ragtune.generation.prompt import rag_messages, trained_system_prompt

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# The template command; its values are the defaults.
TEMPLATE = ["--base_model", "Qwen/Qwen2.5-1.5B-Instruct", "--epochs", "3", "--batch_size", "2",
            "--gradient_accumulation_steps", "8", "--lr", "2e-4", "--lora_r", "16", "--lora_alpha", "32",
            "--lora_target", "all-linear", "--max_seq_length", "2048", "--evaluation_steps", "20",
            "--checkpoint_save_steps", "40", "--resume_from_checkpoint", "auto"]
# Short runs: a dev split, few generated tokens, a high learning rate (divergence would show).
SHORT = ["--max_steps", "6", "--evaluation_steps", "2", "--checkpoint_save_steps", "2", "--lr", "1e-3",
         "--batch_size", "2", "--gradient_accumulation_steps", "2", "--max_seq_length", "512",
         "--max_new_tokens", "4", "--max_dev_generations", "4"]


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)



# ---------------------------------------------------------------------------- end to end


def test_template_command_end_to_end_then_merge_and_load(tiny_qwen2, tmp_path):
    """The template command exactly, plus --base_model (a tiny Qwen2), --output_dir and --merge."""
    out = tmp_path / "generator"
    args = [a if a != "Qwen/Qwen2.5-1.5B-Instruct" else str(tiny_qwen2) for a in TEMPLATE]
    result = run_script("fine_tune_generator.py", *args, "--output_dir", str(out), "--merge", env=ONE_THREAD)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "generation_config.json",
                 "README.md", "metrics.json", "training_curves.png", "merged/model.safetensors"):
        assert (out / name).is_file(), name
    assert list((out / "runs").rglob("events.out.tfevents.*")), "no TensorBoard logs"
    assert "trained part between >>> and <<<" in output and "<|im_end|><<<" in output
    assert "GPU memory (est.)" in output and "trainable = " in output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["global_step"] == 15  # 80 train queries / (2 x 8) = 5 steps per epoch, 3 epochs
    for stage in ("before", "after"):
        assert {"rouge_l", "bleu4", "string_presence"} <= set(metrics["dev_metrics"][stage])
    assert metrics["parameters"]["trainable"] > 0 and metrics["precision"] == "fp32"
    assert metrics["merged"]["checked"] == 4 and metrics["merged"]["identical"] == 4
    assert "Dev answer metrics" in result.stdout and "rouge_l" in (out / "README.md").read_text()

    # The adapter loads the documented way and generates exactly as the merged model does.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, GenerationConfig

    from ragtune.generation.inference import generate, load_tokenizer, prompt_ids_for

    tokenizer = load_tokenizer(str(out))
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_qwen2)), str(out)).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged")).eval()
    config = GenerationConfig.from_pretrained(str(out))
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in config.eos_token_id
    prompts = [prompt_ids_for(tokenizer, rag_messages(q, ["RAIC ra đời năm 2013."]))
               for q in ("RAIC ra đời khi nào?", "CLB có bao nhiêu thành viên?", "Phòng xưởng ở đâu?")]
    assert generate(adapter, tokenizer, prompts, 12) == generate(merged, tokenizer, prompts, 12)
    moved = [n for n, p in adapter.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert moved, "training did not change the adapter: the comparison would prove nothing"


def test_interrupted_run_resumes_from_its_checkpoint_and_ends_like_an_uninterrupted_one(tiny_qwen3, tmp_path,
                                                                                         one_thread):
    import fine_tune_generator
    from ragtune.train.checkpoints import is_complete_checkpoint

    base = ["--base_model", str(tiny_qwen3), *SHORT]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    first = Recorder()
    assert fine_tune_generator.main([*base, "--output_dir", str(straight)], callbacks=[first]) == 0
    assert first.record["start_step"] == 0 and first.record["steps_trained"] == 6

    assert fine_tune_generator.main([*base, "--output_dir", str(resumed)], callbacks=[SigtermAt(3)]) == 143
    assert is_complete_checkpoint(resumed / "checkpoint-3")
    assert not (resumed / "metrics.json").exists()

    second = Recorder()
    assert fine_tune_generator.main([*base, "--output_dir", str(resumed)], callbacks=[second]) == 0
    assert second.record["start_step"] == 3 and second.record["steps_trained"] == 3  # it really resumed
    assert second.record["last_step"] == first.record["last_step"] == 6
    assert second.record["last_step_weights"] == first.record["last_step_weights"]
    assert second.record["final_weights"] == first.record["final_weights"]
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (straight, resumed))
    assert Path(a["best_checkpoint"]).name == Path(b["best_checkpoint"]).name
    # Best-adapter selection and early stopping read eval_rouge_l: every dev evaluation logged it.
    history = json.loads((straight / "checkpoint-6" / "trainer_state.json").read_text())
    evaluations = [e for e in history["log_history"] if "eval_loss" in e]
    assert [e["step"] for e in evaluations] == [0, 2, 4, 6]
    assert all({"eval_rouge_l", "eval_bleu4", "eval_string_presence"} <= set(e) for e in evaluations)
    assert history["best_metric"] == max(e["eval_rouge_l"] for e in evaluations[1:])
    assert a["dev_metrics"]["after"] == pytest.approx(b["dev_metrics"]["after"])
    from safetensors.torch import load_file

    wa, wb = (load_file(str(d / "adapter_model.safetensors")) for d in (straight, resumed))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(v.abs().sum() > 0 for k, v in wa.items() if "lora_B" in k), "LoRA B is still zero: nothing trained"


def test_sigterm_saves_a_checkpoint_and_the_process_exits_143(tiny_qwen2, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(LAUNCH_SCRIPT), "fine_tune_generator.py", "--sigterm_at_step", "2",
         "--", "--base_model", str(tiny_qwen2), *SHORT, "--output_dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **ONE_THREAD})
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "Received SIGTERM" in result.stderr and "--resume_from_checkpoint auto" in result.stderr
    assert "Traceback" not in result.stderr
    from ragtune.train.checkpoints import is_complete_checkpoint

    assert is_complete_checkpoint(out / "checkpoint-2") and not (out / "metrics.json").exists()


# ---------------------------------------------------------------------------- evaluate_rag.py with the adapter


def test_evaluate_rag_generates_with_the_trained_adapter_and_the_training_prompt(tiny_qwen2, tmp_path):
    """A system prompt holding a phone number: masked where it is shown (metrics.json, under --pii warn), used
    exactly by the evaluation."""
    prompt = "Trả lời ngắn. Hotline 0912 345 678."
    out, expansions = tmp_path / "adapter", tmp_path / "map.csv"
    expansions.write_text("clb,câu lạc bộ robotics\n", encoding="utf-8")
    assert run_script("fine_tune_generator.py", "--base_model", str(tiny_qwen2), *SHORT, "--output_dir", str(out),
                      "--system_prompt", prompt, "--expansions", str(expansions), env=ONE_THREAD).returncode == 0
    assert trained_system_prompt(str(out)) == prompt
    assert "0912 345 678" not in (out / "metrics.json").read_text(encoding="utf-8")
    # The run's own dev queries, and the expansion map its distractors' first stage applied, kept with the adapter.
    _, dev = split_queries(load_queries(SAMPLE_TRAIN, load_corpus(SAMPLE_CORPUS)), 0.2, 42)
    written = pd.read_csv(out / "dev_queries.csv", encoding="utf-8-sig", dtype=str, keep_default_na=False)
    assert written["Query"].tolist() == [q.query for q in dev]
    assert written["source"].tolist() == [f"{SAMPLE_TRAIN} row {q.row}" for q in dev]
    assert load_saved(out).entries == load_expansions(str(expansions)).entries
    report = tmp_path / "eval"
    result = run_script("evaluate_rag.py", "--corpus", str(SAMPLE_CORPUS), "--test_data", str(SAMPLE_TRAIN),
                        "--embedding_models", "--answer_k", "3", "--generator_local", str(tiny_qwen2),
                        "--generator_adapter", str(out), "--generator_max_new_tokens", "4",
                        "--output_dir", str(report), env=ONE_THREAD)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    answers = list(report.rglob("answers.csv"))
    assert answers
    # The answers are those of the adapter on the training prompt: the same greedy generation here.
    from ragtune.core.bm25 import BM25Index
    from ragtune.core.ranking import bm25_top_k, tie_ranks
    from ragtune.generation.inference import generate_from_messages, load_generator

    rows = pd.read_csv(answers[0], keep_default_na=False).head(3)

    corpus = load_corpus(SAMPLE_CORPUS)
    top, _ = bm25_top_k(BM25Index(corpus.texts), list(rows["query"]), 3, tie_ranks(corpus.ids))
    model, tokenizer = load_generator(str(tiny_qwen2), str(out))
    expected = generate_from_messages(model, tokenizer, [rag_messages(q, [corpus.texts[i] for i in idx], prompt)
                                                         for q, idx in zip(rows["query"], top)], 4)
    assert list(rows["answer"].astype(str)) == expected


# ---------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    blank = folder / "blank_answer.csv"
    blank.write_text("Query,Ground truth document,Ground truth answer\nRAIC là gì?,1,Một CLB.\nAi sáng lập?,2,\n",
                     encoding="utf-8")
    chat = folder / "chat.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "Xin chào"},
                                             {"role": "assistant", "content": "Chào bạn."}]}) + "\n"
                    + json.dumps({"messages": [{"role": "user", "content": "Chỉ có câu hỏi"}]}) + "\n",
                    encoding="utf-8")
    def chat_file(name: str, *roles: str) -> Path:
        path = folder / name
        turns = [{"role": role, "content": f"{role} {i}"} for i, role in enumerate(roles)]
        path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hỏi"},
                                                 {"role": "assistant", "content": "Đáp"}]}) + "\n"
                        + json.dumps({"messages": turns}) + "\n", encoding="utf-8")
        return path

    broken_template = folder / "broken.jinja"
    broken_template.write_text("{% for m in messages %}{{ m['content'] }}", encoding="utf-8")  # no endfor
    empty_template = folder / "empty.jinja"
    empty_template.write_text("\n", encoding="utf-8")
    from tiny_models import build_tiny_causal_lm

    return {"BLANK": blank, "CHAT": chat,
            "USER_LAST": chat_file("user_last.jsonl", "user", "assistant", "user"),
            "ASSISTANT_FIRST": chat_file("assistant_first.jsonl", "assistant", "user", "assistant"),
            "SYSTEM_MIDDLE": chat_file("system_middle.jsonl", "user", "system", "assistant"),
            "BROKEN_TEMPLATE": broken_template, "EMPTY_TEMPLATE": empty_template,
            "NO_TEMPLATE": build_tiny_causal_lm(folder / "no-template", "qwen2", chat_template=None)}


@pytest.mark.parametrize("args,message", [
    (["--train_data", "BLANK"], "blank_answer.csv row 3: missing or blank answer"),
    (["--train_data", "CHAT"], "chat.jsonl line 2: no assistant turn"),
    (["--base_model", "NO_TEMPLATE"], "has no chat template"),
    (["--train_data", "USER_LAST"], "user_last.jsonl line 2: message 3 is a user turn after the last answer"),
    (["--train_data", "ASSISTANT_FIRST"], "assistant_first.jsonl line 2: message 1 is an assistant turn; the "
                                          "conversation must start with a user turn"),
    (["--train_data", "SYSTEM_MIDDLE"], "system_middle.jsonl line 2: message 2 is a system turn"),
    (["--chat_template", "BROKEN_TEMPLATE"], "broken.jinja: the chat template cannot be rendered "
                                             "(TemplateSyntaxError"),
    (["--chat_template", "EMPTY_TEMPLATE"], "empty.jinja is empty"),
    (["--lora_r", "0"], "--lora_r must be at least 1, got 0"),
    (["--qlora"], "--qlora needs a CUDA GPU"),
    (["--lora_target", "q_proj", "query"], "--lora_target: query not among this model's linear modules: down_proj"),
    (["--max_seq_length", "64"], "--max_seq_length 64 is too small for"),
    (["--metric_for_best_model", "ndcg@5"], "--metric_for_best_model must be one of"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args, message, bad_files, tiny_qwen2, tmp_path):
    if args == ["--qlora"] and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    args = [str(bad_files[a]) if a in bad_files else a for a in args]
    base = [] if "--base_model" in args else ["--base_model", str(tiny_qwen2)]
    out = tmp_path / "out"
    result = run_script("fine_tune_generator.py", *base, *args, "--output_dir", str(out), env=ONE_THREAD)
    assert_one_clear_error(result, message, out)
