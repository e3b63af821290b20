#!/usr/bin/env bash
# Sets everything up (test tools and Chromium included) and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
# Habits first (seconds): lint and types of the shipped Python; a finding fails the command.
.venv/bin/ruff check pyapp jobs tests bench scripts
.venv/bin/ruff format --check pyapp jobs
.venv/bin/mypy
set +e
# Two workers (pytest-xdist), each with its own PostgreSQL (tests/support/database.py names the
# cluster by the worker's pid), a test file at a time so module fixtures are made once.
.venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
code=$?
set -e
# pytest exits 5 when nothing was collected: that is a failure here, not a pass.
exit $code
