"""Model loading with one clear error line when a model cannot be had (offline, wrong path)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, TypeVar

import torch

from ragtune.core.errors import UserError

logger = logging.getLogger(__name__)
T = TypeVar("T")


def explain_load_failure(name: str, err: BaseException, flag: str) -> UserError:
    path = Path(name).expanduser()
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if path.exists():
        if path.is_dir() and not (path / "config.json").exists() and not (path / "modules.json").exists():
            return UserError(f"{flag}: {path} is not a model folder (no config.json or modules.json)")
        return UserError(f"{flag}: cannot load the model in {path}: {reason}")
    if "/" in name and not name.startswith((".", "/", "~")):
        return UserError(
            f"{flag}: cannot load '{name}': it is not in the local Hugging Face cache and the Hub could not be "
            f"reached (offline?). Download it where there is internet (`hf download {name} --local-dir DIR`) and "
            f"pass --{flag.lstrip('-')} DIR, or pass any local model folder. ({reason})")
    return UserError(f"{flag}: no model folder or Hub model named '{name}' ({reason})")


def load_or_explain(loader: Callable[..., T], name: str, flag: str, **kwargs: Any) -> T:
    """Call ``loader(name, **kwargs)``; any failure to load is the user's input, reported in one line."""
    try:
        return loader(name, **kwargs)
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - OSError, ValueError, hub errors: all mean "cannot load this"
        raise explain_load_failure(name, err, flag) from err


def underlying_transformer(model: Any) -> torch.nn.Module:
    """The Hugging Face ``PreTrainedModel`` inside a SentenceTransformer or CrossEncoder."""
    # SentenceTransformer and CrossEncoder are nn.Sequential; their first module wraps the HF model.
    first = model[0] if isinstance(model, torch.nn.Sequential) else model
    for attr in ("auto_model", "model"):
        inner = getattr(first, attr, None)
        if isinstance(inner, torch.nn.Module):
            return inner
    if isinstance(first, torch.nn.Module) and hasattr(first, "config"):
        return first
    raise TypeError(f"cannot find the transformer inside {type(model).__name__}")


# transformers' "no limit recorded" placeholder for tokenizer.model_max_length is int(1e30).
_SANE_TOKENIZER_LIMIT = 1_000_000


def model_position_limit(model: Any, tokenizer: Any = None) -> int | None:
    """The most tokens one input to ``model`` may have, or None when nothing records a limit.

    ``model``: a SentenceTransformer, a CrossEncoder or a Hugging Face model. A learned position
    table is the hard limit (longer inputs index past it and crash); the RoBERTa family (XLM-R,
    bge-m3, MPNet) starts positions after ``padding_idx``, so 514 positions hold 512 tokens, found
    the way sentence-transformers finds its flattening offset. Else ``max_position_embeddings``
    (rotary models), else ``tokenizer.model_max_length`` when set. The tokenizer of a loaded
    SentenceTransformer/CrossEncoder is not consulted: it holds their current max_seq_length,
    which is a setting, not the model's limit.
    """
    try:
        hf_model = underlying_transformer(model)
    except TypeError:  # no transformer inside (e.g. StaticEmbedding): search the whole model
        hf_model = model
    for module in hf_model.modules():
        table = getattr(module, "position_embeddings", None)
        if isinstance(table, torch.nn.Embedding):
            padding_idx = getattr(module, "padding_idx", None)
            return table.num_embeddings - (padding_idx + 1 if isinstance(padding_idx, int) else 0)
    config = getattr(hf_model, "config", None)
    if config is not None and hasattr(config, "get_text_config"):
        config = config.get_text_config()
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        return positions
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _SANE_TOKENIZER_LIMIT:
        return limit
    return None


def clamp_max_seq_length(requested: int, model_limit: int | None, flag: str = "--max_seq_length") -> int:
    """``requested``, or the model's limit with a warning when it is longer.

    Clamping (not an error) because a longer setting only means "do not cut my texts", which
    the model's limit honours as far as the model can; without it, the first text longer than
    the limit ends the run with an index error deep in the embedding layer.
    """
    if model_limit is not None and requested > model_limit:
        logger.warning("%s %d is more than the model takes (%d tokens, its position limit); using %d",
                       flag, requested, model_limit, model_limit)
        return model_limit
    return requested


def load_with_max_length(loader: Callable[..., T], name: str, flag: str, max_seq_length: int | None,
                         length_flag: str = "--max_seq_length", **kwargs: Any) -> T:
    """:func:`load_or_explain`, then ``max_seq_length`` (when given) capped to the model's position limit.

    For SentenceTransformer and CrossEncoder models, whose ``max_seq_length`` cuts every input.
    """
    model = load_or_explain(loader, name, flag, **kwargs)
    if max_seq_length:
        model.max_seq_length = clamp_max_seq_length(max_seq_length, model_position_limit(model), length_flag)
    return model


def encoder_layers(hf_model: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of transformer blocks (BERT/XLM-R ``encoder.layer``, others ``layers``)."""
    base = getattr(hf_model, "base_model", hf_model)
    for path in ("encoder.layer", "encoder.layers", "layers", "transformer.layer", "h", "layer"):
        module: Any = base
        for part in path.split("."):
            module = getattr(module, part, None)
            if module is None:
                break
        if isinstance(module, torch.nn.ModuleList):
            return module
    raise TypeError(f"cannot find the encoder layers of {type(hf_model).__name__}")


def freeze_bottom_layers(model: Any, num_layers: int, flag: str = "--freeze_layers") -> int:
    """Freeze the embeddings and the bottom ``num_layers`` blocks; return the number of frozen parameters.

    The bottom layers hold general language knowledge; freezing them regularises training on a
    few hundred pairs and saves memory.
    """
    if num_layers <= 0:
        return 0
    hf_model = underlying_transformer(model)
    layers = encoder_layers(hf_model)
    if num_layers >= len(layers):
        raise UserError(f"{flag} {num_layers} leaves nothing to train: the model has {len(layers)} encoder layers "
                        f"(use at most {len(layers) - 1})")
    frozen_modules = [getattr(getattr(hf_model, "base_model", hf_model), "embeddings", None)
                      or hf_model.get_input_embeddings()]
    frozen_modules += list(layers[:num_layers])
    count = 0
    for module in frozen_modules:
        for param in module.parameters():
            if param.requires_grad:
                param.requires_grad_(False)
                count += param.numel()
    logger.info("Froze the embeddings and the bottom %d of %d encoder layers (%.1fM parameters)",
                num_layers, len(layers), count / 1e6)
    return count
