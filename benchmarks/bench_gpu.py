#!/usr/bin/env python
r"""GPU readiness: the template commands of the three fine-tuning scripts at real model sizes, and a 16 GB budget.

    python benchmarks/bench_gpu.py --json gpu.json        # a CUDA GPU: every template at real sizes
    python benchmarks/bench_gpu.py --templates embedding reranker             # a subset; the others:
    python benchmarks/bench_gpu.py --templates generator-lora generator-qlora --generator_models Qwen2.5-7B
    python benchmarks/bench_gpu.py --smoke                # tiny configs, any device, ~1 min on a CPU (CI)
    python benchmarks/bench_gpu.py --estimate             # the arithmetic estimate only, no model built

--qlora needs bitsandbytes (pip install bitsandbytes), which is not a ragtune requirement.

For each template (embedding = fine_tune_bge_m3.py, reranker = fine_tune_reranker.py, generator =
fine_tune_generator.py with LoRA and with --qlora) it builds a model of the real architecture and
size from a config with random weights (XLM-RoBERTa-large with 8194 positions for bge-m3 and
bge-reranker-v2-m3; Qwen2.5-1.5B and -7B shaped Qwen2 models for the generator), saves it with a
tokenizer trained here (small vocabulary; the embedding matrix keeps its real size) and synthetic
data long enough to fill the template's sequence length, then runs the script's own ``main()`` in
this process with the template's flags (read from the script's docstring) plus ``--base_model
<that folder> --dev_ratio 0 --max_steps N``: the same model set-up, Trainer and loss as a user's run,
without dev evaluation. A TrainerCallback measures, after the first (warm-up) optimizer step,
samples/s (training rows: an embedding row is a query with its positive and hard negative, a
reranker row a (query, passage) pair, a generator row one prompt + answer), the peak GPU memory
(``torch.cuda.max_memory_allocated``, reset when training starts, so the model's own weights are
included and start-up work such as hard-negative mining is not), and whether every logged training
loss (logged at every step, NaN/inf not filtered) stayed finite.

Precision: ``--precision fp16`` by default, what the templates get on a 16 GB T4 (no bf16 there),
also on a GPU that has bf16, so that fp16 overflow shows; ``--precision template`` keeps each
template's own setting. "fits 16 GB": peak allocated + the CUDA context allowance of
``ragtune.train.generator.memory`` (1 GiB) <= ``--budget_gib`` (15 GiB: what a 16 GB T4 offers). The
"est. GiB" column is the arithmetic estimate of ``ragtune.train.memory`` (encoders) and
``ragtune.train.generator.memory`` (generator) for the same configuration, so a GPU run checks it.
Random weights say nothing about quality and little about fp16 overflow with real weights (real
activations can be larger); they do give real memory and speed.

On a machine without a CUDA GPU only ``--smoke`` (tiny configs of the same architectures, 2 steps,
gradient accumulation capped at 2, the templates' sequence lengths) and ``--estimate`` run; --qlora
rows are reported as skipped there (the script exits 2 for it).
Exit code 1 if a template failed or a loss was not finite.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import importlib
import json
import logging
import math
import os
import random
import re
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from transformers import TrainerCallback  # noqa: E402

from ragtune.train.generator.memory import CUDA_OVERHEAD_GIB, QWEN25, ModelShape, estimate_memory  # noqa: E402
from ragtune.train.memory import XLMR_LARGE, EncoderShape, estimate_encoder_memory, trainable_params  # noqa: E402

logger = logging.getLogger("bench_gpu")

BUDGET_GIB = 15.0  # a 16 GB T4 (nvidia-smi: 15360 MiB), as ragtune.train.generator.memory.t4_table assumes
QUERY_WORDS = 24  # synthetic queries: ~30 tokens, a typical question
ANSWER_WORDS = 40
PASSAGE_WORDS = 720  # every word is >= 1 token: fills 384 / 512 tokens, and 3 passages overflow 2048
SMOKE_SKIP_QLORA = "skipped: needs a CUDA GPU"
SMOKE_MAX_ACCUMULATION = 2


@dataclasses.dataclass(frozen=True)
class Template:
    key: str  # on the command line
    name: str  # in the table
    script: str  # module name of the fine-tuning script
    kind: str  # embedding | reranker | generator
    extra: tuple[str, ...] = ()  # flags added to the template command


TEMPLATES = {t.key: t for t in (
    Template("embedding", "embedding", "fine_tune_bge_m3", "embedding"),
    Template("reranker", "reranker", "fine_tune_reranker", "reranker"),
    Template("generator-lora", "generator LoRA", "fine_tune_generator", "generator"),
    Template("generator-qlora", "generator QLoRA", "fine_tune_generator", "generator", ("--qlora",)),
)}


# ---------------------------------------------------------------------------- template commands


def template_flags(script: str) -> list[str]:
    """The template command of ``script``, as its module docstring shows it (so the benchmark follows it)."""
    module = importlib.import_module(script)
    text = (module.__doc__ or "").replace("\\\n", " ")
    for line in text.splitlines():
        words = line.split()
        if words[:2] == ["python", f"{script}.py"]:
            return shlex.split(line)[2:]
    raise RuntimeError(f"no 'python {script}.py ...' template command in {script}'s docstring")


def set_flag(argv: list[str], flag: str, *values: str) -> list[str]:
    """``argv`` without ``flag`` (and its values), then ``flag values`` appended."""
    out: list[str] = []
    skipping = False
    for word in argv:
        if word.startswith("--"):
            skipping = word == flag
        if not skipping:
            out.append(word)
    return out + [flag, *values]


def remove_flags(argv: list[str], *flags: str) -> list[str]:
    out = argv
    for flag in flags:
        out = set_flag(out, flag)[:-1]
    return out


def template_argv(template: Template, precision: str) -> list[str]:
    """The template's flags, its extra flags, and --precision unless the template's own is kept."""
    argv = template_flags(template.script) + list(template.extra)
    if precision != "template":
        argv = remove_flags(argv, "--fp16", "--bf16", "--precision") + ["--precision", precision]
    return argv


def parse_script_args(template: Template, argv: list[str]) -> argparse.Namespace:
    """The script's own parser on ``argv``: every value the template run uses, defaults included."""
    return importlib.import_module(template.script).build_parser().parse_args(argv)


