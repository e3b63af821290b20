"""Streaming chat LLM clients: OpenAI-compatible Chat Completions and Anthropic Messages.

One interface, ``stream_chat(messages, *, model, temperature, max_tokens)``, an async
iterator of text deltas, so the assistant can relay tokens to the visitor as they arrive.

Failure policy (why it is shaped like this): a request that fails *before the first token*
(429, 5xx, 529 overloaded, a refused or dropped connection, a timeout) is retried with
exponential backoff that honours Retry-After, because nothing has been shown yet. Once a
token has been yielded a failure is final (``stream_interrupted``): retrying would repeat
or contradict text the visitor already saw. Time limits apply to connecting, to the gap
between two reads (``read_timeout``), and to the whole answer, retries included
(``answer_timeout``, 120 s by default: long enough for any real answer, and a model that drips
keep-alives or deltas forever cannot hold a bot turn, and the conversation's next turns, for ever).
Once the answer has begun, text must keep coming: ``idle_timeout`` (20 s by default, the setting
PARLEY_LLM_IDLE_TIMEOUT through pyapp.assistant.provider) between two deltas, keep-alives or
empty events not counting, ends a stalled stream (``stream_interrupted``) long before the read
timeout would; the wait for the first token keeps ``read_timeout`` and ``answer_timeout``.

Errors are :class:`LLMError` with a stable ``code``: ``rate_limited``, ``overloaded``,
``upstream_error``, ``auth_failed``, ``bad_request``, ``not_found``, ``timeout``,
``connection_failed``, ``stream_interrupted``, ``bad_response``.

Use ``contextlib.aclosing(llm.stream_chat(...))`` when you may stop early, so the
connection is released at once.

Configuration for :func:`get_llm` (environment, or the same keys in ``settings.extra``):
``PARLEY_LLM`` (``openai`` | ``anthropic`` | ``none``; unset: ``none``), ``PARLEY_LLM_URL``,
``PARLEY_LLM_KEY``, ``PARLEY_LLM_MODEL``.
"""

from __future__ import annotations

import asyncio
import json
import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

import aiohttp

from pyapp.net.safe_fetch import FetchError
from pyapp.providers.http import ProviderError, RetryPolicy, SSEEvent, endpoint, error_from_response, iter_sse
from pyapp.providers.prompt import ExtractiveAnswer, Passage, build_prompt, estimate_tokens, extractive_answer

__all__ = [
    "LLM",
    "AnthropicLLM",
    "ExtractiveAnswer",
    "LLMError",
    "OpenAICompatibleLLM",
    "Passage",
    "RetryPolicy",
    "build_prompt",
    "estimate_tokens",
    "extractive_answer",
    "get_llm",
]

ANTHROPIC_VERSION = "2023-06-01"
Message = Mapping[str, str]


class LLMError(ProviderError):
    """A chat completion failed; see the module docstring for the codes."""


class _Done(Exception):
    """Internal: the stream reached its proper end."""


