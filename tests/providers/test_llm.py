"""Streaming LLM clients against the local fake OpenAI and Anthropic servers."""
from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from pyapp.providers.http import SSE_EVENT_MAX_CHARS, RetryPolicy, endpoint, parse_retry_after
from pyapp.providers.llm import AnthropicLLM, LLMError, OpenAICompatibleLLM, get_llm
from support.fakes.llm_servers import FakeAnthropicServer, FakeOpenAIServer, Reply

FAST = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.05, max_wait=5)
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]


async def collect(llm, messages=MESSAGES, **kwargs) -> tuple[list[str], LLMError | None]:
    deltas: list[str] = []
    try:
        async for delta in llm.stream_chat(messages, **kwargs):
            deltas.append(delta)
    except LLMError as exc:
        return deltas, exc
    return deltas, None


def make(kind, server, **kwargs):
    kwargs.setdefault("retry", FAST)
    cls = OpenAICompatibleLLM if kind == "openai" else AnthropicLLM
    return cls(server.base_url, "test-key", "fake-model", **kwargs)


@pytest.fixture(params=["openai", "anthropic"])
def kind(request):
    return request.param


def server_for(kind):
    return FakeOpenAIServer(api_key="test-key") if kind == "openai" else FakeAnthropicServer(api_key="test-key")


@pytest.mark.asyncio
async def test_streams_text_deltas(kind):
    async with server_for(kind) as srv:
        srv.script.append(Reply.text("Refunds take five business days [1]."))
        usage: dict = {}
        deltas, error = await collect(make(kind, srv), temperature=0.1, max_tokens=99, usage=usage)
        assert error is None
        assert len(deltas) > 3 and "".join(deltas) == "Refunds take five business days [1]."
        assert usage == {"input_tokens": 12, "output_tokens": 5}
        [request] = srv.requests
        assert request.json["stream"] is True and request.json["max_tokens"] == 99
        assert request.json["temperature"] == 0.1 and request.json["model"] == "fake-model"


@pytest.mark.asyncio
async def test_deltas_arrive_before_the_stream_ends(kind):
    async with server_for(kind) as srv:
        srv.script.append(Reply(chunks=["one", " two", " three"], hang_after=2))
        stream = make(kind, srv).stream_chat(MESSAGES)
        async with contextlib.aclosing(stream):
            assert [await anext(stream), await anext(stream)] == ["one", " two"]  # server is still hanging


@pytest.mark.asyncio
async def test_openai_request_shape():
    async with FakeOpenAIServer(api_key="test-key") as srv:
        await collect(make("openai", srv))
        request = srv.requests[0]
        assert request.path == "/v1/chat/completions"
        assert request.headers["Authorization"] == "Bearer test-key"
        assert request.json["messages"] == MESSAGES
        assert "stream_options" not in request.json


@pytest.mark.asyncio
async def test_anthropic_request_shape():
    async with FakeAnthropicServer(api_key="test-key") as srv:
        messages = [{"role": "system", "content": "Rules."}, {"role": "assistant", "content": "Hello! How can I help?"},
                    {"role": "user", "content": "Refunds?"}, {"role": "user", "content": "For Pro."},
                    {"role": "assistant", "content": "30 days [1]."}, {"role": "user", "content": "Thanks"},
                    {"role": "system", "content": "More rules."}]
        deltas, error = await collect(make("anthropic", srv), messages)
        assert error is None and "".join(deltas) == "Hello from the fake model."
        request = srv.requests[0]
        assert request.path == "/v1/messages"
        assert request.headers["x-api-key"] == "test-key"
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert request.json["system"] == "Rules.\n\nMore rules."
        assert request.json["messages"] == [
            {"role": "user", "content": "Refunds?\n\nFor Pro."}, {"role": "assistant", "content": "30 days [1]."},
            {"role": "user", "content": "Thanks"}]


@pytest.mark.asyncio
async def test_429_with_retry_after_then_success(kind):
    async with server_for(kind) as srv:
        srv.script.extend([Reply.rate_limited(retry_after="0.3"), Reply.text("ok then")])
        started = time.monotonic()
        deltas, error = await collect(make(kind, srv))
        assert error is None and "".join(deltas) == "ok then"
        assert time.monotonic() - started >= 0.3  # Retry-After honoured
        assert len(srv.requests) == 2


