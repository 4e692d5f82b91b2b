"""The zoo's decoder-only transformer language model, and LoRA adapters on it.

The layers are written out (no ``nn.MultiheadAttention`` or fused attention kernel) so that the
arithmetic, and with it a replay, stays the same across torch versions, and so that a LoRA model
keeps the base model's tensor names: an adapted linear layer is the base layer's ``weight`` and
``bias`` plus ``lora_a`` and ``lora_b`` beside them, and the base weights load into it unchanged.

Tensor names (``L`` the layer index): ``embed.weight``, ``position``,
``blocks.L.norm1.{weight,bias}``, ``blocks.L.attention.qkv.{weight,bias}``,
``blocks.L.attention.out.{weight,bias}``, ``blocks.L.norm2.{weight,bias}``,
``blocks.L.mlp.up.{weight,bias}``, ``blocks.L.mlp.down.{weight,bias}``, ``norm.{weight,bias}``,
``head.{weight,bias}``; with LoRA also ``<linear>.lora_a`` and ``<linear>.lora_b``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from fedrelay.protocol.model_spec import LoraSpec, TransformerLMSpec


@dataclass(frozen=True)
class Adapter:
    """Which linear layers carry LoRA adapters, of what rank and scale."""

    rank: int
    scale: float
    targets: tuple[str, ...]


class AdaptedLinear(nn.Linear):
    """A linear layer, optionally with a low-rank adapter: ``W x + b + scale * B (A x)``."""

    def __init__(self, inputs: int, outputs: int, adapter: Adapter | None) -> None:
        """A linear layer ``inputs -> outputs``; with ``adapter``, ``lora_a`` and ``lora_b``."""
        super().__init__(inputs, outputs)
        self.scale = 0.0
        if adapter is not None:
            self.scale = adapter.scale
            self.lora_a = nn.Parameter(torch.empty(adapter.rank, inputs))
            self.lora_b = nn.Parameter(torch.zeros(outputs, adapter.rank))
            nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's output (with the adapter's when it has one)."""
        out = functional.linear(x, self.weight, self.bias)
        if self.scale:
            out = out + functional.linear(functional.linear(x, self.lora_a), self.lora_b) * (
                self.scale
            )
        return out


def _linear(inputs: int, outputs: int, adapter: Adapter | None, target: str) -> AdaptedLinear:
    chosen = adapter if adapter is not None and target in adapter.targets else None
    return AdaptedLinear(inputs, outputs, chosen)


class Attention(nn.Module):
    """Causal multi-head self-attention."""

    def __init__(self, spec: TransformerLMSpec, adapter: Adapter | None) -> None:
        """Projections for ``spec.heads`` heads of ``spec.width``."""
        super().__init__()
        self.heads = spec.heads
        self.qkv = _linear(spec.width, 3 * spec.width, adapter, "attention")
        self.out = _linear(spec.width, spec.width, adapter, "attention")
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend over the positions up to each one."""
        batch, length, width = x.shape
        head = width // self.heads
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.heads, head).transpose(1, 2) for t in (q, k, v))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(head)
        future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
        weights = self.dropout(torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1))
        mixed = (weights @ v).transpose(1, 2).reshape(batch, length, width)
        out: torch.Tensor = self.out(mixed)
        return out


class FeedForward(nn.Module):
    """The block's MLP: up-projection, ReLU, down-projection."""

    def __init__(self, spec: TransformerLMSpec, adapter: Adapter | None) -> None:
        """Layers of ``spec.width`` and ``spec.mlp_ratio * spec.width``."""
        super().__init__()
        hidden = spec.width * spec.mlp_ratio
        self.up = _linear(spec.width, hidden, adapter, "mlp")
        self.down = _linear(hidden, spec.width, adapter, "mlp")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``down(relu(up(x)))``."""
        out: torch.Tensor = self.down(torch.relu(self.up(x)))
        return out


class Block(nn.Module):
    """A pre-norm transformer block with residual connections."""

    def __init__(self, spec: TransformerLMSpec, adapter: Adapter | None) -> None:
        """Attention and MLP of ``spec``."""
        super().__init__()
        self.norm1 = nn.LayerNorm(spec.width)
        self.attention = Attention(spec, adapter)
        self.norm2 = nn.LayerNorm(spec.width)
        self.mlp = FeedForward(spec, adapter)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x + attention(norm(x))``, then ``+ mlp(norm(.))``."""
        x = x + self.dropout(self.attention(self.norm1(x)))
        out: torch.Tensor = x + self.dropout(self.mlp(self.norm2(x)))
        return out


class TransformerLM(nn.Module):
    """A decoder-only transformer: token ids ``(b, t)`` to next-token logits ``(b, t, vocab)``."""

    def __init__(self, spec: TransformerLMSpec, adapter: Adapter | None = None) -> None:
        """Layers sized by ``spec``; LoRA adapters where ``adapter`` says."""
        super().__init__()
        self.context = spec.context
        self.embed = nn.Embedding(spec.vocab, spec.width)
        self.position = nn.Parameter(torch.zeros(spec.context, spec.width))
        nn.init.normal_(self.position, std=0.02)
        self.blocks = nn.ModuleList(Block(spec, adapter) for _ in range(spec.layers))
        self.norm = nn.LayerNorm(spec.width)
        self.head = nn.Linear(spec.width, spec.vocab)
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Logits of the next token at every position."""
        length = tokens.shape[1]
        if length > self.context:
            raise ValueError(f"{length} tokens exceed the model's context {self.context}")
        x = self.dropout(self.embed(tokens) + self.position[:length])
        for block in self.blocks:
            x = block(x)
        logits: torch.Tensor = self.head(self.norm(x))
        return logits


def transformer_lm(spec: TransformerLMSpec) -> nn.Module:
    """The language model of ``spec``."""
    return TransformerLM(spec)


def lora_lm(spec: LoraSpec) -> nn.Module:
    """The base language model of ``spec`` with its adapters (the base's tensors keep their
    names; the adapters' end in ``.lora_a`` / ``.lora_b``)."""
    return TransformerLM(spec.base, Adapter(spec.rank, spec.scale, tuple(spec.targets)))