class LLM(ABC):
    """A streaming chat model behind an HTTP API.

    ``session``: an aiohttp session to use. Otherwise ``session_factory()`` (default
    ``aiohttp.ClientSession``) opens one per call, so an instance is safe to share and to use
    from any event loop. For a tenant-configured base URL pass
    ``session_factory=pyapp.net.guarded_session`` so no internal address can be reached;
    refusals surface as ``LLMError`` with the fetch code (``address_not_allowed``, …).
    """

    provider = "llm"
    path = "/"
    answer_timeout = 120.0  # seconds for a whole answer, from the first request to the end marker
    idle_timeout = 20.0  # seconds between two deltas once the answer has begun

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        model: str,
        *,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        session: aiohttp.ClientSession | None = None,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
    ):
        self.base_url = base_url
        self.url = endpoint(base_url, self.path)
        self.api_key = api_key
        self.model = model
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.retry = retry or RetryPolicy()
        self.session = session
        self.session_factory = session_factory or aiohttp.ClientSession

    @abstractmethod
    def _request(
        self, messages: Sequence[Message], *, model: str, temperature: float, max_tokens: int, want_usage: bool
    ) -> tuple[dict[str, str], dict[str, Any]]:
        """Headers and JSON body of the streaming request."""

    @abstractmethod
    def _deltas(self, event: SSEEvent, usage: dict[str, int] | None) -> list[str]:
        """Text deltas carried by one SSE event; raises _Done at the end, LLMError on an error event."""

    async def stream_chat(
        self,
        messages: Sequence[Message],
        *,
        model: str | None = None,
        temperature: float = 0.2,
        max_tokens: int = 512,
        usage: dict[str, int] | None = None,
    ) -> AsyncIterator[str]:
        """Yield the answer's text as it streams.

        ``messages``: ``{"role": "system"|"user"|"assistant", "content": str}``, as produced
        by :func:`build_prompt`. ``usage``: pass a dict to receive ``input_tokens`` and
        ``output_tokens`` when the provider reports them.
        """
        headers, body = self._request(
            messages,
            model=model or self.model,
            temperature=temperature,
            max_tokens=max_tokens,
            want_usage=usage is not None,
        )
        timeout = aiohttp.ClientTimeout(
            total=None, connect=self.connect_timeout, sock_connect=self.connect_timeout, sock_read=self.read_timeout
        )
        if self.session is not None:
            async for delta in self._stream(self.session, headers, body, timeout, usage):
                yield delta
            return
        async with self.session_factory() as session:
            async for delta in self._stream(session, headers, body, timeout, usage):
                yield delta

    async def _stream(
        self,
        session: aiohttp.ClientSession,
        headers: dict[str, str],
        body: dict[str, Any],
        timeout: aiohttp.ClientTimeout,
        usage: dict[str, int] | None,
    ) -> AsyncIterator[str]:
        attempt = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.answer_timeout
        while True:
            yielded = False
            idle_at = deadline  # when the stream counts as stalled: idle_timeout after the last delta
            try:
                async with asyncio.timeout_at(deadline):
                    resp = await session.post(
                        self.url, json=body, headers=headers, timeout=timeout, allow_redirects=False
                    )
                async with resp:
                    if resp.status != 200:
                        raise await error_from_response(resp, LLMError)
                    finished = False
                    events = aiter(iter_sse(resp))
                    while True:
                        async with asyncio.timeout_at(idle_at):  # only the wait for the next event
                            event = await anext(events, None)
                        if event is None:
                            break
                        try:
                            deltas = self._deltas(event, usage)
                        except _Done:
                            finished = True
                            break
                        for delta in deltas:
                            if delta:
                                yielded = True
                                yield delta
                                idle_at = min(deadline, loop.time() + self.idle_timeout)
                    if not finished:
                        raise LLMError(
                            "stream_interrupted" if yielded else "bad_response",
                            "the stream ended before its end marker",
                            retryable=not yielded,
                        )
                return
            except LLMError as exc:
                error = exc
            except FetchError as exc:  # a guarded session refused the destination
                error = LLMError(exc.code, exc.message)
            except TimeoutError:
                if loop.time() >= deadline:
                    error = LLMError("timeout", f"no complete answer within {self.answer_timeout:g}s")
                elif loop.time() >= idle_at:
                    error = LLMError("timeout", f"no text for {self.idle_timeout:g}s after the answer began")
                else:
                    error = LLMError("timeout", f"no data for {self.read_timeout:g}s", retryable=True)
            except aiohttp.ClientPayloadError as exc:
                error = LLMError("stream_interrupted", f"connection dropped mid-stream: {exc}", retryable=True)
            except (aiohttp.ClientError, OSError) as exc:
                error = LLMError("connection_failed", str(exc) or type(exc).__name__, retryable=True)
            except ValueError as exc:  # an over-long SSE line
                error = LLMError("bad_response", str(exc))
            if yielded:
                if error.code != "stream_interrupted":
                    error = LLMError("stream_interrupted", f"failed after streaming began: {error.message}")
                error.retryable = False
                raise error
            wait = self.retry.delay(attempt, error.retry_after) if error.retryable else None
            if wait is None or loop.time() + wait >= deadline:
                raise error
            attempt += 1
            await asyncio.sleep(wait)

    @staticmethod
    def _json(event: SSEEvent) -> Any:
        try:
            return json.loads(event.data)
        except ValueError:
            raise LLMError("bad_response", f"invalid JSON in stream: {event.data[:200]!r}") from None


class OpenAICompatibleLLM(LLM):
    """``POST /v1/chat/completions`` with ``stream: true`` (OpenAI, vLLM, Ollama, LiteLLM, …).

    Reads ``choices[0].delta.content`` from each ``data:`` chunk until ``data: [DONE]``.
    ``max_tokens_field``: ``max_completion_tokens`` for OpenAI models that require it.
    """

    provider = "openai"
    path = "/v1/chat/completions"

    def __init__(
        self, base_url: str, api_key: str | None, model: str, *, max_tokens_field: str = "max_tokens", **kwargs
    ):
        super().__init__(base_url, api_key, model, **kwargs)
        self.max_tokens_field = max_tokens_field

    def _request(self, messages, *, model, temperature, max_tokens, want_usage):
        headers = {"Accept": "text/event-stream"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body: dict[str, Any] = {
            "model": model,
            "stream": True,
            "temperature": temperature,
            self.max_tokens_field: max_tokens,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        }
        if want_usage:
            body["stream_options"] = {"include_usage": True}
        return headers, body

    def _deltas(self, event, usage):
        if event.data.strip() == "[DONE]":
            raise _Done
        chunk = self._json(event)
        if not isinstance(chunk, dict):
            raise LLMError("bad_response", "stream chunk is not an object")
        if "error" in chunk:
            err = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            raise LLMError("upstream_error", str(err.get("message") or err), retryable=True)
        if usage is not None and isinstance(chunk.get("usage"), dict):
            usage["input_tokens"] = int(chunk["usage"].get("prompt_tokens") or 0)
            usage["output_tokens"] = int(chunk["usage"].get("completion_tokens") or 0)
        out = []
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str):
                out.append(content)
        return out


