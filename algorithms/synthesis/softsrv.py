"""SoftSRV (DeSalvo et al., arXiv 2410.16534): a frozen LM steered by a trained soft prompt
generates synthetic data like a target sample.

The prompt is ``tokens`` virtual token embeddings prepended to the frozen model's input. Only the
prompt's parameters are trained, by the next-token loss of target examples x_i behind it:
min_theta sum_i -log p_LM(x_i | P_theta(z_i)), z_i = E(x_i) an embedding of the example (the
``featurizer``). Three parameterisations (the paper's Section 3):

- ``single`` (SoftSRV-NSP): one prompt P for every example; z is not used.
- ``mixture`` (SoftSRV-MPk): k prompts P_1..P_k mixed by softmax(W z): P(z) = sum_j a_j(z) P_j.
  With k = 1 the weight is 1 and it is the single prompt.
- ``contextual`` (SoftSRV-MLP): an MLP maps z to the prompt: P(z) = P_0 + MLP(z), its last
  layer zero at the start (so training starts from the single prompt P_0).

To generate, the protocol draws a target training example per sample and prompts with P(z) of
its embedding (a single prompt ignores it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sim import checks

VARIANTS = ("single", "mixture", "contextual")


class SinglePrompt(nn.Module):
    """One prompt ``[tokens, width]`` (initialised N(0, scale^2), the scale of the model's own
    token embeddings)."""

    def __init__(self, tokens: int, width: int, scale: float) -> None:
        super().__init__()
        self.prompt = nn.Parameter(torch.randn(tokens, width) * scale)

    def forward(self, features: torch.Tensor | None, count: int) -> torch.Tensor:
        return self.prompt.expand(count, *self.prompt.shape)


class MixturePrompt(nn.Module):
    """k prompts mixed per example by softmax(W z) (SoftSRV-MPk)."""

    def __init__(self, k: int, tokens: int, width: int, features: int, scale: float) -> None:
        super().__init__()
        self.prompts = nn.Parameter(torch.randn(k, tokens, width) * scale)
        self.gate = nn.Linear(features, k)

    def forward(self, features: torch.Tensor | None, count: int) -> torch.Tensor:
        if features is None:
            raise ValueError("a mixture prompt needs the examples' features")
        weights = torch.softmax(self.gate(features), dim=-1)  # [count, k]
        return torch.einsum("ck,ktw->ctw", weights, self.prompts)


class ContextualPrompt(nn.Module):
    """P(z) = P_0 + MLP(z) (SoftSRV-MLP); the MLP's output layer starts at zero."""

    def __init__(self, hidden: int, tokens: int, width: int, features: int, scale: float) -> None:
        super().__init__()
        self.base = SinglePrompt(tokens, width, scale)
        self.mlp = nn.Sequential(
            nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, tokens * width)
        )
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, features: torch.Tensor | None, count: int) -> torch.Tensor:
        if features is None:
            raise ValueError("a contextual prompt needs the examples' features")
        shift = self.mlp(features).view(count, *self.base.prompt.shape)
        return self.base(None, count) + shift


@dataclass
class SoftSRV:
    """A trained soft prompt of ``tokens`` virtual tokens: ``variant`` one of :data:`VARIANTS`;
    ``k`` prompts for the mixture, ``hidden`` units for the contextual MLP; ``featurizer`` embeds
    the target examples (mixture, contextual; see ``sim.training.features.FEATURIZERS``)."""

    variant: str = "contextual"
    tokens: int = 8
    k: int = 4
    hidden: int = 128
    featurizer: str = "all-minilm-l6-v2"

    def __post_init__(self) -> None:
        checks.one_of(self, "variant", VARIANTS)
        checks.at_least(self, 1, "tokens", "k", "hidden")

    @property
    def uses_features(self) -> bool:
        return self.variant != "single"

    def build(self, width: int, features: int, scale: float) -> nn.Module:
        """The prompt module: ``module(features [count, features] | None, count)`` returns
        ``[count, tokens, width]``."""
        if self.variant == "single":
            return SinglePrompt(self.tokens, width, scale)
        if self.variant == "mixture":
            return MixturePrompt(self.k, self.tokens, width, features, scale)
        return ContextualPrompt(self.hidden, self.tokens, width, features, scale)
