"""A GPT-style decoder in plain PyTorch: pre-norm blocks, causal ``scaled_dot_product_attention``,
learned positions, tied input/output embeddings.

Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2, 2019): LayerNorm
before attention and MLP, a final LayerNorm, residual projections initialised with std
``0.02 / sqrt(2 layers)``; Press & Wolf, "Using the Output Embedding to Improve Language Models",
EACL 2017 (tied embeddings). ``forward(ids)`` gives next-token logits for every position.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sim import checks

KeyValues = tuple[torch.Tensor, torch.Tensor]  # one block's cached keys and values (B, H, T, D)


def mlp(width: int) -> nn.Sequential:
    """The blocks' feed-forward layer: ``width -> 4 width -> width`` with GELU."""
    return nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))


class Block(nn.Module):
    """``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.mlp = mlp(width)

    def forward(
        self, x: torch.Tensor, past: KeyValues | None = None
    ) -> tuple[torch.Tensor, KeyValues]:
        """``x`` (batch, length, width) after ``past`` cached positions' keys and values;
        returns the output and the keys and values of all positions so far."""
        batch, length, width = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(width, dim=2)
        shape = (batch, length, self.heads, width // self.heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        if past is None:
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # new position i sees every cached one and the new ones up to i
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            cached = past[0].shape[2]
            mask = torch.ones(length, cached + length, dtype=torch.bool, device=x.device)
            attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.tril(cached))
        x = x + self.proj(attended.transpose(1, 2).reshape(batch, length, width))
        return x + self.mlp(self.ln2(x)), (k, v)


class GPTModel(nn.Module):
    def __init__(self, vocab_size: int, context: int, layers: int, width: int, heads: int):
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab_size, width)
        self.position = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_final = nn.LayerNorm(width)
        self.apply(self._init)
        for block in self.blocks:  # GPT-2: residual projections scaled by depth
            for projection in (block.proj, block.mlp[2]):
                nn.init.normal_(projection.weight, std=0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def vocab_size(self) -> int:
        return self.embed.num_embeddings

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``(batch, length)`` token ids -> ``(batch, length, vocab)`` next-token logits."""
        return self.extend(ids, None)[0]

    def extend(
        self, ids: torch.Tensor, cache: list[KeyValues] | None
    ) -> tuple[torch.Tensor, list[KeyValues]]:
        """Logits of ``ids`` appended after the positions in ``cache`` (a KV cache: one
        ``(keys, values)`` per block, or None), and the cache extended by them. Keep the first
        ``n`` positions of a cache with :func:`sim.training.speculative.truncate`."""
        cached = 0 if cache is None else cache[0][0].shape[2]
        length = cached + ids.shape[1]
        if length > self.context:
            raise ValueError(f"context: {length} tokens exceed the model's context {self.context}")
        positions = torch.arange(cached, length, device=ids.device)
        x = self.embed(ids) + self.position(positions)
        extended = []
        for i, block in enumerate(self.blocks):
            x, keys_values = block(x, None if cache is None else cache[i])
            extended.append(keys_values)
        return self.ln_final(x) @ self.embed.weight.T, extended  # tied output embedding


@dataclass
class GPT:
    """The decoder's shape: ``layers`` blocks of ``width`` units and ``heads`` heads, over
    ``context`` positions. ``build(vocab_size)`` returns a fresh module (the caller seeds torch)."""

    layers: int = 6
    width: int = 256
    heads: int = 8
    context: int = 256

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "layers", "width", "heads", "context")
        if self.width % self.heads:
            raise ValueError(f"heads: must divide width {self.width} (got {self.heads})")

    def build(self, vocab_size: int) -> GPTModel:
        return GPTModel(vocab_size, self.context, self.layers, self.width, self.heads)

    def num_params(self, vocab_size: int) -> int:
        """Parameters of ``build(vocab_size)`` (the tied embedding counted once)."""
        per_block = 12 * self.width**2 + 13 * self.width
        return (vocab_size + self.context) * self.width + self.layers * per_block + 2 * self.width
