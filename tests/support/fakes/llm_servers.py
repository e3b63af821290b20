"""Fake model APIs on 127.0.0.1: OpenAI-compatible (chat + embeddings) and Anthropic Messages.

Both speak the real streaming wire formats (server-sent events) and take a *script* of
:class:`Reply` objects, consumed one per request; when the script is empty,
``default_reply`` answers. A reply can succeed, fail with a status (429 with Retry-After,
500, 529…), pause between chunks, hang, drop the connection mid-stream, or send an
in-stream error event. Every request is recorded (``requests``: path, headers, JSON body).

Usage::

    async with FakeOpenAIServer() as srv:
        srv.script.extend([Reply.rate_limited(retry_after="0"), Reply.text("Hello there")])
        llm = OpenAICompatibleLLM(srv.base_url, "test-key", "fake-model")
        ...
        assert len(srv.requests) == 2

Embeddings (``POST /v1/embeddings`` on the OpenAI fake) are deterministic bag-of-words
hash vectors of ``embedding_dim`` (or the request's ``dimensions``), L2-normalised: texts
that share words are closer than texts that do not, which is enough for retrieval tests
without the real model. ``embedding_script`` injects failures there the same way.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import math
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    """One scripted response.

    ``chunks``: the text deltas to stream. ``status``: non-200 sends an error body instead
    (with ``retry_after`` as the Retry-After header when given). ``delay``: seconds before
    each chunk. ``drop_after``: close the connection after that many chunks. ``hang_after``:
    stop sending after that many chunks until the server closes (read-timeout tests).
    ``error_event``: an in-stream error (e.g. ``"overloaded_error"``) sent after the chunks
    instead of the normal end. ``usage``: (input_tokens, output_tokens) reported. ``raw``: bytes
    sent as they are in place of the chunk events (garbage or malformed server-sent events).
    """

    chunks: list[str] = field(default_factory=lambda: ["Hello", " from", " the", " fake", " model."])
    status: int = 200
    retry_after: str | None = None
    delay: float = 0.0
    drop_after: int | None = None
    hang_after: int | None = None
    error_event: str | None = None
    usage: tuple[int, int] = (12, 5)
    raw: list[bytes] | None = None

    @classmethod
    def text(cls, text: str, **kwargs) -> Reply:
        """Stream ``text`` word by word (spaces kept on the following word)."""
        return cls(chunks=re.findall(r"\s*\S+", text) or [text], **kwargs)

    @classmethod
    def rate_limited(cls, retry_after: str | None = "0") -> Reply:
        return cls(chunks=[], status=429, retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        return cls(chunks=[], status=status)

    @classmethod
    def dropped(cls, after: int = 1, chunks: list[str] | None = None) -> Reply:
        return cls(chunks=chunks or ["Partial", " answer", " that", " never", " ends"], drop_after=after)


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    json: Any


_STOPWORDS = frozenset(["a", "an", "the", "and", "or", "but", "of", "to", "in", "on", "at", "by", "for", "with", "from",
                        "is", "are", "was", "were", "be", "been", "do", "does", "did", "how", "what", "when", "where",
                        "why", "who", "which", "can", "could", "should", "would", "will", "i", "you", "we", "my",
                        "your", "our", "it", "its", "this", "that", "there"])


def hash_embedding(text: str, dim: int) -> list[float]:
    """Deterministic bag-of-words vector: each content word (stop words dropped, a plural
    "s" stripped) adds ±1 at a hashed position."""
    vector = [0.0] * dim
    for word in re.findall(r"\w+", text.lower()):
        if word in _STOPWORDS:
            continue
        if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        digest = hashlib.sha256(word.encode()).digest()
        index = int.from_bytes(digest[:4], "big") % dim
        vector[index] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(x * x for x in vector))
    if norm == 0:
        vector[0] = 1.0
        return vector
    return [x / norm for x in vector]


class _FakeServer:
    """Shared lifecycle: start on a random port, record requests, serve scripted replies."""

    def __init__(self, *, api_key: str | None = None, default_reply: Reply | None = None):
        self.api_key = api_key
        self.default_reply = default_reply or Reply()
        self.script: deque[Reply] = deque()
        self.requests: list[RecordedRequest] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._closing: asyncio.Event | None = None
        self._arrived: asyncio.Condition | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def __aenter__(self):
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> None:
        self._closing = asyncio.Event()
        self._arrived = asyncio.Condition()
        app = web.Application()
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._closing:
            self._closing.set()
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for_requests(self, count: int, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` requests have arrived (no polling, no sleeps)."""
        assert self._arrived is not None
        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: len(self.requests) >= count), timeout)

    async def _record(self, request: web.Request) -> Any:
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        self.requests.append(RecordedRequest(request.path, dict(request.headers), body))
        assert self._arrived is not None
        async with self._arrived:
            self._arrived.notify_all()
        return body

    def _next(self) -> Reply:
        return self.script.popleft() if self.script else self.default_reply

    async def _stream(self, request: web.Request, reply: Reply, events: list[bytes], chunk_events: list[bytes],
                      tail: list[bytes]) -> web.StreamResponse:
        """Send ``events`` (preamble), then each chunk event honouring delay/drop/hang, then ``tail``."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        for event in events:
            await resp.write(event)
        if reply.raw is not None:
            chunk_events = reply.raw
        for index, event in enumerate(chunk_events):
            if reply.drop_after is not None and index >= reply.drop_after:
                assert request.transport is not None
                request.transport.close()  # the client sees a truncated chunked body
                return resp
            if reply.hang_after is not None and index >= reply.hang_after:
                assert self._closing is not None
                await self._closing.wait()
                return resp
            if reply.delay:
                await asyncio.sleep(reply.delay)
            await resp.write(event)
        if reply.hang_after is not None and reply.hang_after >= len(chunk_events):
            assert self._closing is not None
            await self._closing.wait()
            return resp
        for event in tail:
            await resp.write(event)
        await resp.write_eof()
        return resp


def _sse(data: Any, event: str | None = None) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data)
    return ((f"event: {event}\n" if event else "") + f"data: {payload}\n\n").encode()


class FakeOpenAIServer(_FakeServer):
    """OpenAI-compatible ``/v1/chat/completions`` (streaming and not) and ``/v1/embeddings``.

    ``api_key``: when set, requests without ``Authorization: Bearer <api_key>`` get 401.
    """

    def __init__(self, *, api_key: str | None = None, default_reply: Reply | None = None,
                 embedding_dim: int = 384):
        super().__init__(api_key=api_key, default_reply=default_reply)
        self.embedding_dim = embedding_dim
        self.embedding_script: deque[Reply] = deque()

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)

    def _error(self, reply: Reply, message: str = "scripted failure") -> web.Response:
        kinds = {401: "invalid_api_key", 429: "rate_limit_exceeded"}
        headers = {"Retry-After": reply.retry_after} if reply.retry_after is not None else {}
        body = {"error": {"message": message, "type": "server_error" if reply.status >= 500 else "invalid_request_error",
                          "param": None, "code": kinds.get(reply.status)}}
        return web.json_response(body, status=reply.status, headers=headers)

    def _authorised(self, request: web.Request) -> bool:
        return self.api_key is None or request.headers.get("Authorization") == f"Bearer {self.api_key}"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request)
        if not self._authorised(request):
            return self._error(Reply(status=401), "Incorrect API key provided")
        reply = self._next()
        if reply.status != 200:
            return self._error(reply)
        model = (body or {}).get("model", "fake-model")
        created = int(time.time())

        def chunk(delta: dict, finish: str | None = None) -> dict:
            return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        if not (body or {}).get("stream"):
            return web.json_response({
                "id": "chatcmpl-fake", "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "".join(reply.chunks)},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": reply.usage[0], "completion_tokens": reply.usage[1],
                          "total_tokens": sum(reply.usage)}})
        preamble = [_sse(chunk({"role": "assistant", "content": ""}))]
        chunk_events = [_sse(chunk({"content": text})) for text in reply.chunks]
        if reply.error_event:
            tail = [_sse({"error": {"message": reply.error_event, "type": reply.error_event}})]
        else:
            tail = [_sse(chunk({}, "stop"))]
            if ((body or {}).get("stream_options") or {}).get("include_usage"):
                tail.append(_sse({"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": created,
                                  "model": model, "choices": [],
                                  "usage": {"prompt_tokens": reply.usage[0], "completion_tokens": reply.usage[1],
                                            "total_tokens": sum(reply.usage)}}))
            tail.append(_sse("[DONE]"))
        return await self._stream(request, reply, preamble, chunk_events, tail)

    async def _embeddings(self, request: web.Request) -> web.Response:
        body = await self._record(request) or {}
        if not self._authorised(request):
            return self._error(Reply(status=401), "Incorrect API key provided")
        if self.embedding_script:
            reply = self.embedding_script.popleft()
            if reply.status != 200:
                return self._error(reply)
        inputs = body.get("input")
        if isinstance(inputs, str):
            inputs = [inputs]
        if not isinstance(inputs, list) or any(not isinstance(t, str) or t == "" for t in inputs):
            return web.json_response({"error": {"message": "'input' must be non-empty strings",
                                                "type": "invalid_request_error"}}, status=400)
        dim = int(body.get("dimensions") or self.embedding_dim)
        data = [{"object": "embedding", "index": i, "embedding": hash_embedding(t, dim)} for i, t in enumerate(inputs)]
        data.reverse()  # clients must order by "index", not by position
        return web.json_response({"object": "list", "data": data, "model": body.get("model", "fake-embedding"),
                                  "usage": {"prompt_tokens": sum(len(t.split()) for t in inputs),
                                            "total_tokens": sum(len(t.split()) for t in inputs)}})


class FakeAnthropicServer(_FakeServer):
    """Anthropic Messages API ``/v1/messages`` with ``stream: true``.

    Requires the ``anthropic-version`` header (400 without it) and, when ``api_key`` is set,
    a matching ``x-api-key`` (401 otherwise), like the real service.
    """

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)

    @staticmethod
    def _error(status: int, kind: str, message: str, retry_after: str | None = None) -> web.Response:
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        return web.json_response({"type": "error", "error": {"type": kind, "message": message}},
                                 status=status, headers=headers)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request) or {}
        if not request.headers.get("anthropic-version"):
            return self._error(400, "invalid_request_error", "anthropic-version header is required")
        if self.api_key is not None and request.headers.get("x-api-key") != self.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        reply = self._next()
        if reply.status != 200:
            kinds = {429: "rate_limit_error", 529: "overloaded_error", 500: "api_error"}
            return self._error(reply.status, kinds.get(reply.status, "api_error"), "scripted failure",
                               reply.retry_after)
        model = body.get("model", "fake-claude")
        preamble = [
            _sse({"type": "message_start", "message": {
                "id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": model,
                "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": reply.usage[0], "output_tokens": 1}}}, "message_start"),
            _sse({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                 "content_block_start"),
            _sse({"type": "ping"}, "ping"),
        ]
        chunk_events = [_sse({"type": "content_block_delta", "index": 0,
                              "delta": {"type": "text_delta", "text": text}}, "content_block_delta")
                        for text in reply.chunks]
        if reply.error_event:
            tail = [_sse({"type": "error", "error": {"type": reply.error_event, "message": "scripted error"}},
                         "error")]
        else:
            tail = [
                _sse({"type": "content_block_stop", "index": 0}, "content_block_stop"),
                _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                      "usage": {"output_tokens": reply.usage[1]}}, "message_delta"),
                _sse({"type": "message_stop"}, "message_stop"),
            ]
        return await self._stream(request, reply, preamble, chunk_events, tail)
