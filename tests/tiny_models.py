"""Tiny models built at test time: random weights, a tokenizer trained on the sample corpus.

They are saved to a folder and loaded with the real ``from_pretrained`` code, so the scripts
run exactly as with a real model, in seconds on a CPU and without the network.
"""

from __future__ import annotations

from pathlib import Path

from ragtune.core.data import SAMPLE_CORPUS, SAMPLE_TEST, SAMPLE_TRAIN

NUM_LAYERS = 6  # more than the template's --freeze_layers 4


def _sample_texts() -> list[str]:
    import pandas as pd

    texts = pd.read_csv(SAMPLE_CORPUS, encoding="utf-8-sig")["Văn bản"].astype(str).tolist()
    for path in (SAMPLE_TRAIN, SAMPLE_TEST):
        texts += pd.read_csv(path, encoding="utf-8-sig")["Query"].astype(str).tolist()
    return texts


def build_tokenizer(folder: Path):
    """A WordPiece tokenizer trained on the sample corpus, saved as a BERT tokenizer."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(_sample_texts(), trainers.WordPieceTrainer(vocab_size=2000, special_tokens=special))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    fast.save_pretrained(folder)
    return fast


def _config(vocab_size: int, **extra):
    from transformers import BertConfig

    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=NUM_LAYERS, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=512, **extra)


def build_tiny_encoder(folder: Path, seed: int = 0) -> Path:
    """A plain Hugging Face BertModel (no sentence-transformers files)."""
    import torch
    from transformers import BertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    torch.manual_seed(seed)
    BertModel(_config(len(tokenizer))).save_pretrained(folder)
    return folder


def build_tiny_sentence_transformer(folder: Path, seed: int = 0) -> Path:
    """A sentence-transformers model (BERT + mean pooling + normalize)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    folder = Path(folder)
    encoder_dir = build_tiny_encoder(folder.parent / (folder.name + "-encoder"), seed)
    transformer = Transformer(str(encoder_dir))
    model = SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension()), Normalize()])
    model.save(str(folder))
    return folder


def build_tiny_cross_encoder(folder: Path, seed: int = 0) -> Path:
    """A BertForSequenceClassification with one logit (a reranker head with random weights)."""
    import torch
    from transformers import BertForSequenceClassification

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    torch.manual_seed(seed)
    BertForSequenceClassification(_config(len(tokenizer), num_labels=1)).save_pretrained(folder)
    return folder


# ---------------------------------------------------------------------------- tiny causal LMs (generator)

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")

# Qwen3's thinking switch, as its template has it: the last assistant turn always carries a (here
# empty) think block, and with enable_thinking=false the generation prompt carries the same block.
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and loop.last %}"
    "{{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}")


def build_chat_tokenizer(folder: Path, chat_template: str | None = CHATML_TEMPLATE):
    """A byte-level BPE tokenizer trained on the sample texts, with Qwen's special tokens and a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from ragtune.generation.prompt import DEFAULT_SYSTEM_PROMPT, DEFAULT_UNANSWERABLE_ANSWER

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
    trainer = trainers.BpeTrainer(vocab_size=1500, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = _sample_texts() + [DEFAULT_SYSTEM_PROMPT, DEFAULT_UNANSWERABLE_ANSWER, "Ngữ cảnh: Câu hỏi:"]
    tok.train_from_iterator(texts, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   additional_special_tokens=special[1:], model_max_length=4096)
    if chat_template:
        fast.chat_template = chat_template
    fast.save_pretrained(folder)
    return fast


def build_tiny_causal_lm(folder: Path, arch: str = "qwen2", seed: int = 0, chat_template: str | None = "default") -> Path:
    """A 2-layer Qwen2 or Qwen3 causal LM with random weights (tied embeddings, GQA, as the real ones)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if chat_template == "default":
        chat_template = QWEN3_TEMPLATE if arch == "qwen3" else CHATML_TEMPLATE
    tokenizer = build_chat_tokenizer(folder, chat_template)
    config_cls, model_cls = (Qwen3Config, Qwen3ForCausalLM) if arch == "qwen3" else (Qwen2Config, Qwen2ForCausalLM)
    config = config_cls(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=4096,
                        tie_word_embeddings=True, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, bos_token_id=None)
    torch.manual_seed(seed)
    model = model_cls(config)
    model.generation_config = GenerationConfig(eos_token_id=[tokenizer.eos_token_id],
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(folder)
    return folder


def build_tiny_gpt2_with_lora(folder: Path) -> tuple[Path, Path]:
    """A 2-layer random GPT-2 with the tiny WordPiece tokenizer and a chat template, and a LoRA adapter for it
    (saved next to it as ``lora``): (model folder, adapter folder)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    tokenizer.chat_template = CHATML_TEMPLATE  # a generator needs a chat template (its training prompt's format)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=1024,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    GPT2LMHeadModel(config).save_pretrained(folder)
    adapter = folder.parent / "lora"
    peft_model = get_peft_model(GPT2LMHeadModel.from_pretrained(folder),
                                LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], init_lora_weights=False))
    peft_model.save_pretrained(adapter)
    return folder, adapter
