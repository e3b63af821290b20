#!/usr/bin/env bash
# Writes constraints.txt: the exact version of every Python package a fresh install of Parley
# (with its test tools) resolves to today. scripts/setup.sh and the Dockerfile install under it,
# so every machine and CI gets the set the suite last passed with, not whatever the registry
# published since. Run it to upgrade on purpose (then run the whole suite before landing):
#   bash scripts/lock.sh && bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install -q --upgrade pip >/dev/null
"$tmp/venv/bin/python" -m pip install -q -e ".[test]" >"$tmp/pip.log" 2>&1 || { cat "$tmp/pip.log"; exit 1; }
{
  echo "# Exact versions of every Python package Parley installs (scripts/setup.sh, Dockerfile: pip -c)."
  echo "# Written by scripts/lock.sh from a fresh install; upgrade by running it again, then the suite."
  # A local label (torch's +cpu) is left off: ==X matches X+cpu, whichever index serves it.
  "$tmp/venv/bin/python" -m pip freeze --exclude-editable | grep -v '^-e ' | sed -E 's/\+[A-Za-z0-9.]+$//' | LC_ALL=C sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages"