# ---------------------------------------------------------------------------- models and data


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    key: str
    label: str
    kind: str  # encoder | causal
    encoder: EncoderShape | None = None
    causal: ModelShape | None = None


def model_specs(smoke: bool, generator_sizes: list[str]) -> dict[str, list[ModelSpec]]:
    """Per template kind, the models it runs with: the real shapes, or tiny ones of the same architecture."""
    if smoke:
        tiny_encoder = EncoderShape("tiny XLM-R", vocab=1024, hidden=32, layers=6, heads=2, intermediate=64,
                                    positions=8194)
        tiny_qwen = ModelShape("tiny Qwen2", 0, hidden=32, layers=2, intermediate=64, heads=4, kv_heads=2,
                               vocab=1024, tied=True)
        tiny_qwen.params = tiny_qwen.estimated_params()
        return {"embedding": [ModelSpec("st", "tiny XLM-R (bge-m3 arch.)", "encoder", encoder=tiny_encoder)],
                "reranker": [ModelSpec("ce", "tiny XLM-R (reranker arch.)", "encoder",
                                       encoder=dataclasses.replace(tiny_encoder, head="classifier"))],
                "generator": [ModelSpec("qwen-tiny", "tiny Qwen2", "causal", causal=tiny_qwen)]}
    return {"embedding": [ModelSpec("st", "bge-m3 (XLM-R large)", "encoder", encoder=XLMR_LARGE)],
            "reranker": [ModelSpec("ce", "bge-reranker-v2-m3 (XLM-R large)", "encoder",
                                   encoder=dataclasses.replace(XLMR_LARGE, head="classifier"))],
            "generator": [ModelSpec(f"qwen-{size}", size, "causal", causal=QWEN25[size]) for size in generator_sizes]}


def word_pool() -> list[str]:
    """Vietnamese words of the sample corpus: synthetic text that tokenizes like the real data."""
    import pandas as pd

    from ragtune.core.data import SAMPLE_CORPUS

    texts = pd.read_csv(SAMPLE_CORPUS, encoding="utf-8-sig")["Văn bản"].astype(str)
    return sorted(set(re.findall(r"\w+", " ".join(texts).lower())))


