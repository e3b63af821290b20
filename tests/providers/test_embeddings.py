"""Embedders: the bundled local MiniLM model and the OpenAI-compatible client (fake server)."""
from __future__ import annotations

import asyncio
import math
import time
from typing import ClassVar

import pytest
from pyapp.providers.embeddings import (
    EmbeddingError,
    LocalMiniLMEmbedder,
    OpenAICompatibleEmbedder,
    configured_model_name,
    get_embedder,
)
from pyapp.providers.http import RetryPolicy
from support.fakes.llm_servers import FakeOpenAIServer, Reply


def cosine(a, b):
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.mark.asyncio
async def test_local_minilm_vectors_are_normalised_and_meaningful():
    embedder = get_embedder(env={"PARLEY_EMBEDDINGS": "local"})
    assert isinstance(embedder, LocalMiniLMEmbedder) and embedder.dim == 384
    assert get_embedder(env={"PARLEY_EMBEDDINGS": "local"}) is embedder  # one model per process

    # The first call loads the model (seconds): the event loop must keep running meanwhile.
    gaps: list[float] = []

    async def heartbeat():
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.02)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beat = asyncio.create_task(heartbeat())
    try:
        vectors = await embedder.embed([
            "How do I reset my password?",
            "Click Forgot password on the sign-in page and follow the link we email you.",
            "Orders ship within two business days.",
            "The widget status light blinks blue while starting.",
        ])
    finally:
        beat.cancel()
    # When another test loaded the model already, the call is quick and few beats happen;
    # what matters is that no beat was starved while the model loaded or ran. Loading on the loop
    # would stall it for the whole load (~7 s here); the bound leaves room for a busy 2-core machine
    # (1.3 s gaps were seen at load 16 from GIL contention with the loading thread).
    assert max(gaps, default=0.0) < 3.0
    assert [len(v) for v in vectors] == [384] * 4
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)
    question, answer, shipping, light = vectors
    assert cosine(question, answer) > cosine(question, shipping) + 0.1
    assert cosine(question, answer) > cosine(question, light) + 0.1
    assert await embedder.embed([]) == []
    [again] = await embedder.embed_queries(["How do I reset my password?"])
    assert cosine(again, question) > 0.9999


@pytest.mark.asyncio
async def test_openai_compatible_embedder_against_the_fake():
    async with FakeOpenAIServer(api_key="test-key") as srv:
        embedder = OpenAICompatibleEmbedder(srv.base_url + "/v1", "test-key", "text-embedding-3-small", batch_size=2)
        texts = ["refund policy", "refund policy details", "", "shipping times", "refund"]
        vectors = await embedder.embed(texts)
        assert len(vectors) == 5 and all(len(v) == 384 for v in vectors)
        assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-9 for v in vectors)
        assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[3])  # order preserved
        assert len(srv.requests) == 3
        first = srv.requests[0]
        assert first.path == "/v1/embeddings" and first.headers["Authorization"] == "Bearer test-key"
        assert first.json["dimensions"] == 384 and first.json["model"] == "text-embedding-3-small"
        assert srv.requests[1].json["input"] == [" ", "shipping times"]  # empty text sent as a space


@pytest.mark.asyncio
async def test_openai_embedder_retries_and_errors():
    async with FakeOpenAIServer(api_key="test-key", embedding_dim=10) as srv:
        fast = RetryPolicy(max_retries=1, base_delay=0.01)
        embedder = OpenAICompatibleEmbedder(srv.base_url, "test-key", "m", retry=fast)
        srv.embedding_script.extend([Reply.rate_limited(retry_after="0"), Reply()])
        assert len((await embedder.embed(["a"]))[0]) == 384
        srv.embedding_script.extend([Reply.server_error(502), Reply.server_error(502)])
        with pytest.raises(EmbeddingError) as info:
            await embedder.embed(["a"])
        assert info.value.code == "upstream_error"
        mismatched = OpenAICompatibleEmbedder(srv.base_url, "test-key", "m", send_dimensions=False)
        with pytest.raises(EmbeddingError) as info:
            await mismatched.embed(["a"])
        assert info.value.code == "dimension_mismatch"
        with pytest.raises(EmbeddingError) as info:
            await OpenAICompatibleEmbedder(srv.base_url, "wrong", "m", retry=fast).embed(["a"])
        assert info.value.code == "auth_failed"


