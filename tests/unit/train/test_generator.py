"""ragtune.train.generator: labels, truncation, training data, LoRA and the memory estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TRAIN
from ragtune.core.errors import UserError
from ragtune.generation.chat import end_of_turn_ids
from ragtune.generation.prompt import DEFAULT_SYSTEM_PROMPT, DEFAULT_UNANSWERABLE_ANSWER, rag_messages
from ragtune.train.generator.data import GeneratorExample, load_generator_data
from ragtune.train.generator.tokenize import IGNORE_INDEX, ExampleTokenizer, context_caps


def tokenizer_of(folder: Path):
    from ragtune.generation.inference import load_tokenizer

    return load_tokenizer(str(folder))


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


def test_distractors_are_retrieved_for_the_expanded_query_and_the_prompt_keeps_the_question_as_asked():
    """--expansions: the distractors' first stage sees the query as the pipeline's will; the model is asked the
    question as written."""
    from ragtune.core.data import load_corpus, load_queries
    from ragtune.core.expansions import QueryExpander
    from ragtune.train.generator.data import build_rag_examples, retrieve_distractors

    expander = QueryExpander({"clb": "câu lạc bộ robotics", "raic": "robotics and ai club"})
    corpus = load_corpus(SAMPLE_CORPUS)
    queries = load_queries(SAMPLE_TRAIN, corpus)
    assert any(expander(q.query) != q.query for q in queries)
    data = load_generator_data(str(SAMPLE_TRAIN), str(SAMPLE_CORPUS), 0.0, 42, 2, None, 0.0, "", expander=expander)
    expanded = build_rag_examples(queries, corpus, retrieve_distractors(queries, corpus, expander=expander), 2,
                                  None, 42, str(SAMPLE_TRAIN))
    plain = load_generator_data(str(SAMPLE_TRAIN), str(SAMPLE_CORPUS), 0.0, 42, 2, None, 0.0, "")
    assert [e.contexts for e in data.train] == [e.contexts for e in expanded]
    assert [e.contexts for e in data.train] != [e.contexts for e in plain.train]
    assert [e.question for e in data.train] == [q.query for q in queries]


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


def test_more_distractors_than_the_corpus_holds_are_reported_as_what_prompts_hold(tmp_path, caplog):
    """--num_distractors 50 on a 10-passage corpus: the summary says how many prompts really hold, with a warning."""
    import logging

    import pandas as pd

    corpus = tmp_path / "corpus.csv"
    pd.DataFrame({"STT": range(1, 11), "Văn bản": [f"Đoạn văn số {i} về câu lạc bộ." for i in range(1, 11)]}
                 ).to_csv(corpus, index=False)
    train = tmp_path / "train.csv"
    pd.DataFrame({"Query": [f"Câu hỏi {i} về đoạn {i}?" for i in range(1, 6)], "Ground truth document": range(1, 6),
                  "Ground truth answer": [f"Đáp án {i}." for i in range(1, 6)]}).to_csv(train, index=False)
    with caplog.at_level(logging.WARNING):
        data = load_generator_data(str(train), str(corpus), 0.0, 42, 50, None, 0.0, "")
    assert {len(e.contexts) for e in data.train} == {10}  # 1 labelled + the 9 others
    assert "9 distractor(s) (of 50 asked) per prompt" in data.description
    assert "--num_distractors 50: only 9 non-relevant passage(s) per prompt" in caplog.text
