"""`parley …` run as an operator runs it: a subprocess against the test database."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys

from support.knowledge import ROOT
from support.server import TEST_SECRET
from support.waits import Output


async def run_parley(settings, *args, timeout: float = 60):
    """(exit code, stdout, stderr) of `python -m pyapp.cli *args`."""
    env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": TEST_SECRET,
           "PARLEY_PUBLIC_URL": "https://chat.example", "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pyapp.cli", *args, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


def json_line(line: str) -> dict:
    """A log line as the JSON object it holds, or {}."""
    try:
        value = json.loads(line)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@contextlib.asynccontextmanager
async def jobs_process(settings, tmp_path):
    """`parley jobs` as its own process on the test database, its output in an Output; stopped
    with SIGTERM after the block, which must end it with exit code 0."""
    env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": TEST_SECRET,
           "PARLEY_JOBS_HEARTBEAT": str(tmp_path / "alive"), "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pyapp.cli", "jobs", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out = Output(proc.stdout)
    try:
        yield proc, out
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(proc.wait(), 30)
        await out.task
    assert code == 0, "\n".join(out.lines[-30:])
