#!/usr/bin/env bash
# Sets everything up and runs Parley on the embedded PostgreSQL with a demo tenant.
# Set DATABASE_URL to use another PostgreSQL 16+ with pgvector instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${DATABASE_URL:-}" ]; then .venv/bin/parley db start >/dev/null; fi
.venv/bin/parley migrate
exec .venv/bin/parley serve --demo "$@"
