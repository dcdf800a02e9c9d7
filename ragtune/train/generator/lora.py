"""LoRA / QLoRA set-up with peft (and bitsandbytes for 4-bit)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from ragtune.core.errors import UserError
from ragtune.generation.inference import load_causal_lm

logger = logging.getLogger(__name__)


@dataclass
class ParameterCounts:
    total: int
    trainable: int

    @property
    def share(self) -> float:
        return self.trainable / self.total if self.total else 0.0


def quantization_config(compute_dtype: Any):
    """4-bit NF4 with double quantisation (QLoRA's recipe), computing in the training precision."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def linear_module_names(model: Any) -> list[str]:
    """Names (last component) of the linear layers LoRA can target, the output head excluded."""
    import torch

    linear_types: tuple[type, ...] = (torch.nn.Linear,)
    try:
        import bitsandbytes as bnb

        linear_types += (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
    except ImportError:
        pass
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {name.split(".")[-1] for name, module in model.named_modules()
             if isinstance(module, linear_types) and module is not output}
    return sorted(names)


def resolve_target_modules(model: Any, targets: Sequence[str]) -> str | list[str]:
    """``all-linear`` (peft's own: every linear layer but the output head) or a checked list of names."""
    if list(targets) == ["all-linear"]:
        return "all-linear"
    available = linear_module_names(model)
    unknown = [t for t in targets if t not in available]
    if unknown:
        raise UserError(f"--lora_target: {', '.join(unknown)} not among this model's linear modules: "
                        f"{', '.join(available)} (or use all-linear)")
    return list(targets)


def count_parameters(model: Any) -> ParameterCounts:
    """Total and trainable parameters; 4-bit weights count as their logical (unpacked) size."""
    total = trainable = 0
    for param in model.parameters():
        n = param.numel()
        if param.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if param.requires_grad:
            trainable += n
    return ParameterCounts(total, trainable)


def add_lora(model: Any, r: int, alpha: int, dropout: float, targets: Sequence[str], qlora: bool,
             gradient_checkpointing: bool, seed: int = 42):
    """Wrap the model with a LoRA adapter; 4-bit bases are first prepared for k-bit training.

    peft keeps the adapter weights in fp32 on a 16-bit base (``autocast_adapter_dtype``), which AMP's
    gradient scaler needs. LoRA A is initialised randomly: seeded, so the same command starts from
    the same adapter (and a run resumed in a fresh process continues the one it interrupted).
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import set_seed

    target_modules = resolve_target_modules(model, targets)
    if qlora:
        # Casts norms to fp32 and enables (non-reentrant: works with frozen inputs) gradient checkpointing.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    elif gradient_checkpointing:
        # transformers 5's name (gradient_checkpointing_enable is deprecated); the Trainer enables it too.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if gradient_checkpointing or qlora:
        model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        bias="none", task_type="CAUSAL_LM")
    set_seed(seed)
    return get_peft_model(model, config)


def adapter_is_unchanged(model: Any) -> bool | None:
    """True when every LoRA B matrix is zero: peft starts B at zero, so the adapter still adds nothing to its base.

    None for a model without LoRA layers. An unchanged adapter comes from a best checkpoint trained at the first
    warm-up step's learning rate of 0, or from a learning rate too small to move a weight.
    """
    lora_b = [param for name, param in model.named_parameters() if "lora_B" in name]
    if not lora_b:
        return None
    return not any(bool(param.detach().any()) for param in lora_b)


def warn_if_adapter_unchanged(model: Any) -> None:
    """Warn when the final adapter equals its base model (see :func:`adapter_is_unchanged`)."""
    if adapter_is_unchanged(model):
        logger.warning("The final adapter equals its base model: every LoRA B matrix is still zero, so it answers "
                       "exactly like the base. Train longer or check --lr and --warmup_steps")


def torch_dtype(precision_name: str):
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision_name, torch.float32)


def load_base_for_training(name: str, precision_name: str, qlora: bool, device: str | None = None):
    """The frozen base: in the AMP dtype on a GPU (a 7B base in fp32 would not fit a T4), fp32 on CPU,
    or 4-bit NF4 placed on this process's GPU."""
    dtype = torch_dtype(precision_name)
    if qlora:
        return load_causal_lm(name, dtype=dtype, quantization_config=quantization_config(dtype),
                              device_map={"": device or "cuda:0"})
    return load_causal_lm(name, dtype=dtype)
