#!/usr/bin/env bash
# Sets everything up and runs Parley on the embedded PostgreSQL with a demo tenant, with the
# jobs process beside the server (idle conversations close, retention and rollups run), so the
# demo keeps itself tidy. Set DATABASE_URL to use another PostgreSQL 16+ with pgvector instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${DATABASE_URL:-}" ]; then .venv/bin/parley db start >/dev/null; fi
.venv/bin/parley migrate
.venv/bin/parley jobs &
jobs_pid=$!
# The jobs process ends with the server, however the server ends (Ctrl-C included).
trap 'kill "$jobs_pid" 2>/dev/null; wait "$jobs_pid" 2>/dev/null || true' EXIT
.venv/bin/parley serve --demo "$@"
