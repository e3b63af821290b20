"""scripts/run.sh runs the jobs process beside the server and stops it when the server ends.

The script runs for real in a scratch copy of the layout it expects, with `scripts/setup.sh` and
`.venv/bin/parley` replaced by recorders (the real ones install packages and serve forever).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FAKE_PARLEY = r"""#!/usr/bin/env bash
here="$(cd "$(dirname "$0")/../.." && pwd)"
echo "$*" >> "$here/calls.log"
case "$1" in
  jobs)
    trap 'echo "jobs stopped" >> "$here/calls.log"; exit 0' TERM
    touch "$here/jobs.started"
    while :; do sleep 0.05; done ;;
  serve)
    # The server runs until the jobs process is up, then ends (as on Ctrl-C).
    for _ in $(seq 200); do [ -f "$here/jobs.started" ] && break; sleep 0.05; done
    [ -f "$here/jobs.started" ] && echo "serve saw jobs" >> "$here/calls.log"
    exit 0 ;;
esac
"""


def test_run_sh_starts_jobs_beside_the_server_and_stops_them_with_it(tmp_path):
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "run.sh", tmp_path / "scripts" / "run.sh")
    (tmp_path / "scripts" / "setup.sh").write_text("exit 0\n")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "parley").write_text(FAKE_PARLEY)
    (bin_dir / "parley").chmod(0o755)
    env = {**os.environ, "DATABASE_URL": "postgresql://example.invalid/parley"}
    done = subprocess.run(["bash", str(tmp_path / "scripts" / "run.sh"), "--port", "8123"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    assert calls[0] == "migrate"
    assert "jobs" in calls and "serve --demo --port 8123" in calls and "serve saw jobs" in calls
    # When run.sh returns, the jobs process has been told to stop and has stopped.
    assert calls[-1] == "jobs stopped"