@dataclasses.dataclass
class SyntheticData:
    corpus: Path
    queries: Path
    texts: list[str]  # what the tokenizers are trained on


def write_data(folder: Path, passages: int, queries: int, seed: int = 0) -> SyntheticData:
    """A corpus of long passages and queries (each drawn from its one relevant passage) with answers."""
    import pandas as pd

    rng = random.Random(seed)
    words = word_pool()
    corpus = [" ".join(rng.choices(words, k=PASSAGE_WORDS)) for _ in range(passages)]
    rows = []
    for i in range(queries):
        passage = corpus[i % passages].split()
        rows.append({"Query": " ".join(rng.sample(passage, QUERY_WORDS)) + "?",
                     "Ground truth document": str(i % passages + 1),
                     "Ground truth answer": " ".join(rng.sample(passage, ANSWER_WORDS)) + "."})
    folder.mkdir(parents=True, exist_ok=True)
    corpus_path, queries_path = folder / "corpus.csv", folder / "train.csv"
    pd.DataFrame({"STT": range(1, passages + 1), "Văn bản": corpus}).to_csv(corpus_path, index=False)
    pd.DataFrame(rows).to_csv(queries_path, index=False)
    from ragtune.generation.prompt import DEFAULT_SYSTEM_PROMPT, DEFAULT_UNANSWERABLE_ANSWER

    texts = corpus + [r["Query"] for r in rows] + [r["Ground truth answer"] for r in rows] + [
        DEFAULT_SYSTEM_PROMPT, DEFAULT_UNANSWERABLE_ANSWER]
    return SyntheticData(corpus_path, queries_path, texts)


def train_bpe(texts: list[str], specials: list[str], vocab_size: int):
    """A byte-level BPE trained here (no download); every word is at least one token."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def save_encoder_tokenizer(folder: Path, texts: list[str], vocab_size: int):
    """XLM-R's special tokens and ids (<s>=0, <pad>=1, </s>=2: RoBERTa positions count from pad + 1)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = train_bpe(texts, ["<s>", "<pad>", "</s>", "<unk>", "<mask>"], vocab_size)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                                   cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                   model_max_length=8192)
    fast.save_pretrained(folder)
    return fast


