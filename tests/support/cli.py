"""`parley …` run as an operator runs it: a subprocess against the test database."""
from __future__ import annotations

import asyncio
import os
import sys

from support.knowledge import ROOT
from support.server import TEST_SECRET


async def run_parley(settings, *args, timeout: float = 60):
    """(exit code, stdout, stderr) of `python -m pyapp.cli *args`."""
    env = {**os.environ, "DATABASE_URL": settings.admin_url, "PARLEY_SECRET_KEY": TEST_SECRET,
           "PARLEY_PUBLIC_URL": "https://chat.example", "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "pyapp.cli", *args, cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()