def test_factory_reads_the_environment():
    assert get_embedder(env={"PARLEY_EMBEDDINGS": "none"}) is None
    assert configured_model_name(env={"PARLEY_EMBEDDINGS": "none"}) is None
    assert configured_model_name(env={"PARLEY_EMBEDDINGS": "local"}) == "all-MiniLM-L6-v2"
    env = {"PARLEY_EMBEDDINGS_URL": "http://127.0.0.1:1/v1", "PARLEY_EMBEDDINGS_KEY": "k",
           "PARLEY_EMBEDDINGS_MODEL": "nomic-embed-text"}
    embedder = get_embedder(env=env)
    assert isinstance(embedder, OpenAICompatibleEmbedder) and embedder.model == "nomic-embed-text"
    assert embedder.url == "http://127.0.0.1:1/v1/embeddings" and embedder.dim == 384
    assert configured_model_name(env=env) == "nomic-embed-text"

    class Settings:
        extra: ClassVar[dict[str, str]] = {"PARLEY_EMBEDDINGS": "none"}

    assert get_embedder(Settings(), env=env) is None  # settings override the environment
    with pytest.raises(ValueError):
        get_embedder(env={"PARLEY_EMBEDDINGS": "openai"})
    with pytest.raises(ValueError):
        get_embedder(env={"PARLEY_EMBEDDINGS": "bert"})


_RUNTIMES_AGREE = """
import json, sys
from pyapp.providers.embeddings import LocalMiniLMEmbedder
texts = json.loads(sys.stdin.read())
torch = LocalMiniLMEmbedder(runtime="torch")._encode(texts)
cosines = {}
for runtime in ("onnx", "onnx-int8"):
    vectors = LocalMiniLMEmbedder(runtime=runtime)._encode(texts)
    cosines[runtime] = [sum(a * b for a, b in zip(x, y)) for x, y in zip(vectors, torch)]
print(json.dumps(cosines))
"""


@pytest.mark.timeout(600)  # loads torch and two ONNX sessions in a child: minutes on a loaded machine
def test_onnx_runtimes_give_the_torch_vectors():
    """The ONNX runtimes (exported from the installed weights, texts sorted by length and run
    in groups) must give sentence-transformers' vectors text by text: the float graph the
    same, the default int8 one the same meaning (cosine ≥ 0.99), so vectors stored by any of
    them stay valid. In a child process: torch stays out of the test process."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    texts = [
        "refund",
        "How do I reset my password?",
        "The widget status light blinks blue while starting. " * 3,
        "A passage far longer than the model reads, so both runtimes must truncate it the same way. " * 40,
        "",
        "Orders ship within two business days; tracking links arrive by e-mail.",
        "héllo wörld — naïve café ☕ 中文",
        "x " * 9,
        "def f(x):\n    return x ** 2  # squared",
        "Traceback (most recent call last): ValueError: invalid literal for int() with base 10: 'abc'",
    ]
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", _RUNTIMES_AGREE], input=json.dumps(texts), capture_output=True,
                          text=True, cwd=root, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    cosines = json.loads(done.stdout.strip().splitlines()[-1])
    assert [len(c) for c in cosines.values()] == [len(texts)] * 2
    assert min(cosines["onnx"]) > 0.9999, cosines
    assert min(cosines["onnx-int8"]) >= 0.99, cosines


def test_runtime_setting():
    from pyapp.providers.embeddings import local_runtime

    assert local_runtime({"PARLEY_EMBED_RUNTIME": "torch"}) == "torch"
    assert local_runtime({"PARLEY_EMBED_RUNTIME": " ONNX "}) == "onnx"
    assert local_runtime({}) == "onnx-int8"  # onnxruntime is a dependency
    with pytest.raises(ValueError):
        local_runtime({"PARLEY_EMBED_RUNTIME": "tensorflow"})


@pytest.mark.asyncio
async def test_repeated_questions_skip_the_model(monkeypatch):
    embedder = LocalMiniLMEmbedder(runtime="onnx-int8")
    calls: list[list[str]] = []

    def encode(texts):
        calls.append(list(texts))
        return [[float(len(t))] + [0.0] * 383 for t in texts]

    monkeypatch.setattr(embedder, "_encode", encode)
    monkeypatch.setattr(embedder, "QUERY_CACHE", 3)
    first = await embedder.embed_queries(["refund?", "hi", "refund?"])
    assert calls == [["refund?", "hi"]] and first[0] == first[2] and first[0][0] == 7.0
    assert await embedder.embed_queries(["hi"]) == [first[1]] and len(calls) == 1  # from the cache
    await embedder.embed_queries(["a", "bb"])  # the cache holds 3: "refund?" (least recent) goes
    await embedder.embed_queries(["refund?"])
    assert calls[1:] == [["a", "bb"], ["refund?"]]
    assert await embedder.embed(["hi"]) == [first[1]] and len(calls) == 4  # passages never use the cache