CHATML = ("{%- for message in messages %}"
          "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
          "{%- endfor %}"
          "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def save_chat_tokenizer(folder: Path, texts: list[str], vocab_size: int):
    """Qwen's special tokens and ChatML template (its end-of-turn token <|im_end|> is the target's end)."""
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    fast = PreTrainedTokenizerFast(tokenizer_object=train_bpe(texts, specials, vocab_size), eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=specials[1:],
                                   model_max_length=32768)
    fast.chat_template = CHATML
    fast.save_pretrained(folder)
    return fast


def build_device(bytes_needed: int) -> str:
    """Where to initialise random weights: the GPU if they fit there with room to spare (much faster
    than the CPU for billions of parameters), else the CPU (a 7B model on a 16 GB card)."""
    import torch

    if torch.cuda.is_available() and torch.cuda.mem_get_info()[0] > 1.2 * bytes_needed:
        return "cuda"
    return "cpu"


def build_encoder(folder: Path, spec: ModelSpec, data: SyntheticData, vocab_size: int) -> Path:
    """Random-weight XLM-R: a sentence-transformers model (CLS pooling + normalize, as bge-m3) or a
    one-logit XLMRobertaForSequenceClassification (as bge-reranker-v2-m3)."""
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaModel

    shape = spec.encoder
    config = XLMRobertaConfig(vocab_size=shape.vocab, hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                              num_attention_heads=shape.heads, intermediate_size=shape.intermediate,
                              max_position_embeddings=shape.positions, type_vocab_size=shape.type_vocab,
                              layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                              num_labels=1 if shape.head == "classifier" else 2)
    torch.manual_seed(0)
    hf_folder = folder if shape.head == "classifier" else folder.with_name(folder.name + "-hf")
    tokenizer = save_encoder_tokenizer(hf_folder, data.texts, vocab_size)
    assert len(tokenizer) <= shape.vocab
    with torch.device(build_device(4 * shape.params())):
        model = (XLMRobertaForSequenceClassification if shape.head == "classifier" else XLMRobertaModel)(config)
    model.to("cpu").save_pretrained(hf_folder)
    del model
    if shape.head != "classifier":
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

        transformer = Transformer(str(hf_folder))
        st = SentenceTransformer(modules=[transformer, Pooling(shape.hidden, pooling_mode="cls"), Normalize()],
                                 device="cpu")
        st.save(str(folder))
        del st, transformer
        shutil.rmtree(hf_folder)
    return folder


def build_causal(folder: Path, spec: ModelSpec, data: SyntheticData, vocab_size: int) -> Path:
    """A random-weight Qwen2 causal LM of the shape's size (GQA, tied embeddings where the real one has them)."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    shape = spec.causal
    tokenizer = save_chat_tokenizer(folder, data.texts, vocab_size)
    assert len(tokenizer) <= shape.vocab
    config = Qwen2Config(vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
                         num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                         num_key_value_heads=shape.kv_heads, max_position_embeddings=32768, rms_norm_eps=1e-6,
                         tie_word_embeddings=shape.tied, use_sliding_window=False,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=None)
    torch.manual_seed(0)
    # 16-bit where training will be on a GPU (a 7B model in fp32 would take 30 GB), as the real checkpoints
    # are stored; the script loads it in its own precision either way.
    dtype = torch.float16 if torch.cuda.is_available() else torch.float32
    with torch.device(build_device(2 * shape.params)):
        model = Qwen2ForCausalLM._from_config(config, dtype=dtype)
    model.generation_config = GenerationConfig(eos_token_id=[tokenizer.eos_token_id],
                                               pad_token_id=tokenizer.pad_token_id)
    model.to("cpu").save_pretrained(folder)
    del model
    return folder


# ---------------------------------------------------------------------------- measuring


def _cuda():
    import torch

    return torch.cuda if torch.cuda.is_available() else None


class Probe(TrainerCallback):
    """Measures one run from the inside: parameters, precision, checkpointing, step times, peak memory, losses."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.grad_norms: list[float] = []
        self.steps = 0
        self.first_step_end: float | None = None
        self.last_step_end: float | None = None
        self.peak_allocated: int | None = None
        self.peak_reserved: int | None = None
        self.resident: int | None = None
        self.precision: str | None = None
        self.params: int | None = None
        self.trainable: int | None = None
        self.checkpointing = False

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        from transformers import PreTrainedModel

        from ragtune.train.generator.lora import count_parameters

        # A NaN/inf step must show in the logged loss, not be replaced by the running mean.
        args.logging_nan_inf_filter = False
        self.precision = "fp16" if args.fp16 else "bf16" if args.bf16 else "fp32"
        counts = count_parameters(model)
        self.params, self.trainable = counts.total, counts.trainable
        self.checkpointing = any(getattr(m, "is_activation_checkpointing", False) for m in model.modules()
                                 if isinstance(m, PreTrainedModel))
        cuda = _cuda()
        if cuda:
            cuda.synchronize()
            cuda.reset_peak_memory_stats()
            self.resident = cuda.memory_allocated()

    def on_step_end(self, args, state, control, **kwargs):
        control.should_log = True  # every step's loss
        cuda = _cuda()
        if cuda:
            cuda.synchronize()
            self.peak_allocated = cuda.max_memory_allocated()
            self.peak_reserved = cuda.max_memory_reserved()
        now = time.perf_counter()
        if self.first_step_end is None:
            self.first_step_end = now  # step 1 (CUDA/cuBLAS warm-up, allocator growth) is not timed
        self.last_step_end = now
        self.steps = state.global_step

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        for key, values in (("loss", self.losses), ("grad_norm", self.grad_norms)):
            if key in logs:
                values.append(float(logs[key]))


@dataclasses.dataclass
class Row:
    template: str
    model: str
    status: str = "ok"
    params: int | None = None
    trainable_params: int | None = None
    precision: str | None = None
    gradient_checkpointing: bool | None = None
    seq_len: int | None = None
    batch_size: int | None = None
    accumulation: int | None = None
    steps: int = 0
    samples_per_s: float | None = None
    peak_allocated_gib: float | None = None
    peak_reserved_gib: float | None = None
    resident_at_start_gib: float | None = None
    estimated_gib: float | None = None
    finite_loss: bool | None = None
    losses: list[float] = dataclasses.field(default_factory=list)
    overflow_steps: int = 0  # steps whose gradient norm was inf/NaN (fp16 loss scaling skips them)
    fits_16gb: bool | None = None
    argv: list[str] = dataclasses.field(default_factory=list)


def estimate_row(template: Template, spec: ModelSpec, args: argparse.Namespace, query_tokens: int,
                 gradient_checkpointing: bool | None = None) -> dict[str, float]:
    """The arithmetic estimate for ``template`` on ``spec`` with the script's parsed ``args``."""
    ckpt = args.gradient_checkpointing if gradient_checkpointing is None else gradient_checkpointing
    if template.kind == "generator":
        qlora = bool(getattr(args, "qlora", False))
        est = estimate_memory(spec.causal, lora_r=args.lora_r, batch_size=args.batch_size,
                              seq_length=args.max_seq_length, qlora=qlora, gradient_checkpointing=ckpt or qlora)
        lora = spec.causal.lora_params(args.lora_r)
        gib = 1024 ** 3
        # Split LoRA's 16 B/parameter as the encoder rows are: fp32 weights 4, gradients 4, AdamW 8.
        return {"weights": est["weights"] + 4 * lora / gib, "gradients": 4 * lora / gib,
                "optimizer": 8 * lora / gib, "activations": est["activations"], "total": est["total"]}
    if template.kind == "embedding":
        seq = args.max_seq_length
        # queries, positives, hard negatives: encoded separately, all kept until the loss
        forwards = [(args.batch_size, min(query_tokens, seq))] + [(args.batch_size, seq)] * (
            1 + args.num_hard_negatives)
        return estimate_encoder_memory(spec.encoder, forwards=forwards, frozen_layers=args.freeze_layers,
                                       gradient_checkpointing=ckpt, train_head=False)
    return estimate_encoder_memory(spec.encoder, forwards=[(args.batch_size, args.max_seq_length)], frozen_layers=0,
                                   gradient_checkpointing=ckpt, train_head=True)


def run_template(template: Template, spec: ModelSpec, model_dir: Path, data: SyntheticData, workdir: Path,
                 max_steps: int, precision: str, budget_gib: float, query_tokens: int, smoke: bool = False) -> Row:
    """Run the script's own main() on the template's flags; measure with a Probe."""
    import torch

    from ragtune.core.errors import UserError

    argv = template_argv(template, precision)
    if smoke:
        # Accumulation is exercised with 2 micro-batches as well as with 8, at a quarter of the CPU time.
        accumulation = parse_script_args(template, argv).gradient_accumulation_steps
        argv = set_flag(argv, "--gradient_accumulation_steps", str(min(accumulation, SMOKE_MAX_ACCUMULATION)))
    out = workdir / f"out-{template.key}-{spec.key}"
    argv = set_flag(argv, "--base_model", str(model_dir))
    for flag, value in (("--corpus", data.corpus), ("--train_data", data.queries), ("--dev_ratio", "0"),
                        ("--max_steps", str(max_steps)), ("--output_dir", out), ("--resume_from_checkpoint", "none")):
        argv = set_flag(argv, flag, str(value))
    args = parse_script_args(template, argv)
    row = Row(template.name, spec.label, seq_len=args.max_seq_length, batch_size=args.batch_size,
              accumulation=args.gradient_accumulation_steps, argv=argv)
    row.estimated_gib = estimate_row(template, spec, args, query_tokens)["total"]
    probe = Probe()
    logger.info("%s on %s: %s %s", template.name, spec.label, template.script, shlex.join(argv))
    try:
        code = importlib.import_module(template.script).main(argv, callbacks=[probe])
        if code:
            row.status = f"error: exit code {code}"
    except UserError as err:
        cpu_qlora = "--qlora" in argv and not torch.cuda.is_available()
        row.status = SMOKE_SKIP_QLORA if cpu_qlora else f"skipped: {err}"
        logger.info("%s: %s (%s)", template.name, row.status, err)
    except torch.cuda.OutOfMemoryError:
        row.status = "out of memory"
        logger.warning("%s on %s: CUDA out of memory", template.name, spec.label)
    except Exception:  # noqa: BLE001 - a benchmark row fails, the others still run
        row.status = "error: " + traceback.format_exc().strip().splitlines()[-1]
        logger.error("%s on %s failed:\n%s", template.name, spec.label, traceback.format_exc())
    finally:
        shutil.rmtree(out, ignore_errors=True)
    row.params, row.trainable_params, row.precision = probe.params, probe.trainable, probe.precision
    row.gradient_checkpointing = probe.checkpointing if probe.params is not None else None
    row.steps, row.losses = probe.steps, probe.losses
    row.overflow_steps = sum(not math.isfinite(g) for g in probe.grad_norms)
    if probe.losses:
        row.finite_loss = all(math.isfinite(v) for v in probe.losses)
    if probe.steps >= 2 and probe.last_step_end > probe.first_step_end:
        samples = (probe.steps - 1) * args.batch_size * args.gradient_accumulation_steps
        row.samples_per_s = samples / (probe.last_step_end - probe.first_step_end)
    gib = 1024 ** 3
    if probe.peak_allocated is not None:
        row.peak_allocated_gib = probe.peak_allocated / gib
        row.peak_reserved_gib = probe.peak_reserved / gib
        row.resident_at_start_gib = probe.resident / gib
        row.fits_16gb = row.status == "ok" and row.peak_allocated_gib + CUDA_OVERHEAD_GIB <= budget_gib
    if row.status == "out of memory":
        row.fits_16gb = False
    if row.status == "ok" and row.finite_loss is None:
        row.status = "error: no training loss was logged"
    return row


def release_memory() -> None:
    gc.collect()
    cuda = _cuda()
    if cuda:
        cuda.empty_cache()


# ---------------------------------------------------------------------------- tables


def _fmt(value: Any, spec: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec)


def _count(n: int | None) -> str:
    if n is None:
        return "n/a"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}K"


