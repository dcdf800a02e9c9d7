"""A GPU memory estimate for fine-tuning a BERT-style encoder (XLM-R: bge-m3, bge-reranker-v2-m3).

Estimates, not measurements: they say which template fits a 16 GB GPU before any weights are
downloaded, and a measured run (benchmarks/bench_gpu.py) checks them. The generator's (decoder +
LoRA) counterpart is ``ragtune.train.generator.memory``; both add the same CUDA allowance.

Bookkeeping of mixed-precision AdamW (the Trainer's fp16/bf16 AMP keeps fp32 master weights):

- weights: 4 B x every parameter (fp32), plus the 16-bit copies autocast makes of the weights of
  the layers that are trained (2 B x their matmul parameters), held from the forward pass to the
  backward pass. Frozen layers below the first trained one record nothing for the backward pass.
- gradients: 4 B x every parameter that gets one (frozen layers, frozen embeddings and the unused
  pooler of an embedding model get none).
- optimizer: 8 B x the same parameters (AdamW's two fp32 moments; the fused AdamW, the Trainer's
  default, makes no full-size temporaries).
- activations, per token of a micro-batch and per trained layer (post-LN block, SDPA attention,
  which keeps no seq x seq matrix; autocast runs matmuls in 16 bits and LayerNorm in fp32):
  attention 21·h bytes (three 16-bit casts of the fp32 block input for Q, K and V, Q, K, V, the
  attention output and its copy for the output projection, a 1-byte dropout mask, the fp32
  LayerNorm input) and feed-forward 7·h + 4·i bytes (16-bit input, GELU input and output of size
  i, dropout mask, fp32 LayerNorm input): ``28·h + 4·i`` bytes (44 KB for XLM-R large). Trained
  embeddings add ``9·h`` per token (fp32 LayerNorm input, dropout mask, output).
  With gradient checkpointing a trained layer keeps only its fp32 input (``4·h`` per token), and one
  layer's full set is rebuilt at a time during the backward pass.
  Eager attention (not the default) would add ``11 x heads x seq`` bytes per token and layer for the
  fp32 softmax, its dropout mask and the 16-bit probabilities.
- The micro-batch is every forward pass whose outputs the loss needs at once: an embedding model
  encodes queries, positives and hard negatives separately and keeps all of them until the loss.
- ``total`` adds the CUDA context and allocator allowance of ``ragtune.train.generator.memory``.
Backward-pass temporaries (activation gradients of one layer) are left out: expect the measured
peak within ~10-20% of the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ragtune.train.generator.memory import CUDA_OVERHEAD_GIB, GIB


@dataclass(frozen=True)
class EncoderShape:
    """What the estimate needs from a BERT/XLM-R config; ``head`` is what sits on the encoder."""

    name: str
    vocab: int
    hidden: int
    layers: int
    heads: int
    intermediate: int
    positions: int
    type_vocab: int = 1
    head: str = "pooler"  # "pooler" (AutoModel, unused by CLS/mean pooling), "classifier" (reranker), "none"

    @classmethod
    def from_config(cls, config, name: str = "", head: str = "pooler") -> "EncoderShape":
        return cls(name=name, vocab=config.vocab_size, hidden=config.hidden_size, layers=config.num_hidden_layers,
                   heads=config.num_attention_heads, intermediate=config.intermediate_size,
                   positions=config.max_position_embeddings, type_vocab=getattr(config, "type_vocab_size", 1),
                   head=head)

    def embedding_params(self) -> int:
        return (self.vocab + self.positions + self.type_vocab) * self.hidden + 2 * self.hidden

    def layer_matmul_params(self) -> int:
        h, i = self.hidden, self.intermediate
        return 4 * (h * h + h) + (h * i + i) + (i * h + h)

    def layer_params(self) -> int:
        return self.layer_matmul_params() + 2 * 2 * self.hidden  # two LayerNorms

    def head_params(self) -> int:
        h = self.hidden
        return {"pooler": h * h + h, "classifier": h * h + h + h + 1}.get(self.head, 0)

    def params(self) -> int:
        return self.embedding_params() + self.layers * self.layer_params() + self.head_params()


# The public config of xlm-roberta-large, which BAAI/bge-m3 (with 8194 positions) and
# BAAI/bge-reranker-v2-m3 share.
XLMR_LARGE = EncoderShape("XLM-RoBERTa-large", vocab=250002, hidden=1024, layers=24, heads=16, intermediate=4096,
                          positions=8194)


def trainable_params(shape: EncoderShape, frozen_layers: int, train_head: bool = True) -> int:
    """Parameters that get a gradient: the layers above ``frozen_layers`` (> 0 also freezes the
    embeddings, as ``--freeze_layers`` does) and the head if it is used by the loss."""
    trainable = (shape.layers - frozen_layers) * shape.layer_params() + (shape.head_params() if train_head else 0)
    return trainable + (shape.embedding_params() if frozen_layers == 0 else 0)


def activation_bytes_per_token(shape: EncoderShape, gradient_checkpointing: bool) -> tuple[int, int]:
    """(kept per token per trained layer, rebuilt per token for the one layer being recomputed)."""
    full = 28 * shape.hidden + 4 * shape.intermediate
    if gradient_checkpointing:
        return 4 * shape.hidden, full
    return full, 0


def estimate_encoder_memory(shape: EncoderShape, *, forwards: Sequence[tuple[int, int]], frozen_layers: int,
                            gradient_checkpointing: bool, train_head: bool = True) -> dict[str, float]:
    """GiB for weights, gradients, optimizer state, activations and the total (see the module docstring).

    ``forwards``: (rows, tokens per row) of every forward pass of one micro-batch, e.g. an embedding
    model's queries, positives and negatives: ``[(8, 32), (8, 384), (8, 384)]``. ``frozen_layers``
    follows ``--freeze_layers`` (> 0 also freezes the embeddings). ``train_head``: whether the head
    gets gradients (a reranker's classifier does; an embedding model's pooler does not).
    """
    trained_layers = shape.layers - frozen_layers
    embeddings_trained = frozen_layers == 0
    trainable = trainable_params(shape, frozen_layers, train_head)
    weights = 4 * shape.params() + 2 * trained_layers * shape.layer_matmul_params()
    tokens = sum(rows * length for rows, length in forwards)
    largest = max((rows * length for rows, length in forwards), default=0)
    kept, rebuilt = activation_bytes_per_token(shape, gradient_checkpointing)
    activations = trained_layers * kept * tokens + rebuilt * largest
    activations += 4 * shape.hidden * tokens  # the last layer's fp32 output, pooled or classified
    if embeddings_trained:
        activations += 9 * shape.hidden * tokens
    result = {"weights": weights / GIB, "gradients": 4 * trainable / GIB, "optimizer": 8 * trainable / GIB,
              "activations": activations / GIB}
    result["total"] = sum(result.values()) + CUDA_OVERHEAD_GIB
    return result
