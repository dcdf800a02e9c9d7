"""A GPU memory estimate for LoRA / QLoRA fine-tuning of a decoder-only LM, before anything is loaded.

Estimates, not measurements: weights (16-bit: 2 bytes/parameter; NF4 with double quantisation:
~0.53 bytes, plus the 16-bit embeddings and output head that bitsandbytes leaves unquantised), LoRA
state (fp32 weights, gradients and two AdamW moments: 16 bytes/parameter), and activations of one
micro-batch saved for the backward pass (the frozen layers still need theirs: the gradient flows
through them to the adapters). Per layer and token, a Llama/Qwen block saves about 18 hidden-sized
and 3 intermediate-sized 16-bit tensors with SDPA/flash attention (no seq x seq scores); with
gradient checkpointing only the block inputs are kept, plus one block being recomputed. The logits
(batch x seq x vocab) are held in 16 bits and upcast to fp32 for the loss, which for Qwen's 152k
vocabulary is often the largest single item. A CUDA context + allocator overhead of ~1 GiB is added.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

GIB = 1024 ** 3
CUDA_OVERHEAD_GIB = 1.0

logger = logging.getLogger(__name__)


@dataclass
class ModelShape:
    """What the estimate needs from a model config."""

    name: str
    params: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @classmethod
    def from_config(cls, config: Any, name: str = "", params: int | None = None) -> "ModelShape":
        hidden = config.hidden_size
        heads = config.num_attention_heads
        shape = cls(name=name, params=0, hidden=hidden, layers=config.num_hidden_layers,
                    intermediate=config.intermediate_size, heads=heads,
                    kv_heads=getattr(config, "num_key_value_heads", None) or heads, vocab=config.vocab_size,
                    tied=bool(getattr(config, "tie_word_embeddings", False)))
        shape.params = params or shape.estimated_params()
        return shape

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of the linear layers of one block: q, k, v, o, gate, up, down."""
        kv = self.kv_heads * self.head_dim
        h, i = self.hidden, self.intermediate
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def estimated_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linear_shapes()) + self.embedding_params()

    def lora_params(self, r: int) -> int:
        """all-linear LoRA: r x (in + out) per linear layer."""
        return self.layers * sum(r * (a + b) for a, b in self.linear_shapes())


# Public configs of the Qwen2.5 instruct models (hidden, layers, intermediate, heads, kv heads, vocab, tied).
QWEN25 = {
    "Qwen2.5-0.5B": ModelShape("Qwen2.5-0.5B", 494_000_000, 896, 24, 4864, 14, 2, 151936, True),
    "Qwen2.5-1.5B": ModelShape("Qwen2.5-1.5B", 1_544_000_000, 1536, 28, 8960, 12, 2, 151936, True),
    "Qwen2.5-3B": ModelShape("Qwen2.5-3B", 3_086_000_000, 2048, 36, 11008, 16, 2, 151936, True),
    "Qwen2.5-7B": ModelShape("Qwen2.5-7B", 7_616_000_000, 3584, 28, 18944, 28, 4, 152064, False),
    "Qwen2.5-14B": ModelShape("Qwen2.5-14B", 14_770_000_000, 5120, 48, 13824, 40, 8, 152064, False),
}


def estimate_memory(shape: ModelShape, *, lora_r: int, batch_size: int, seq_length: int, qlora: bool,
                    gradient_checkpointing: bool, lora_params: int | None = None) -> dict[str, float]:
    """GiB for weights, LoRA state, activations and the total (see the module docstring)."""
    embeddings = shape.embedding_params()
    if qlora:
        weights = (shape.params - embeddings) * 0.53 + embeddings * 2
    else:
        weights = shape.params * 2
    lora = (lora_params if lora_params is not None else shape.lora_params(lora_r)) * 16
    tokens = batch_size * seq_length
    per_block = tokens * (18 * shape.hidden + 3 * shape.intermediate) * 2
    if gradient_checkpointing:
        activations = shape.layers * tokens * shape.hidden * 2 + per_block
    else:
        activations = shape.layers * per_block
    activations += tokens * shape.vocab * (2 + 4 + 4)  # 16-bit logits, fp32 upcast and its gradient
    result = {"weights": weights / GIB, "lora_state": lora / GIB, "activations": activations / GIB}
    result["total"] = sum(result.values()) + CUDA_OVERHEAD_GIB
    return result


def t4_table(gpu_gib: float = 15.0, lora_r: int = 16, batch_size: int = 2, seq_length: int = 2048) -> str:
    """Markdown table: which Qwen2.5 sizes fit a 16 GB T4 (15 GiB usable), LoRA vs QLoRA, both with
    gradient checkpointing (as --qlora always has), at the template command's batch and length."""
    lines = ["| model | LoRA (16-bit base) GiB | fits | QLoRA (4-bit NF4) GiB | fits |", "|---|---|---|---|---|"]
    for name, shape in QWEN25.items():
        cells = [name]
        for qlora in (False, True):
            est = estimate_memory(shape, lora_r=lora_r, batch_size=batch_size, seq_length=seq_length, qlora=qlora,
                                  gradient_checkpointing=True)
            cells += [f"{est['total']:.1f}", "yes" if est["total"] <= gpu_gib else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":  # python -m ragtune.train.generator.memory: the README's table
    print(t4_table())


def estimate_run_memory(model: Any, counts: Any, args: Any, longest: int) -> dict[str, float]:
    """This run's estimate: batches are padded to their longest example, so the longest one sets the peak."""
    return estimate_memory(
        ModelShape.from_config(model.get_base_model().config, params=counts.total - counts.trainable),
        lora_r=args.lora_r, batch_size=args.batch_size, seq_length=longest, qlora=args.qlora,
        gradient_checkpointing=args.gradient_checkpointing, lora_params=counts.trainable)


def warn_if_over_gpu(memory: dict[str, float], device: Any) -> None:
    """A warning before the first step when the estimate exceeds the GPU's memory (none on CPU)."""
    import torch

    if not torch.cuda.is_available():
        return
    gpu_gib = torch.cuda.get_device_properties(device).total_memory / 1024 ** 3
    if memory["total"] > gpu_gib:
        logger.warning("The estimate (~%.1f GiB) exceeds this GPU's %.1f GiB: consider --gradient_checkpointing, "
                       "a smaller --batch_size (with more --gradient_accumulation_steps) or --qlora",
                       memory["total"], gpu_gib)
