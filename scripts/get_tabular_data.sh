#!/usr/bin/env bash
# Fetch the R packages mlbench and kernlab (datasets only; R is not installed) from the Debian
# archive and extract them under ${COHORT_DATA_DIR:-~/.local/share/cohort}, where envs/tabular.py
# looks. Idempotent: does nothing if both are already there.
set -euo pipefail
dest="${COHORT_DATA_DIR:-$HOME/.local/share/cohort}"
lib="$dest/usr/lib/R/site-library"
if [ -f "$lib/mlbench/data/LetterRecognition.rda" ] && [ -f "$lib/kernlab/data/spam.rda" ]; then
  echo "tabular data already in $lib"; exit 0
fi
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
download() { (cd "$work" && apt-get download r-cran-mlbench r-cran-kernlab); }
download || { apt-get update -qq && download; }  # a fresh machine may have no package lists
for deb in "$work"/*.deb; do dpkg-deb -x "$deb" "$dest"; done
echo "tabular data in $lib"