_ANTHROPIC_ERRORS = {
    "overloaded_error": ("overloaded", True),
    "rate_limit_error": ("rate_limited", True),
    "api_error": ("upstream_error", True),
    "timeout_error": ("timeout", True),
    "authentication_error": ("auth_failed", False),
    "permission_error": ("auth_failed", False),
    "invalid_request_error": ("bad_request", False),
    "not_found_error": ("not_found", False),
    "request_too_large": ("too_large", False),
}


class AnthropicLLM(LLM):
    """Anthropic Messages API, ``POST /v1/messages`` with ``stream: true``.

    System messages become the top-level ``system`` field; the rest must alternate user /
    assistant and start with the user, so consecutive turns of one role are merged and
    leading assistant turns (greetings) dropped. Text comes from ``content_block_delta``
    events with ``text_delta``; ``message_stop`` ends the stream; ``error`` events raise.
    """

    provider = "anthropic"
    path = "/v1/messages"

    def _request(self, messages, *, model, temperature, max_tokens, want_usage):
        headers = {"anthropic-version": ANTHROPIC_VERSION, "Accept": "text/event-stream"}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        system_parts: list[str] = []
        turns: list[dict[str, str]] = []
        for message in messages:
            role, content = message["role"], message["content"]
            if role == "system":
                system_parts.append(content)
                continue
            if role not in ("user", "assistant") or not content:
                continue
            if not turns and role == "assistant":
                continue
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"] += "\n\n" + content
            else:
                turns.append({"role": role, "content": content})
        body: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens,
            "stream": True,
            "temperature": temperature,
            "messages": turns,
        }
        if system_parts:
            body["system"] = "\n\n".join(system_parts)
        return headers, body

    def _deltas(self, event, usage):
        payload = self._json(event)
        kind = payload.get("type") if isinstance(payload, dict) else None
        kind = kind or event.event
        if kind == "content_block_delta":
            delta = payload.get("delta") or {}
            return [delta["text"]] if delta.get("type") == "text_delta" and isinstance(delta.get("text"), str) else []
        if kind == "message_start" and usage is not None:
            usage["input_tokens"] = int(((payload.get("message") or {}).get("usage") or {}).get("input_tokens") or 0)
        elif kind == "message_delta" and usage is not None:
            usage["output_tokens"] = int((payload.get("usage") or {}).get("output_tokens") or 0)
        elif kind == "message_stop":
            raise _Done
        elif kind == "error":
            err = payload.get("error") or {}
            code, retryable = _ANTHROPIC_ERRORS.get(err.get("type"), ("upstream_error", True))
            raise LLMError(code, str(err.get("message") or err.get("type") or "stream error"), retryable=retryable)
        return []


_DEFAULT_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com"}
_KEYS = ("PARLEY_LLM", "PARLEY_LLM_URL", "PARLEY_LLM_KEY", "PARLEY_LLM_MODEL")


def get_llm(settings: Any = None, *, env: Mapping[str, str] | None = None) -> LLM | None:
    """The configured LLM, or None (the assistant then answers with ``extractive_answer``)."""
    source = os.environ if env is None else env
    config = {key: source[key] for key in _KEYS if source.get(key)}
    extra = getattr(settings, "extra", None) or {}
    config.update({key: str(extra[key]) for key in _KEYS if extra.get(key)})
    kind = config.get("PARLEY_LLM", "none").strip().lower()
    if kind == "none":
        return None
    if kind not in _DEFAULT_URLS:
        raise ValueError(f"PARLEY_LLM must be openai, anthropic or none, not {kind!r}")
    model = config.get("PARLEY_LLM_MODEL")
    if not model:
        raise ValueError("PARLEY_LLM_MODEL is required when PARLEY_LLM is set")
    cls = OpenAICompatibleLLM if kind == "openai" else AnthropicLLM
    return cls(config.get("PARLEY_LLM_URL") or _DEFAULT_URLS[kind], config.get("PARLEY_LLM_KEY"), model)
