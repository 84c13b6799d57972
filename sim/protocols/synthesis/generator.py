"""The frozen generator: a pretrained causal LM held by an actor (``cluster.generator``) that
serves log-likelihoods, their gradients with respect to prompt embeddings, and batched sampling.
Its weights never change: the prompts are trained on the driver, from the gradients it returns.

A prompt is one array per example: token ids (int, a hard prompt: embedded by the model's own
table) or embeddings (float, ``[tokens, width]``: a soft prompt). Rows of different prompt
lengths are left-padded, with position ids counted over the real tokens only (as
``transformers``' ``generate`` does), so padding changes no row's numbers' meaning.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sim.runtime.workers import actor_device


def prompt_embeddings(embed: torch.nn.Module, prompt: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``[tokens, width]`` embeddings of one prompt: ids through the table, floats as given."""
    prompt = torch.tensor(prompt) if isinstance(prompt, np.ndarray) else prompt
    if prompt.is_floating_point():
        return prompt.to(embed.weight.device, embed.weight.dtype)
    return embed(prompt.long().to(embed.weight.device))


def assemble(
    embed: torch.nn.Module, prompts: Sequence[torch.Tensor], targets: Sequence[np.ndarray]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(inputs, attention mask, position ids, labels)`` of rows ``[pad, prompt, target, pad]``
    on the embedding's device:
    prompts left-padded to the longest, targets right-padded; labels are the target ids and
    -100 elsewhere (a target's first token is scored from the prompt's last position, so with an
    empty prompt it is not scored, as in the plain model)."""
    width, device = embed.weight.shape[1], embed.weight.device
    left = max(len(p) for p in prompts)
    right = max(len(t) for t in targets)
    rows, masks, labels = [], [], []
    for prompt, target in zip(prompts, targets, strict=True):
        ids = torch.tensor(np.asarray(target), dtype=torch.long, device=device)
        pad_left, pad_right = left - len(prompt), right - len(ids)
        zeros = prompt.new_zeros
        rows.append(
            torch.cat([zeros(pad_left, width), prompt, embed(ids), zeros(pad_right, width)])
        )
        masks.append(
            torch.tensor(
                [0] * pad_left + [1] * (len(prompt) + len(ids)) + [0] * pad_right, device=device
            )
        )
        fill = [torch.full((n,), -100, device=device) for n in (left, pad_right)]
        labels.append(torch.cat([fill[0], ids, fill[1]]))
    mask = torch.stack(masks)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return torch.stack(rows), mask, positions, torch.stack(labels)


def token_log_likelihoods(model: Any, inputs, mask, positions, labels) -> torch.Tensor:
    """Per row: the sum of log p(label | everything before it) over the scored labels."""
    logits = model(inputs_embeds=inputs, attention_mask=mask, position_ids=positions).logits
    targets = labels[:, 1:]
    log_probs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(targets == -100, 0.0).sum(1)  # padded rows' values never enter


class FrozenLM:
    """The generator actor (wrapped with ``ray.remote`` by the protocol): the frozen model on
    the device Ray assigned, with ``num_cpus`` torch threads."""

    def __init__(self, spec: Any, num_cpus: float) -> None:
        self.device = actor_device(num_cpus)
        self.model, tokenizer = spec.load()
        self.model.to(self.device)
        self.embed = self.model.get_input_embeddings()
        self.eos, self.pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    def placement(self) -> str:
        return str(self.device)

    def digest(self) -> str:
        """SHA-256 over every parameter's bytes (in name order): the weights' identity."""
        hasher = hashlib.sha256()
        for name, value in sorted(self.model.state_dict().items()):
            hasher.update(name.encode())
            hasher.update(value.detach().cpu().contiguous().numpy().tobytes())
        return hasher.hexdigest()

    def embedding_scale(self) -> float:
        """The standard deviation of the token embeddings (a soft prompt's initial scale)."""
        return float(self.embed.weight.std())

    def _batch(self, prompts, targets, grad: bool = False):
        embedded = [prompt_embeddings(self.embed, p) for p in prompts]
        if grad:
            embedded = [e.detach().requires_grad_(True) for e in embedded]
        parts = assemble(self.embed, embedded, targets)
        return embedded, parts

    def log_likelihoods(self, prompts: Sequence[np.ndarray], targets: Sequence[np.ndarray]):
        """Per example: sum log p(target | prompt), nats."""
        with torch.no_grad():
            _, parts = self._batch(prompts, targets)
            return token_log_likelihoods(self.model, *parts).cpu().numpy()

    def prompt_gradients(
        self, prompts: np.ndarray, targets: Sequence[np.ndarray]
    ) -> tuple[float, int, np.ndarray]:
        """``(summed negative log-likelihood, scored tokens, its gradient with respect to the
        prompt embeddings [rows, tokens, width])`` for float prompts of one length."""
        embedded, parts = self._batch(list(prompts), targets, grad=True)
        loss = -token_log_likelihoods(self.model, *parts).sum()
        loss.backward()
        grads = torch.stack([e.grad for e in embedded]).cpu().numpy()
        return loss.item(), int((parts[3][:, 1:] != -100).sum()), grads

    def generate(self, prompts: Sequence[np.ndarray], new_tokens: int, seed: int):
        """One sample per prompt, ancestral (temperature 1, no top-k/top-p), of at most
        ``new_tokens`` tokens, cut at the end-of-text token; torch's generator seeded by
        ``seed``, so a batch's samples depend only on its prompts and seed."""
        with torch.no_grad():
            embedded = [prompt_embeddings(self.embed, p) for p in prompts]
            inputs, mask, _, _ = assemble(
                self.embed, embedded, [np.zeros(0, np.int64)] * len(embedded)
            )
            torch.manual_seed(seed)
            out = (
                self.model.generate(
                    inputs_embeds=inputs,
                    attention_mask=mask,
                    do_sample=True,
                    temperature=1.0,
                    top_k=0,
                    top_p=1.0,
                    max_new_tokens=new_tokens,
                    eos_token_id=self.eos,
                    pad_token_id=self.pad,
                )
                .cpu()
                .numpy()
            )
        samples = []
        for row in out:
            stop = np.flatnonzero(row == self.eos)
            samples.append(row[: stop[0] if len(stop) else len(row)])
        return samples
