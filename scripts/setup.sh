#!/usr/bin/env bash
# Installs everything Parley needs on a fresh Debian machine (root, Python 3.11):
# system packages, the virtualenv with Python packages, the widget build.
# `scripts/setup.sh` for running, `scripts/setup.sh --test` adds test tools and Chromium.
# Re-running is cheap: each step is skipped when its inputs have not changed.
set -euo pipefail
cd "$(dirname "$0")/.."
WANT_TEST=0
[ "${1:-}" = "--test" ] && WANT_TEST=1

log() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    log "please install: ${missing[*]} (needs root)"; return 1
  fi
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# System packages: a venv-capable Python, Node for the widget build, Chromium for browser tests.
PY=${PYTHON:-python3}
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then apt_install python3-venv; fi
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm
if [ $WANT_TEST = 1 ]; then
  apt_install chromium fonts-dejavu-core
  # Real documentation sites for the answer-quality tests and bench (tests/knowledge/pydocs, pgdocs, octave).
  apt_install python3.11-doc
  apt_install postgresql-doc-15
  apt_install octave-doc
  # PgBouncer in transaction mode in front of the test PostgreSQL (tests/hardening/test_pooled_isolation.py).
  apt_install pgbouncer
fi

# Python packages into .venv at the versions in constraints.txt (scripts/lock.sh writes it: the set
# the suite last passed with), re-installed only when pyproject.toml or constraints.txt changes.
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
extras=""; stamp=".venv/.parley-installed"
if [ $WANT_TEST = 1 ]; then extras="[test]"; stamp="$stamp-test"; fi
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "pip install -e .${extras} -c constraints.txt"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  if ! .venv/bin/python -m pip install -q -c constraints.txt -e ".${extras}" > .venv/pip-install.log 2>&1; then
    # A package index without one of the locked versions: the newest versions pyproject.toml
    # allows instead, said loudly (the suite then runs on a set it has not passed with before).
    tail -n 5 .venv/pip-install.log
    log "WARNING: constraints.txt could not be installed from this package index; installing the newest allowed versions"
    if ! .venv/bin/python -m pip install -q -e ".${extras}" > .venv/pip-install.log 2>&1; then
      cat .venv/pip-install.log; exit 1
    fi
    want="unlocked"  # the next run tries the locked set again
  fi
  .venv/bin/python -c 'import pyapp, aiohttp, asyncpg' >/dev/null
  echo "$want" > "$stamp"
fi

# The local embedding model on ONNX Runtime: exported once from the installed weights
# (pyapp/providers/minilm_onnx.py), so the first server start does not spend seconds on it.
.venv/bin/python -m pyapp.cli embeddings export >/dev/null 2>&1 || log "embedding model not exported (the first load will)"

# The widget: esbuild from the lockfile, rebuilt when its sources change.
if [ -f widget/package.json ]; then
  wstamp="widget/node_modules/.parley-built"
  wwant="$(cat widget/package-lock.json widget/build.mjs $(find widget/src -type f | sort) 2>/dev/null | sha256sum | cut -c1-16)"
  if [ "$(cat "$wstamp" 2>/dev/null)" != "$wwant" ] || [ ! -f widget/dist/widget.js ]; then
    log "building the widget"
    (cd widget && npm ci --no-audit --no-fund --loglevel=error >/dev/null && npm run --silent build)
    echo "$wwant" > "$wstamp"
  fi
fi
log "ready"
