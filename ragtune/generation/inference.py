"""Loading the generator (base, optional LoRA adapter, GGUF bases) and greedy batched generation.

Used by fine_tune_generator.py (dev answers, merge check) and meant for evaluate_rag.py's local
generator, so that answers are generated from the prompt the adapter was trained on, with the same
end tokens and with Qwen3's thinking off.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from ragtune.core.errors import UserError
from ragtune.core.model_specs import is_gguf
from ragtune.core.models import explain_load_failure
from ragtune.generation.chat import encode, end_of_turn_ids, render_chat
from ragtune.generation.prompt import Messages

__all__ = [
    "generate",
    "generate_from_messages",
    "generation_config_for",
    "is_gguf",
    "load_causal_lm",
    "load_generator",
    "load_tokenizer",
    "prompt_ids_for",
    "split_gguf",
    "base_load_code",
]

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def split_gguf(name: str) -> tuple[str, dict[str, Any]]:
    """``path/model.gguf`` -> (folder, {"gguf_file": "model.gguf"}): transformers loads GGUF from a folder + file."""
    path = Path(name).expanduser()
    if is_gguf(path):
        if not path.is_file():
            raise UserError(f"--base_model: GGUF file not found: {path}")
        return str(path.parent), {"gguf_file": path.name}
    return name, {}


def load_tokenizer(name: str, flag: str = "--base_model", chat_template_file: str | None = None,
                   template_flag: str | None = "--chat_template"):
    """The model's tokenizer, with a chat template (its own, or ``--chat_template FILE``) and a pad token.

    ``template_flag``: the script's flag for a template file (named in the advice when the model has none);
    None for a script without one (evaluate_rag.py uses the template the model or adapter folder saved).
    """
    from transformers import AutoTokenizer

    folder, extra = split_gguf(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
    except Exception as err:  # noqa: BLE001 - any failure to load is the user's model
        raise explain_load_failure(name, err, flag) from err
    if chat_template_file:
        tokenizer.chat_template = read_chat_template(chat_template_file, template_flag or "--chat_template")
    if not getattr(tokenizer, "chat_template", None):
        advice = (f"pass a Jinja template with {template_flag} FILE" if template_flag else
                  "fine-tune it with fine_tune_generator.py --chat_template FILE, whose adapter folder keeps it")
        raise UserError(f"{flag}: {name} has no chat template (a base model, not an instruct/chat one?); use its "
                        f"-Instruct variant or {advice}")
    check_chat_template(tokenizer, f"{template_flag} {chat_template_file}" if chat_template_file else f"{flag} {name}")
    if tokenizer.pad_token is None:
        # Padding is masked out of attention and labels, so any token serves; eos is always there.
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def base_load_code(base_model: str) -> str:
    """The Python that loads ``base_model`` as transformers needs it (a GGUF file: its folder + ``gguf_file``):
    the final log line and the adapter card print it, so it must run as printed."""
    folder, extra = split_gguf(base_model) if is_gguf(base_model) else (base_model, {})
    kwargs = "".join(f", {key}={value!r}" for key, value in extra.items())
    return f"AutoModelForCausalLM.from_pretrained({folder!r}{kwargs})"


def read_chat_template(path: str, flag: str) -> str:
    """A ``--chat_template`` file's Jinja text; a missing or empty file is the user's error, said as such."""
    file = Path(path)
    if not file.is_file():
        raise UserError(f"{flag}: file not found: {file}")
    text = file.read_text(encoding="utf-8")
    if not text.strip():
        raise UserError(f"{flag}: {file} is empty (give a Jinja chat template, e.g. the ChatML one of Qwen2.5)")
    return text


def check_chat_template(tokenizer: Any, source: str) -> None:
    """Render a user turn and an answer once, so that a broken template (Jinja syntax, a template that raises)
    fails here in one line naming its source, not as a traceback in the middle of building examples. (No system
    turn: some valid templates refuse one, and --system_prompt '' trains without it.)"""
    probe = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    try:
        tokenizer.apply_chat_template(probe, tokenize=False)
    except Exception as err:  # noqa: BLE001 - jinja2's TemplateSyntaxError, TemplateError, or what the template raises
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        line = getattr(err, "lineno", None)
        raise UserError(f"{source}: the chat template cannot be rendered ({type(err).__name__}"
                        f"{f' at line {line}' if line else ''}: {detail})") from err


def load_causal_lm(name: str, dtype: Any = None, flag: str = "--base_model", **kwargs: Any):
    """``AutoModelForCausalLM.from_pretrained`` with GGUF support and one-line errors.

    A GGUF file is dequantised to plain float weights, but transformers keeps its GGUF quantizer on
    the model, and ``save_pretrained`` then refuses ("quantized with gguf and is not serializable")
    and the Trainer refuses to train it ("gguf ... do not support training"). Removing the
    quantization config (transformers' own helper) makes it the plain model it is.
    """
    from transformers import AutoModelForCausalLM

    folder, extra = split_gguf(name)
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(folder, **extra, **kwargs)
    except Exception as err:  # noqa: BLE001
        raise explain_load_failure(name, err, flag) from err
    if extra:
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None:
            quantizer.remove_quantization_config(model)  # also drops config.quantization_config, is_quantized
        model.hf_quantizer = None
        if dtype is not None:
            model.to(dtype)
    return model


def generation_config_for(model: Any, tokenizer: Any, max_new_tokens: int):
    """Greedy decoding that stops at the end-of-turn token(s) the model was trained to emit."""
    from transformers import GenerationConfig

    config = GenerationConfig.from_dict(model.generation_config.to_dict()) if getattr(
        model, "generation_config", None) is not None else GenerationConfig()
    config.eos_token_id = end_of_turn_ids(tokenizer, config)
    config.pad_token_id = tokenizer.pad_token_id
    config.do_sample = False
    config.use_cache = True  # training turns the model's KV cache off (checkpointing); generation needs it
    config.max_new_tokens = max_new_tokens
    for unused in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty"):
        setattr(config, unused, None)  # greedy: sampling settings would only trigger warnings
    return config


def load_generator(base: str, adapter: str | None = None, device: str | None = None, dtype: Any = None,
                   base_flag: str = "--generator_local", adapter_flag: str = "--generator_adapter"):
    """(model, tokenizer) for generation: the base (folder, Hub id or .gguf) plus an optional peft adapter.

    The adapter folder written by fine_tune_generator.py holds the tokenizer (with the chat template it
    was trained with) and the generation config; they win over the base's.
    """
    adapter_dir = Path(adapter).expanduser() if adapter else None
    if adapter_dir is not None and not (adapter_dir / "adapter_config.json").is_file():
        raise UserError(f"{adapter_flag}: {adapter} is not a peft adapter folder (no adapter_config.json)")
    has_tokenizer = adapter_dir is not None and any((adapter_dir / f).is_file() for f in TOKENIZER_FILES)
    tokenizer = (load_tokenizer(str(adapter_dir), adapter_flag, template_flag=None) if has_tokenizer
                 else load_tokenizer(base, base_flag, template_flag=None))
    model = load_causal_lm(base, dtype=dtype, flag=base_flag)
    if adapter_dir is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(adapter_dir))
        except Exception as err:  # noqa: BLE001
            raise UserError(f"{adapter_flag}: cannot load the LoRA adapter {adapter_dir} on {base}: "
                            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}") from err
        if (adapter_dir / "generation_config.json").is_file():
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(str(adapter_dir))
    if device:
        model.to(device)
    model.eval()
    return model, tokenizer


def prompt_ids_for(tokenizer: Any, messages: Messages) -> list[int]:
    """The prompt exactly as in training: chat template, generation prompt, thinking off."""
    return encode(tokenizer, render_chat(tokenizer, messages, add_generation_prompt=True))


def generate(model: Any, tokenizer: Any, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             batch_size: int = 8, max_input_tokens: int | None = None, stopping_criteria: Any = None) -> list[str]:
    """Greedy answers for tokenised prompts, left-padded in batches; the prompt is not part of the answer.

    Prompts longer than ``max_input_tokens`` keep their end (the question sits at the end of the prompt).
    ``stopping_criteria`` (transformers' StoppingCriteriaList) can cut generation short (an interrupted run).
    """
    config = generation_config_for(model, tokenizer, max_new_tokens)
    pad = tokenizer.pad_token_id
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    answers: list[str] = []
    # Longest first: batches of similar length waste less padding; results are put back in order.
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: dict[int, str] = {}
    try:
        for start in range(0, len(order), max(1, batch_size)):
            batch = order[start:start + batch_size]
            rows = [list(prompts[i])[-max_input_tokens:] if max_input_tokens else list(prompts[i]) for i in batch]
            width = max(len(r) for r in rows)
            input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
            attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
            with torch.no_grad():
                out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config,
                                     stopping_criteria=stopping_criteria)
            for i, row in zip(batch, out[:, width:]):
                results[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
    finally:
        if was_training:
            model.train()
    answers = [results[i] for i in range(len(prompts))]
    return answers


def generate_from_messages(model: Any, tokenizer: Any, prompts: Sequence[Messages], max_new_tokens: int,
                           batch_size: int = 8, max_input_tokens: int | None = None) -> list[str]:
    """What evaluate_rag.py's local generator calls: messages from ragtune.generation.prompt.rag_messages."""
    return generate(model, tokenizer, [prompt_ids_for(tokenizer, m) for m in prompts], max_new_tokens, batch_size,
                    max_input_tokens)
