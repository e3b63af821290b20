"""The local embedding model for tests: `local_embedder`, loaded once per test session."""
from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


_EMBED_SERVER = """
import json, sys
from pyapp.providers.embeddings import LocalMiniLMEmbedder
model = LocalMiniLMEmbedder()
model._encode(["warm up"])
print(json.dumps({"model": model.model}), flush=True)
for line in sys.stdin:
    print(json.dumps(model._encode(json.loads(line))), flush=True)
"""


class SubprocessEmbedder:
    """The local MiniLM embedder (providers' LocalMiniLMEmbedder) in a child process.

    The model loads once per test session, and torch never enters the pytest process, so
    tests elsewhere that time a cold first model load are unaffected by test order."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _EMBED_SERVER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, cwd=ROOT)
        self.model = json.loads(self.proc.stdout.readline())["model"]
        self.lock = threading.Lock()

    def _call(self, texts: list[str]) -> list[list[float]]:
        with self.lock:
            self.proc.stdin.write(json.dumps(texts) + "\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

    async def embed(self, texts):
        return await asyncio.to_thread(self._call, list(texts))

    async def embed_queries(self, texts):
        return await self.embed(texts)

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(60)  # exits at end of input; slow only while other suites share the cores
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(scope="session")
def local_embedder():
    """all-MiniLM-L6-v2 from the package, loaded once per test session (in a child process)."""
    embedder = SubprocessEmbedder()
    yield embedder
    embedder.close()
