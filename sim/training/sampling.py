"""Sampling continuations from a language model: the generated data of teacher-student runs
(DistillSpec's target- and draft-generated sequences) and held-out evaluation sequences."""

from __future__ import annotations

from typing import Any

import torch


@torch.no_grad()
def sample_continuations(
    model: Any, prompts: torch.Tensor, length: int, temperature: float, seed: int
) -> torch.Tensor:
    """``(batch, prompt + length)`` tokens: each prompt continued by ``length`` tokens drawn from
    ``model`` at ``temperature`` (0: greedy), all rows together with a KV cache; the draws come
    from a torch generator seeded with ``seed`` (the same rows whatever process runs it)."""
    generator = torch.Generator(device=prompts.device).manual_seed(seed)
    logits, cache = model.extend(prompts, None)
    rows = [prompts]
    for i in range(length):
        last = logits[:, -1].double()
        if temperature > 0:
            probabilities = torch.softmax(last / temperature, dim=-1)
            token = torch.multinomial(probabilities, 1, generator=generator)
        else:
            token = last.argmax(dim=-1, keepdim=True)
        rows.append(token)
        if i + 1 < length:
            logits, cache = model.extend(token, cache)
    return torch.cat(rows, dim=1)