def results_table(rows: list[Row]) -> str:
    header = ["template", "model", "params (trainable)", "precision", "grad ckpt", "seq len", "batch x accum",
              "samples/s", "peak GiB", "est. GiB", "finite loss", "fits 16 GB"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if r.status != "ok" and r.params is None:
            cells = [r.template, r.model, r.status] + [""] * (len(header) - 4) + [_fmt(r.fits_16gb)]
        else:
            cells = [r.template, r.model, f"{_count(r.params)} ({_count(r.trainable_params)})", _fmt(r.precision),
                     _fmt(r.gradient_checkpointing), _fmt(r.seq_len), f"{r.batch_size} x {r.accumulation}",
                     _fmt(r.samples_per_s, ".2f"), _fmt(r.peak_allocated_gib, ".2f"), _fmt(r.estimated_gib, ".1f"),
                     _fmt(r.finite_loss), _fmt(r.fits_16gb) if r.status == "ok" else r.status]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def estimate_rows(generator_sizes: list[str], budget_gib: float) -> list[dict[str, Any]]:
    """The arithmetic estimate of every template at the real sizes (fp16 AMP, as on a T4)."""
    specs = model_specs(False, generator_sizes)
    rows = []
    for template in TEMPLATES.values():
        args = parse_script_args(template, template_argv(template, "fp16"))
        for spec in specs[template.kind]:
            ckpt = bool(args.gradient_checkpointing or getattr(args, "qlora", False))
            both = {c: estimate_row(template, spec, args, QUERY_WORDS + 8, gradient_checkpointing=c)
                    for c in (False, True)}
            est = both[ckpt]
            if template.kind == "generator":
                params = spec.causal.params
                trainable = spec.causal.lora_params(args.lora_r)
                tokens = f"{args.batch_size} x {args.max_seq_length}"
            else:
                params = spec.encoder.params()
                frozen = args.freeze_layers if template.kind == "embedding" else 0
                trainable = trainable_params(spec.encoder, frozen, train_head=template.kind == "reranker")
                tokens = (f"{args.batch_size} x ({QUERY_WORDS + 8} + {1 + args.num_hard_negatives} x "
                          f"{args.max_seq_length})" if template.kind == "embedding"
                          else f"{args.batch_size} x {args.max_seq_length}")
            rows.append({
                "template": template.name, "model": spec.label, "params": params, "trainable_params": trainable,
                "precision": "fp16 AMP" + (" (4-bit NF4 base)" if getattr(args, "qlora", False) else
                                           " (16-bit base)" if template.kind == "generator" else " (fp32 weights)"),
                "gradient_checkpointing": ckpt, "tokens_per_micro_batch": tokens,
                "accumulation": args.gradient_accumulation_steps,
                **{k: est[k] for k in ("weights", "gradients", "optimizer")},
                "activations_no_ckpt": both[False]["activations"], "activations_ckpt": both[True]["activations"],
                "total_no_ckpt": both[False]["total"], "total_ckpt": both[True]["total"], "total": est["total"],
                "fits_16gb": est["total"] <= budget_gib,
            })
    return rows


def estimate_table(rows: list[dict[str, Any]]) -> str:
    def no_ckpt(row: dict[str, Any], key: str, spec: str) -> str:
        # --qlora always checkpoints (fine_tune_generator.py turns it on): no "without" figure.
        return "n/a" if "4-bit" in row["precision"] else format(row[key], spec)

    header = ["template", "model", "params (trainable)", "precision", "grad ckpt", "tokens / micro-batch",
              "weights", "gradients", "optimizer", "activations no ckpt / ckpt", "total no ckpt / ckpt",
              "fits 16 GB as templated"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join([
            r["template"], r["model"], f"{_count(r['params'])} ({_count(r['trainable_params'])})", r["precision"],
            _fmt(r["gradient_checkpointing"]), r["tokens_per_micro_batch"], f"{r['weights']:.2f}",
            f"{r['gradients']:.2f}", f"{r['optimizer']:.2f}",
            f"{no_ckpt(r, 'activations_no_ckpt', '.2f')} / {r['activations_ckpt']:.2f}",
            f"{no_ckpt(r, 'total_no_ckpt', '.1f')} / {r['total_ckpt']:.1f}",
            f"{_fmt(r['fits_16gb'])} ({r['total']:.1f} GiB)"]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main


def run_benchmark(args: argparse.Namespace) -> list[Row]:
    smoke = args.smoke
    specs = model_specs(smoke, args.generator_models)
    templates = [TEMPLATES[key] for key in args.templates]
    vocab = 1000 if smoke else 8000
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_gpu-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    try:
        data = write_data(workdir / "data", passages=24 if smoke else 64, queries=16 if smoke else 48)
        from transformers import AutoTokenizer

        plan = [(t, spec) for t in templates for spec in specs[t.kind]]
        builders: dict[str, Callable[[Path, ModelSpec, SyntheticData, int], Path]] = {
            "encoder": build_encoder, "causal": build_causal}
        built: dict[str, Path] = {}
        query_tokens = QUERY_WORDS + 8
        for i, (template, spec) in enumerate(plan):
            if spec.key not in built:
                started = time.time()
                built[spec.key] = builders[spec.kind](workdir / f"model-{spec.key}", spec, data, vocab)
                logger.info("Built %s with random weights in %s (%.0f s)", spec.label, built[spec.key],
                            time.time() - started)
                if spec.kind == "encoder":
                    tokenizer = AutoTokenizer.from_pretrained(built[spec.key])
                    import pandas as pd

                    queries = pd.read_csv(data.queries)["Query"].astype(str).tolist()
                    query_tokens = max(len(tokenizer(q)["input_ids"]) for q in queries)
            cuda = _cuda()
            if cuda and cuda.memory_allocated() > 2 ** 28:
                logger.warning("%.2f GiB still allocated on the GPU before %s: a previous run was not freed, and "
                               "this row's peak includes it", cuda.memory_allocated() / 1024 ** 3, template.name)
            rows.append(run_template(template, spec, built[spec.key], data, workdir, args.max_steps, args.precision,
                                     args.budget_gib, query_tokens, smoke))
            release_memory()
            if all(s.key != spec.key for _, s in plan[i + 1:]):
                shutil.rmtree(built[spec.key], ignore_errors=True)  # a 7B model takes 15 GB of disk
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true",
                        help="Tiny configs of the same architectures, a few steps, on any device (CI).")
    parser.add_argument("--estimate", action="store_true",
                        help="Print the arithmetic estimate at the real sizes and exit (no model is built).")
    parser.add_argument("--templates", nargs="+", choices=list(TEMPLATES), default=list(TEMPLATES),
                        metavar="NAME", help=f"Templates to run: {', '.join(TEMPLATES)}.")
    parser.add_argument("--generator_models", nargs="+", choices=list(QWEN25), default=["Qwen2.5-1.5B", "Qwen2.5-7B"],
                        help="Qwen2.5 sizes for the generator rows (real sizes only).")
    parser.add_argument("--max_steps", type=int, default=None,
                        help="Optimizer steps per template; the first is not timed. Default: 6, or 2 with --smoke.")
    parser.add_argument("--precision", choices=["fp16", "bf16", "auto", "template"], default="fp16",
                        help="Precision forced on every template ('template': each template's own flags).")
    parser.add_argument("--budget_gib", type=float, default=BUDGET_GIB,
                        help="GPU memory budget for 'fits 16 GB' (peak + CUDA allowance <= this).")
    parser.add_argument("--workdir", default=None,
                        help="Where models and data are written (default: a temporary folder, removed at the end).")
    parser.add_argument("--json", default=None, help="Also write the results to this JSON file.")
    args = parser.parse_args()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO)

    if args.estimate:
        rows = estimate_rows(args.generator_models, args.budget_gib)
        print(f"\nEstimated GPU memory (GiB) of the templates at real sizes, fp16 AMP; totals include "
              f"{CUDA_OVERHEAD_GIB:g} GiB of CUDA context; budget {args.budget_gib:g} GiB (16 GB T4). Not measured.\n")
        print(estimate_table(rows))
        if args.json:
            Path(args.json).write_text(json.dumps({"mode": "estimate", "budget_gib": args.budget_gib,
                                                   "cuda_overhead_gib": CUDA_OVERHEAD_GIB, "rows": rows}, indent=2))
        return 0

    import torch

    if not args.smoke and not torch.cuda.is_available():
        parser.exit(2, "bench_gpu.py: real sizes need a CUDA GPU; none found. Use --smoke (tiny configs) or "
                       "--estimate (arithmetic only).\n")
    if args.max_steps is None:
        args.max_steps = 2 if args.smoke else 6
    if args.max_steps < 2:
        parser.error("--max_steps must be at least 2 (the first step is not timed)")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    if args.smoke and device == "CPU" and "OMP_NUM_THREADS" not in os.environ:
        # Tiny matrices gain nothing from threads, and on a busy CI runner OpenMP threads that spin
        # against other processes made a step 6x slower.
        torch.set_num_threads(1)
    started = time.time()
    rows = run_benchmark(args)
    mode = "smoke (tiny configs)" if args.smoke else "real sizes, random weights"
    print(f"\nbench_gpu.py, {mode}, on {device}: {args.max_steps} optimizer steps per template (samples/s from "
          f"step 2 on), precision {args.precision}, budget {args.budget_gib:g} GiB incl. {CUDA_OVERHEAD_GIB:g} GiB "
          f"CUDA context, {time.time() - started:.0f} s\n")
    print(results_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "mode": "smoke" if args.smoke else "full", "device": device, "precision": args.precision,
            "max_steps": args.max_steps, "budget_gib": args.budget_gib, "cuda_overhead_gib": CUDA_OVERHEAD_GIB,
            "torch": torch.__version__, "rows": [dataclasses.asdict(r) for r in rows]}, indent=2))
    failed = [r for r in rows if r.status.startswith("error") or r.finite_loss is False]
    for r in failed:
        logger.error("%s on %s: %s", r.template, r.model,
                     r.status if r.status != "ok" else f"non-finite loss {r.losses}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