@pytest.mark.asyncio
async def test_5xx_retried_then_given_up(kind):
    async with server_for(kind) as srv:
        srv.script.extend([Reply.server_error(500), Reply.server_error(503), Reply.text("third time")])
        deltas, error = await collect(make(kind, srv))
        assert error is None and "".join(deltas) == "third time" and len(srv.requests) == 3
        srv.script.extend([Reply.server_error(500)] * 3)
        deltas, error = await collect(make(kind, srv))
        assert deltas == [] and error.code == "upstream_error" and error.status == 500 and error.retryable
        assert len(srv.requests) == 6


@pytest.mark.asyncio
async def test_retry_after_beyond_the_wait_limit_fails_at_once(kind):
    async with server_for(kind) as srv:
        srv.script.append(Reply.rate_limited(retry_after="3600"))
        _deltas, error = await collect(make(kind, srv))
        assert error.code == "rate_limited" and error.retry_after == 3600 and len(srv.requests) == 1


@pytest.mark.asyncio
async def test_auth_failure_is_not_retried(kind):
    async with server_for(kind) as srv:
        cls = OpenAICompatibleLLM if kind == "openai" else AnthropicLLM
        _deltas, error = await collect(cls(srv.base_url, "wrong", "m", retry=FAST))
        assert error.code == "auth_failed" and not error.retryable and len(srv.requests) == 1


@pytest.mark.asyncio
async def test_drop_mid_stream_is_final_after_tokens(kind):
    async with server_for(kind) as srv:
        srv.script.extend([Reply.dropped(after=2), Reply.text("never used")])
        deltas, error = await collect(make(kind, srv))
        assert deltas == ["Partial", " answer"]
        assert error.code == "stream_interrupted" and not error.retryable
        assert len(srv.requests) == 1  # no retry once text was shown


@pytest.mark.asyncio
async def test_drop_before_first_token_is_retried(kind):
    async with server_for(kind) as srv:
        srv.script.extend([Reply.dropped(after=0), Reply.text("second try")])
        deltas, error = await collect(make(kind, srv))
        assert error is None and "".join(deltas) == "second try" and len(srv.requests) == 2


@pytest.mark.asyncio
async def test_read_timeout_between_chunks(kind):
    async with server_for(kind) as srv:
        srv.script.extend([Reply(chunks=["a", "b"], hang_after=0), Reply.text("after timeout")])
        deltas, error = await collect(make(kind, srv, read_timeout=0.3))
        assert error is None and "".join(deltas) == "after timeout" and len(srv.requests) == 2
        srv.script.append(Reply(chunks=["first", " second"], hang_after=1))
        deltas, error = await collect(make(kind, srv, read_timeout=0.3))
        assert deltas == ["first"] and error.code == "stream_interrupted"


@pytest.mark.asyncio
async def test_in_stream_error_events(kind):
    async with server_for(kind) as srv:
        srv.script.extend([Reply(chunks=[], error_event="overloaded_error"), Reply.text("recovered")])
        deltas, error = await collect(make(kind, srv))
        assert error is None and "".join(deltas) == "recovered" and len(srv.requests) == 2
        srv.script.append(Reply(chunks=["half"], error_event="overloaded_error"))
        deltas, error = await collect(make(kind, srv))
        assert deltas == ["half"] and error.code == "stream_interrupted"


@pytest.mark.asyncio
async def test_connection_refused(kind):
    async with server_for(kind) as srv:
        url = srv.base_url
    llm = (OpenAICompatibleLLM if kind == "openai" else AnthropicLLM)(
        url, "k", "m", retry=RetryPolicy(max_retries=1, base_delay=0.01))
    _deltas, error = await collect(llm)
    assert error.code == "connection_failed"


def test_endpoint_and_retry_after_parsing():
    assert endpoint("https://api.openai.com/v1/", "/v1/chat/completions") == "https://api.openai.com/v1/chat/completions"
    assert endpoint("http://127.0.0.1:9/", "/v1/messages") == "http://127.0.0.1:9/v1/messages"
    assert parse_retry_after("7") == 7 and parse_retry_after("0.5") == 0.5 and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    policy = RetryPolicy(max_retries=3, base_delay=1, max_delay=4, max_wait=10)
    assert 0.5 <= policy.delay(0, None) <= 1 and policy.delay(1, 6) == 6 and policy.delay(3, None) is None


def test_get_llm_from_configuration():
    assert get_llm(env={}) is None
    llm = get_llm(env={"PARLEY_LLM": "anthropic", "PARLEY_LLM_KEY": "k", "PARLEY_LLM_MODEL": "claude-x"})
    assert isinstance(llm, AnthropicLLM) and llm.url == "https://api.anthropic.com/v1/messages"
    llm = get_llm(env={"PARLEY_LLM": "openai", "PARLEY_LLM_URL": "http://127.0.0.1:1/v1", "PARLEY_LLM_MODEL": "m"})
    assert isinstance(llm, OpenAICompatibleLLM) and llm.url == "http://127.0.0.1:1/v1/chat/completions"
    with pytest.raises(ValueError):
        get_llm(env={"PARLEY_LLM": "openai"})
    with pytest.raises(ValueError):
        get_llm(env={"PARLEY_LLM": "gpt", "PARLEY_LLM_MODEL": "m"})


