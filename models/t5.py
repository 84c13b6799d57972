"""A T5-style encoder-decoder in plain PyTorch: pre-norm blocks, learned positions, one embedding
shared by the encoder's input, the decoder's input and the output.

Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text
Transformer", JMLR 2020 (arXiv 1910.10683), Section 2.1: an encoder of bidirectional
self-attention blocks; a decoder of causal self-attention, attention over the encoder's output,
and an MLP; LayerNorm before each sub-block and after the last; tied embeddings. Two departures,
both allowed by the SpacTor issue: learned absolute positions instead of T5's relative position
bias, and LayerNorm with bias instead of RMSNorm. ``forward(inputs, decoder_inputs)`` gives the
decoder's next-token logits; ``encode`` gives the encoder's output (SpacTor's replaced-token
detection head reads it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.gpt import mlp
from sim import checks


class Attention(nn.Module):
    """Multi-head attention of ``x`` over ``memory`` (itself if None), causal if asked."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.kv = nn.Linear(width, width), nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        causal: bool = False,
        key_padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``key_padding`` (batch, keys) is True at keys to ignore (padding)."""
        memory = x if memory is None else memory
        batch, length, width = x.shape
        split = lambda t: t.view(batch, -1, self.heads, width // self.heads).transpose(1, 2)  # noqa: E731
        q = split(self.q(x))
        k, v = (split(t) for t in self.kv(memory).split(width, dim=2))
        mask = None if key_padding is None else ~key_padding[:, None, None, :]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.proj(attended.transpose(1, 2).reshape(batch, length, width))


class EncoderBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention, self.mlp = Attention(width, heads), mlp(width)

    def forward(self, x: torch.Tensor, padding: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attention(self.ln1(x), key_padding=padding)
        return x + self.mlp(self.ln2(x))


class DecoderBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(width) for _ in range(3))
        self.attention, self.cross = Attention(width, heads), Attention(width, heads)
        self.mlp = mlp(width)

    def forward(
        self, x: torch.Tensor, memory: torch.Tensor, padding: torch.Tensor | None
    ) -> torch.Tensor:
        x = x + self.attention(self.ln1(x), causal=True)
        x = x + self.cross(self.ln2(x), memory, key_padding=padding)
        return x + self.mlp(self.ln3(x))


class T5Model(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        context: int,
        layers: int,
        decoder_layers: int,
        width: int,
        heads: int,
    ) -> None:
        super().__init__()
        self.context = context
        self.embed = nn.Embedding(vocab_size, width)
        self.encoder_position = nn.Embedding(context, width)
        self.decoder_position = nn.Embedding(context, width)
        self.encoder = nn.ModuleList(EncoderBlock(width, heads) for _ in range(layers))
        self.decoder = nn.ModuleList(DecoderBlock(width, heads) for _ in range(decoder_layers))
        self.encoder_ln, self.decoder_ln = nn.LayerNorm(width), nn.LayerNorm(width)
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def _positions(self, ids: torch.Tensor, table: nn.Embedding) -> torch.Tensor:
        if ids.shape[1] > self.context:
            raise ValueError(f"context: {ids.shape[1]} tokens exceed the model's {self.context}")
        return self.embed(ids) + table(torch.arange(ids.shape[1], device=ids.device))

    def encode(self, inputs: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        """``(batch, length)`` ids -> ``(batch, length, width)``; ``padding`` True at pads."""
        x = self._positions(inputs, self.encoder_position)
        for block in self.encoder:
            x = block(x, padding)
        return self.encoder_ln(x)

    def forward(
        self,
        inputs: torch.Tensor,
        decoder_inputs: torch.Tensor,
        padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits ``(batch, target length, vocab)`` of the decoder, which reads
        ``decoder_inputs`` causally and the encoded ``inputs`` whole."""
        return self.decode(self.encode(inputs, padding), decoder_inputs, padding)

    def decode(
        self,
        memory: torch.Tensor,
        decoder_inputs: torch.Tensor,
        padding: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The decoder's next-token logits given the encoder's output ``memory``."""
        x = self._positions(decoder_inputs, self.decoder_position)
        for block in self.decoder:
            x = block(x, memory, padding)
        return self.decoder_ln(x) @ self.embed.weight.T


@dataclass
class T5:
    """The encoder-decoder's shape: ``layers`` encoder and ``decoder_layers`` decoder blocks of
    ``width`` units and ``heads`` heads, over ``context`` positions on each side.
    ``build(vocab_size)`` returns a fresh module (the caller seeds torch)."""

    layers: int = 4
    decoder_layers: int = 4
    width: int = 256
    heads: int = 4
    context: int = 512

    def __post_init__(self) -> None:
        checks.at_least(self, 1, "layers", "decoder_layers", "width", "heads", "context")
        if self.width % self.heads:
            raise ValueError(f"heads: must divide width {self.width} (got {self.heads})")

    def build(self, vocab_size: int) -> T5Model:
        return T5Model(
            vocab_size, self.context, self.layers, self.decoder_layers, self.width, self.heads
        )

    def forward_flops(self, vocab_size: int, inputs: int, targets: int) -> float:
        """FLOPs (2 per multiply-accumulate) of one example's forward pass through the matrix
        products, ``inputs`` encoder and ``targets`` decoder tokens: the encoder
        (:func:`encoder_flops`); per decoder block 14 w^2 per target token, 2 w^2 per input token
        (the cross-attention's keys and values), 2 T^2 w (causal: the mask skips no work) and
        2 T L w; the output layer V w per target token. Norms, softmax and biases are left out;
        ``torch``'s ``FlopCounterMode`` counts the same products (see the tests)."""
        w, n, t = self.width, inputs, targets
        decoder = self.decoder_layers * (
            14 * w * w * t + 2 * w * w * n + 2 * t * t * w + 2 * t * n * w
        )
        return encoder_flops(w, self.layers, n) + 2.0 * (decoder + vocab_size * w * t)


def encoder_flops(width: int, layers: int, tokens: int) -> float:
    """FLOPs of ``layers`` encoder blocks over ``tokens`` tokens: per block 12 w^2 multiply-adds
    per token (attention 4 w^2, MLP 8 w^2) and 2 L^2 w for attention's scores and sums."""
    return 2.0 * layers * (12 * width * width * tokens + 2 * tokens * tokens * width)