# A model API that never finishes cannot hold an answer: the whole answer, retries included, has a time
# limit (answer_timeout), and one server-sent event a size limit. Before, a model dripping deltas (or
# stalling, retried, stalling again) kept its bot turn, and the conversation's next turns queued
# behind it, as long as it liked; an event that never ended grew in memory until the stream did.


@pytest.mark.asyncio
async def test_a_model_that_never_finishes_is_cut_at_the_answer_timeout(kind):
    async with server_for(kind) as srv:
        srv.script.append(Reply(chunks=["tick "] * 100_000, delay=0.02))  # 2,000 s of deltas
        llm = make(kind, srv)
        llm.answer_timeout = 0.5
        deltas, error = await asyncio.wait_for(collect(llm), 30)
        # (A loaded machine may reach the limit before the first delta: then it is a plain timeout.)
        assert error.code == ("stream_interrupted" if deltas else "timeout") and not error.retryable
        assert "0.5s" in error.message and len(srv.requests) == 1


@pytest.mark.asyncio
async def test_a_stall_before_the_first_token_ends_at_the_answer_timeout(kind):
    async with server_for(kind) as srv:
        srv.default_reply = Reply(hang_after=0)  # every attempt: headers, then nothing
        llm = make(kind, srv, read_timeout=60)
        llm.answer_timeout = 0.5
        deltas, error = await asyncio.wait_for(collect(llm), 30)
        assert deltas == [] and error.code == "timeout" and not error.retryable
        assert "0.5s" in error.message and len(srv.requests) == 1


@pytest.mark.asyncio
async def test_an_event_that_never_ends_is_refused_at_its_size_limit(kind):
    async with server_for(kind) as srv:
        line = b"data: " + b"x" * 65_536 + b"\n"  # data lines, never the blank line that ends the event
        srv.script.append(Reply(raw=[line] * (SSE_EVENT_MAX_CHARS // 65_536 * 4)))
        deltas, error = await asyncio.wait_for(collect(make(kind, srv)), 30)
        assert deltas == [] and error.code == "bad_response"
        assert f"over {SSE_EVENT_MAX_CHARS} characters" in error.message


# A model that stalls once its answer has begun ends at idle_timeout, not at the 60 s read timeout (the
# faults bench's llm_stall kept a visitor waiting that long for the "unavailable" notice); events that
# carry no text (keep-alives, empty deltas) do not count as progress. The first token keeps its limits.


@pytest.mark.asyncio
async def test_a_stream_stalled_after_its_first_delta_ends_at_the_idle_timeout(kind):
    async with server_for(kind) as srv:
        srv.script.append(Reply(chunks=["We are", " open"], hang_after=1))
        llm = make(kind, srv, read_timeout=60)
        llm.idle_timeout = 0.5
        started = time.monotonic()
        deltas, error = await asyncio.wait_for(collect(llm), 30)
        assert deltas == ["We are"] and error.code == "stream_interrupted" and not error.retryable
        assert "no text for 0.5s" in error.message and time.monotonic() - started < 30
        assert len(srv.requests) == 1


@pytest.mark.asyncio
async def test_empty_deltas_do_not_keep_a_stalled_answer_alive(kind):
    async with server_for(kind) as srv:
        srv.script.append(Reply(chunks=["We are"] + [""] * 100_000, delay=0.02))  # 2,000 s of empty deltas
        llm = make(kind, srv, read_timeout=60)
        llm.idle_timeout = 0.5
        deltas, error = await asyncio.wait_for(collect(llm), 30)
        assert deltas == ["We are"] and error.code == "stream_interrupted" and "no text for 0.5s" in error.message


@pytest.mark.asyncio
async def test_the_idle_timeout_does_not_limit_the_first_token(kind):
    async with server_for(kind) as srv:
        srv.script.append(Reply(chunks=["Late but whole."], delay=1.0))  # the first (only) delta after 1 s
        llm = make(kind, srv, read_timeout=60)
        llm.idle_timeout = 0.5
        deltas, error = await asyncio.wait_for(collect(llm), 30)
        assert error is None and "".join(deltas) == "Late but whole."
