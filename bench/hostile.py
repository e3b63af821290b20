"""Hostile clients from outside: every input surface of a running Parley server, attacked from
processes of their own, while a well-behaved client measures its latency beside them.

    python bench/hostile.py [--url http://127.0.0.1:8080] [--examples 200] [--phases ...]
                            [--server-pid PID] [--probe-rate 20] [--quick]

Without --url it starts `parley serve` (this checkout, the embedded PostgreSQL of `.parley/`,
migrated first) on a free port, with Stripe "enabled" against a closed local port so the webhook
verifies signatures, and stops it at the end.

Phases (all by default, or a comma list in --phases):
- http: raw request heads and bodies over TCP (bad request lines, versions, long lines, too many
  headers, duplicate Host/Content-Length, CL+TE, bad chunks, a chunked body that never ends,
  HTTP/1.0 and 0.9, pipelining, Expect: 100-continue, Host/Origin abuse, invalid UTF-8 and NUL
  in paths and queries, 10 KB path parameters, duplicate query keys);
- bodies: every JSON route of /api/openapi.json with non-JSON, wrong content types, invalid UTF-8,
  a 2 MB body, 10,000-deep nesting, NUL and lone surrogates, a JSON array or string for an object;
- schema: schemathesis over /api/openapi.json, --examples per operation and mode (valid and
  invalid), as the owner, an agent, a read-only API key, nobody and a garbage token, one process
  each (two at a time);
- sockets: the visitor and agent WebSockets (before/without hello, forged, expired and cross-kind
  tokens, malformed, binary, oversized and fragmented frames, bad opcodes, unmasked frames,
  thousands of frames a second from one visitor, a reconnect storm), and the SSE stream (bad
  Last-Event-ID, many streams);
- console: the HTML forms (no/wrong CSRF, multipart without boundary or with thousands of parts)
  and knowledge uploads (0 bytes, wrong magic, a zip bomb named .pdf, a 20 MB file, HTML with
  100,000 nested tags, a PDF with 5,000 pages);
- webhooks: Stripe (no/bad/old signature, replay, huge body, unknown type) and the Telegram
  webhook (unknown channel, bad secret token, huge body).

A finding is an answer >= 500, a 4xx that is not {"error": {"code", "message"}}, no answer within
--slow seconds where one was due, or the server process gone. Printed: per phase the requests,
statuses and findings; the well-behaved client's p50/p99/max (a signed-in member listing
conversations, and a widget session, --probe-rate a second, its own process); the server's RSS
before and after. Last line: `requests=N findings=F probe_p50_ms=X probe_p99_ms=Y probe_errors=E
rss_mb=A->B`. Timings depend on what else the machine runs: say so with any figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import hashlib
import hmac
import io
import json
import multiprocessing
import os
import re
import socket
import statistics
import struct
import subprocess
import sys
import time
import uuid
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from bench.soak import rss_mb as _rss  # noqa: E402

STRIPE_SECRET = "whsec_" + base64.b64encode(b"hostile-bench-stripe-secret").decode()
PASSWORD = "correct horse battery staple"


# ------------------------------------------------------------------------------------ findings


@dataclass
class Tally:
    """Requests, statuses and findings of one phase."""

    name: str
    statuses: Counter = field(default_factory=Counter)
    findings: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def answer(self, what: str, status: int, body: bytes | str, content_type: str = "", expect=None) -> None:
        """Record an HTTP answer; a finding when >= 500, or a 4xx not in the error shape, or not `expect`."""
        self.statuses[status] += 1
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        if status >= 500:
            self.findings.append(f"{what}: {status} {text[:160]!r}")
        elif status >= 400 and not _error_shape(text):
            self.findings.append(f"{what}: {status} not the error shape: {text[:160]!r}")
        elif expect is not None and status not in expect:
            self.findings.append(f"{what}: {status} (expected {sorted(expect)}) {text[:160]!r}")

    def finding(self, text: str) -> None:
        self.findings.append(text)

    def report(self) -> str:
        total = sum(self.statuses.values())
        spread = " ".join(f"{k}:{v}" for k, v in sorted(self.statuses.items(), key=lambda kv: str(kv[0])))
        lines = [f"[{self.name}] {total} answers in {time.monotonic() - self.started:.1f} s ({spread}); "
                 f"{len(self.findings)} findings"]
        lines += [f"  ! {f}" for f in self.findings[:40]]
        return "\n".join(lines)


def _error_shape(text: str) -> bool:
    try:
        err = json.loads(text)["error"]
        return isinstance(err["code"], str) and isinstance(err["message"], str)
    except Exception:
        return False


# ------------------------------------------------------------------------------------ raw HTTP


def raw_exchange(host: str, port: int, data: bytes, *, timeout: float = 10.0, then=None) -> tuple[float, bytes]:
    """Send bytes, read until the server closes or `timeout`; `then(sock)` may keep sending."""
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        if then is not None:
            then(sock)
        out = b""
        try:
            while chunk := sock.recv(65536):
                out += chunk
                if _complete(out):
                    break
        except (TimeoutError, ConnectionResetError):
            pass
    return time.monotonic() - started, out


def _complete(out: bytes) -> bool:
    """One full response read (by Content-Length), not counting 1xx interim answers."""
    while True:
        head, sep, rest = out.partition(b"\r\n\r\n")
        if not sep:
            return False
        if head.startswith(b"HTTP/1.1 1"):
            out = rest
            continue
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                return len(rest) >= int(value.strip() or 0)
        return False


def parse_response(out: bytes) -> tuple[int, bytes]:
    while out.startswith(b"HTTP/1.1 1"):  # 100 Continue
        out = out.partition(b"\r\n\r\n")[2]
    head, _, body = out.partition(b"\r\n\r\n")
    try:
        return int(head.split(b" ", 2)[1]), body
    except (IndexError, ValueError):
        return 0, out


def http_cases(token: str, chatbot_id: str) -> dict[str, tuple[bytes, set[int] | None]]:
    """name -> (bytes, the statuses that are right; None: any 2xx-4xx in the shape)."""
    h = b"Host: 127.0.0.1\r\n"
    close = b"Connection: close\r\n"
    auth = f"Authorization: Bearer {token}\r\n".encode()
    login = b"POST /api/auth/login HTTP/1.1\r\n" + h + close + b"Content-Type: application/json\r\n"
    bad = {400}
    return {
        "HTTP/1.0": (b"GET /healthz HTTP/1.0\r\n\r\n", {200}),
        "HTTP/0.9 style": (b"GET /healthz\r\n\r\n", None),
        "unknown method": (b"FOO /api/me HTTP/1.1\r\n" + h + close + b"\r\n", bad),
        "HTTP/9.9": (b"GET /healthz HTTP/9.9\r\n" + h + b"\r\n", bad),
        "binary garbage": (bytes(range(256)) + b"\r\n\r\n", bad),
        "TLS hello": (bytes.fromhex("16030100a5010000a10303") + os.urandom(64), bad),
        "HTTP/2 preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", bad),
        "10 KB path parameter": (b"GET /api/conversations/" + b"a" * 10240 + b" HTTP/1.1\r\n" + h + close + auth
                                 + b"\r\n", bad),
        "non-UUID path parameter": (b"GET /api/conversations/not-a-uuid HTTP/1.1\r\n" + h + close + auth + b"\r\n",
                                    {404, 422}),
        "int64+ path parameter": (b"GET /api/feedback/99999999999999999999999/triage HTTP/1.1\r\n" + h + close + auth
                                  + b"\r\n", {404, 405, 422}),
        "100 KB header": (b"GET /healthz HTTP/1.1\r\n" + h + close + b"X-A: " + b"a" * 102400 + b"\r\n\r\n", bad),
        "5,000 headers": (b"GET /healthz HTTP/1.1\r\n" + h + close + b"".join(b"X-%d: a\r\n" % i for i in range(5000))
                          + b"\r\n", bad),
        "100 KB query": (b"GET /api/conversations?" + b"q=1&" * 25000 + b" HTTP/1.1\r\n" + h + close + auth + b"\r\n",
                         bad),
        "duplicate query keys": (b"GET /api/conversations?status=open&status=closed&limit=1&limit=x HTTP/1.1\r\n" + h
                                 + close + auth + b"\r\n", {200, 422}),
        "query with %ff%00": (b"GET /api/conversations?status=%ff%fe&q=%00&limit=%00 HTTP/1.1\r\n" + h + close + auth
                              + b"\r\n", {200, 422}),
        "path with %ff": (b"GET /api/conversations/%ff%fe HTTP/1.1\r\n" + h + close + auth + b"\r\n", {404, 422}),
        "path with %00": (b"GET /api/chatbots/%00 HTTP/1.1\r\n" + h + close + auth + b"\r\n", {404, 422}),
        "raw byte 0xff in path": (b"GET /api/conversations/\xff HTTP/1.1\r\n" + h + close + b"\r\n", bad),
        "no Host on 1.1": (b"GET /healthz HTTP/1.1\r\n" + close + b"\r\n", bad),
        "two Host headers": (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n" + close + b"\r\n", bad),
        "hostile Host": (b"GET /api/me HTTP/1.1\r\nHost: evil.example:99999\r\n" + close + auth + b"\r\n", {200, 404}),
        "Host with junk": (b"GET /healthz HTTP/1.1\r\nHost: a/../b@c:x\r\n" + close + b"\r\n", {200, 400, 404}),
        "absolute URI": (b"GET http://evil.example/healthz HTTP/1.1\r\n" + h + close + b"\r\n", {200}),
        "CONNECT": (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n" + close + b"\r\n", {400, 404, 405}),
        "OPTIONS *": (b"OPTIONS * HTTP/1.1\r\n" + h + close + b"\r\n", {400, 404}),
        "TRACE": (b"TRACE /api/me HTTP/1.1\r\n" + h + close + auth + b"\r\n", {404, 405}),
        "traversal": (b"GET /console/static/../../../../etc/passwd HTTP/1.1\r\n" + h + close + b"\r\n", {303, 404}),
        "encoded traversal": (b"GET /console/static/%2e%2e%2f%2e%2e%2fpyproject.toml HTTP/1.1\r\n" + h + close
                              + b"\r\n", {303, 403, 404}),
        "CR in header": (b"GET /healthz HTTP/1.1\r\n" + h + b"X-A: a\rb\r\n" + close + b"\r\n", bad),
        "folded header": (b"GET /healthz HTTP/1.1\r\n" + h + b"X-A: a\r\n b\r\n" + close + b"\r\n", bad),
        "bad byte in Authorization": (b"GET /api/me HTTP/1.1\r\n" + h + close + b"Authorization: Bearer "
                                      + token.encode() + b"\x01\r\n\r\n", bad),
        "Basic auth": (b"GET /api/me HTTP/1.1\r\n" + h + close + b"Authorization: Basic Zm9vOmJhcg==\r\n\r\n", {401}),
        "8 KB bearer": (b"GET /api/me HTTP/1.1\r\n" + h + close + b"Authorization: Bearer " + b"a" * 8000 + b"\r\n\r\n",
                        {400, 401}),
        "cookie junk": (b"GET /console/ HTTP/1.1\r\n" + h + close + b"Cookie: \xfe=\xff; a; ;;=; parley_session="
                        + b"x" * 4000 + b"\r\n\r\n", {303, 400}),
        "request id junk": (b"GET /healthz HTTP/1.1\r\n" + h + close + b"X-Request-Id: ../../\xc3\x28\r\n\r\n", {200}),
        "CL and TE": (login + b"Content-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", bad),
        "two Content-Lengths": (login + b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}", bad),
        "negative Content-Length": (login + b"Content-Length: -1\r\n\r\n{}", bad),
        "bad chunk size": (login + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", bad),
        "chunk size overflow": (login + b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{}\r\n0\r\n\r\n", bad),
        "TE gzip, chunked": (login + b"Transfer-Encoding: gzip, chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", {400, 422, 501}),
        "Content-Encoding gzip body": (login + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n"
                                       % len(gzip.compress(b"{}")) + gzip.compress(b"{}"), {400, 415, 422}),
        "gzip bomb body": (login + b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(_gzip_bomb())
                           + _gzip_bomb(), {400, 413, 415, 422}),
        "Expect: 100-continue": (login + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}", {422}),
        "Expect: 100-continue, 2 GB": (login + b"Expect: 100-continue\r\nContent-Length: 2000000000\r\n\r\n", {413}),
        "unknown Expect": (login + b"Expect: 999-nope\r\nContent-Length: 2\r\n\r\n{}", {417}),
        "Content-Length 2 GB, 2 bytes sent": (login + b"Content-Length: 2000000000\r\n\r\n{}", {413}),
        "2 MB JSON body": (login + b"Content-Length: 2097152\r\n\r\n" + b"[" * 2097152, {413}),
        "OPTIONS preflight from evil": (b"OPTIONS /api/widget/sessions HTTP/1.1\r\n" + h + close
                                        + b"Origin: https://evil.example\r\nAccess-Control-Request-Method: POST\r\n\r\n",
                                        {200, 204, 403}),
        "Origin null on widget": (b"POST /api/widget/sessions HTTP/1.1\r\n" + h + close
                                  + b"Origin: null\r\nContent-Type: application/json\r\nContent-Length: 23\r\n\r\n"
                                  + b'{"chatbot_key":"pk_no"}', {403, 404, 422}),
        "chatbot UUID in wrong route": (f"DELETE /api/leads/{chatbot_id} HTTP/1.1\r\n".encode() + h + close + auth
                                        + b"\r\n", {403, 404}),
    }


def _gzip_bomb() -> bytes:
    if not hasattr(_gzip_bomb, "cached"):
        _gzip_bomb.cached = gzip.compress(b"[" + b" " * (50 * 1024 * 1024) + b"]")  # type: ignore[attr-defined]
    return _gzip_bomb.cached  # type: ignore[attr-defined]


def phase_http(base: str, creds: dict, slow: float) -> Tally:
    tally = Tally("http")
    host, port = _hostport(base)
    for name, (data, expect) in http_cases(creds["owner"], creds["chatbot_id"]).items():
        try:
            elapsed, out = raw_exchange(host, port, data, timeout=slow)
        except OSError as exc:
            tally.finding(f"{name}: {type(exc).__name__} {exc}")
            continue
        status, body = parse_response(out)
        if not out:
            tally.finding(f"{name}: no answer in {elapsed:.1f} s")
            continue
        tally.answer(name, status, body, expect=expect)
    # Pipelining: 100 requests in one write, all answered in order.
    pipelined = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 99 + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    elapsed, out = _read_all(host, port, pipelined, slow)
    answered = out.count(b"HTTP/1.1 200 OK")
    tally.statuses[200] += answered
    if answered != 100:
        tally.finding(f"pipelining: {answered} of 100 answered in {elapsed:.1f} s")
    # A chunked body that never ends, and one that stops after its head: cut off by the guard.
    for name, data in (("chunked body that never ends", b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\n"
                        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n[\r\n"),
                       ("request head that never ends", b"GET /healthz HTTP/1.1\r\nHost: x\r\n")):
        elapsed, out = _read_all(host, port, data, 60)
        status, body = parse_response(out)
        if elapsed >= 59:
            tally.finding(f"{name}: connection still open after {elapsed:.0f} s")
        else:
            tally.statuses[status or "closed"] += 1
            print(f"  {name}: closed by the server after {elapsed:.1f} s ({status or 'no answer'})")
    return tally


def _read_all(host: str, port: int, data: bytes, timeout: float) -> tuple[float, bytes]:
    started = time.monotonic()
    out = b""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                out += chunk
        except (TimeoutError, ConnectionResetError):
            pass
    return time.monotonic() - started, out


def _hostport(base: str) -> tuple[str, int]:
    parts = urlsplit(base)
    return parts.hostname or "127.0.0.1", parts.port or 80


# ------------------------------------------------------------------------------------ bodies


async def phase_bodies(base: str, creds: dict, slow: float) -> Tally:
    tally = Tally("bodies")
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=slow)) as http:
        async with http.get(base + "/api/openapi.json") as resp:
            doc = await resp.json()
        nested = b"[" * 10000 + b"]" * 10000
        bodies: dict[str, tuple[bytes, str]] = {
            "not JSON": (b"hello", "application/json"),
            "form body": (b"a=1&b=2", "application/x-www-form-urlencoded"),
            "JSON as text/plain": (b"{}", "text/plain"),
            "no content type": (b"{}", ""),
            "XML": (b"<?xml version='1.0'?><a/>", "application/xml"),
            "invalid UTF-8": (b'{"name": "\xff\xfe\xc3\x28"}', "application/json"),
            "UTF-16 BOM": ('{"name": "x"}'.encode("utf-16"), "application/json; charset=utf-16"),
            "NUL in a value": (b'{"name": "a\\u0000b", "email": "a\\u0000@x.y"}', "application/json"),
            "lone surrogate": (b'{"name": "\\ud800"}', "application/json"),
            "NaN": (b'{"limit": NaN}', "application/json"),
            "10,000 deep": (nested, "application/json"),
            "array for object": (b"[1, 2, 3]", "application/json"),
            "string for object": (b'"x"', "application/json"),
            "null": (b"null", "application/json"),
            "huge integer": (b'{"x": ' + b"9" * 5000 + b"}", "application/json"),
            "1 MB string": (b'{"name": "' + b"a" * 1_000_000 + b'"}', "application/json"),
            "2 MB body": (b'{"name": "' + b"a" * 2_100_000 + b'"}', "application/json"),
            "100,000 keys": (json.dumps({f"k{i}": i for i in range(100_000)}).encode()[:1_000_000], "application/json"),
            "multipart no boundary": (b"--x\r\n\r\n", "multipart/form-data"),
            "duplicate keys": (b'{"name": "a", "name": {"x": 1}}', "application/json"),
        }
        auth = {"Authorization": f"Bearer {creds['owner']}"}
        for path, ops in doc["paths"].items():
            for method, _op in ops.items():
                if method not in ("post", "put", "patch") or path in SKIP_PATHS:
                    continue
                url = base + _fill(path, creds)
                for name, (data, ctype) in bodies.items():
                    headers = dict(auth, **({"Content-Type": ctype} if ctype else {}))
                    what = f"{method.upper()} {path} {name}"
                    try:
                        async with http.request(method, url, data=data, headers=headers) as resp:
                            tally.answer(what, resp.status, await resp.read())
                    except (TimeoutError, aiohttp.ClientError) as exc:
                        if name == "2 MB body" and isinstance(exc, aiohttp.ClientOSError):
                            tally.statuses["reset"] += 1  # refused before it was all sent: fine
                        else:
                            tally.finding(f"{what}: {type(exc).__name__} {exc}")
    return tally


# Routes whose success would end the session or the workspace the later phases need.
SKIP_PATHS = {"/api/tenant", "/api/auth/logout", "/api/me/delete", "/api/me/password", "/api/auth/switch"}


def _fill(path: str, creds: dict) -> str:
    known = {"chatbot_id": creds["chatbot_id"], "conversation_id": creds.get("conversation_id") or str(uuid.uuid4())}
    out = path
    while "{" in out:
        start = out.index("{")
        end = out.index("}", start)
        name = out[start + 1:end]
        out = out[:start] + known.get(name, str(uuid.uuid4())) + out[end + 1:]
    return out


# ------------------------------------------------------------------------------------ schemathesis


def _schema_worker(args: tuple) -> tuple[str, dict, list[str], int]:
    """One identity's schemathesis run, in a process of its own (sync requests)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given
    from hypothesis import settings as hsettings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    label, base, token, refresh, examples, slow = args
    schema = schemathesis.openapi.from_url(base + "/api/openapi.json")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    refreshed = time.monotonic()

    def keep_signed_in() -> None:
        """Access tokens last 15 minutes: a new one every 10 (the refresh token rotates)."""
        nonlocal refreshed, refresh
        if not refresh or time.monotonic() - refreshed < 600:
            return
        import requests

        out = requests.post(base + "/api/auth/refresh", json={"refresh_token": refresh}, timeout=slow)
        if out.status_code == 200:
            headers["Authorization"] = f"Bearer {out.json()['access_token']}"
            refresh = out.json()["refresh_token"]
        refreshed = time.monotonic()

    last = {("DELETE", "/api/tenant"), ("POST", "/api/auth/logout"), ("POST", "/api/me/delete"),
            ("POST", "/api/me/password"), ("DELETE", "/api/members/{user_id}")}
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: (op.method.upper(), op.path) in last)
    statuses: Counter = Counter()
    findings: list[str] = []
    calls = 0
    for op in operations:
        streams = "text/event-stream" in op.definition.raw["responses"].get("200", {}).get("content", {})
        timeout = (slow, 0.5) if streams else slow
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hsettings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                       suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(mode))
            def run(case, op, mode, streams, timeout):
                nonlocal calls
                keep_signed_in()
                started = time.monotonic()
                try:
                    response = case.call(base_url=base, headers=headers, timeout=timeout)
                except Exception as exc:
                    if streams and "Read timed out" in str(exc):
                        return
                    findings.append(f"{op.method.upper()} {op.path} [{mode.value}]: {type(exc).__name__} "
                                    f"after {time.monotonic() - started:.1f} s")
                    return
                calls += 1
                statuses[response.status_code] += 1
                text = response.content[:300].decode("utf-8", "replace")  # a zip (GDPR export) is no text
                if response.status_code >= 500:
                    try:
                        code = response.json()["error"]["code"]
                    except Exception:
                        code = None
                    if code not in ("payments_disabled", "telegram_unavailable", "stripe_unavailable"):
                        findings.append(f"{op.method.upper()} {op.path} [{mode.value}] {case.path_parameters} "
                                        f"{case.query} {str(case.body)[:200]!r}: {response.status_code} {text!r}")
                elif response.status_code >= 400 and not _error_shape(response.content.decode("utf-8", "replace")):
                    findings.append(f"{op.method.upper()} {op.path} [{mode.value}]: {response.status_code} "
                                    f"not the error shape {text!r}")

            try:
                run(op=op, mode=mode, streams=streams, timeout=timeout)
            except Unsatisfiable:
                pass
            except Exception as exc:
                findings.append(f"{op.method.upper()} {op.path} [{mode.value}]: generator {type(exc).__name__}")
    return label, dict(statuses), findings, calls


def phase_schema(base: str, creds: dict, examples: int, slow: float, workers: int) -> Tally:
    tally = Tally("schema")
    refresh = creds["refresh"]
    identities = [("owner", creds["owner"], refresh["owner"], examples),
                  ("agent", creds["agent"], refresh["agent"], max(10, examples // 2)),
                  ("read-only key", creds["readonly_key"], None, max(10, examples // 2)),
                  ("nobody", None, None, max(10, examples // 4)),
                  ("garbage token", "pk_" + "x" * 40, None, max(10, examples // 4))]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        for label, statuses, findings, calls in pool.imap_unordered(
            _schema_worker, [(label, base, token, refresh, n, slow) for label, token, refresh, n in identities]
        ):
            tally.statuses.update(statuses)
            tally.findings.extend(f"({label}) {f}" for f in findings)
            print(f"  schemathesis as {label}: {calls} requests, {len(findings)} findings", flush=True)
    return tally


# ------------------------------------------------------------------------------------ WebSockets


def ws_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0) -> bytes:
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def ws_raw(host: str, port: int, path: str, frames: list[bytes], *, wait: float = 3.0) -> tuple[bool, bytes]:
    """Upgrade, send raw frames, read what comes back until the server closes or `wait` passes.
    Returns (upgraded, bytes after the 101)."""
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nOrigin: https://shop.example\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=wait) as sock:
        sock.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(4096)
            if not chunk:
                return False, buf
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        if b" 101 " not in head.split(b"\r\n")[0]:
            return False, head
        try:
            for frame in frames:
                sock.sendall(frame)
        except OSError:
            pass
        out = rest
        deadline = time.monotonic() + wait
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (TimeoutError, OSError):
            pass
        return True, out


def ws_close_code(out: bytes) -> int | None:
    """The close code of the first close frame the server sent, if any."""
    i = 0
    while i + 2 <= len(out):
        op = out[i] & 0x0F
        n = out[i + 1] & 0x7F
        j = i + 2
        if n == 126:
            n = struct.unpack("!H", out[j:j + 2])[0]
            j += 2
        elif n == 127:
            n = struct.unpack("!Q", out[j:j + 8])[0]
            j += 8
        if op == 0x8:
            return struct.unpack("!H", out[j:j + 2])[0] if n >= 2 else 1005
        i = j + n
    return None


async def phase_sockets(base: str, creds: dict, slow: float) -> Tally:
    tally = Tally("sockets")
    host, port = _hostport(base)
    hello = json.dumps({"type": "hello", "token": creds["visitor_token"]}).encode()
    agent_hello = json.dumps({"type": "hello", "token": creds["owner"]}).encode()
    forged = creds["visitor_token"][:-4] + ("AAAA" if not creds["visitor_token"].endswith("AAAA") else "BBBB")
    T, B, C, CL, PI, PO = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
    visitor_cases: dict[str, tuple[list[bytes], set]] = {
        # name -> (frames, acceptable close codes; 'open' = the socket may stay open)
        "no hello": ([], {4408}),
        "binary hello": ([ws_frame(B, hello)], {4400, 1003, 1008}),
        "invalid JSON hello": ([ws_frame(T, b"{nope")], {4400, 1007, 1008}),
        "invalid UTF-8 text": ([ws_frame(T, b'{"type":"hello","token":"\xff\xfe"}')], {1007, 4400, 1008}),
        "forged token": ([ws_frame(T, json.dumps({"type": "hello", "token": forged}).encode())], {4401}),
        "agent token on visitor socket": ([ws_frame(T, agent_hello)], {4401}),
        "message before hello": ([ws_frame(T, b'{"type":"message","client_id":"x","body":"hi"}')], {4400, 4401, 1008}),
        "hello twice": ([ws_frame(T, hello), ws_frame(T, hello)], {"open", 4400}),
        "unmasked frame": ([ws_frame(T, hello, mask=False)], {1002, "open"}),  # aiohttp tolerates it
        "reserved bits": ([ws_frame(T, hello, rsv=3)], {1002}),
        "unknown opcode": ([ws_frame(0x3, b"x")], {1002}),
        "fragmented hello": ([ws_frame(T, hello[:10], fin=False), ws_frame(C, hello[10:20], fin=False),
                              ws_frame(C, hello[20:])], {"open"}),
        "continuation without start": ([ws_frame(C, hello)], {1002}),
        "fragmented ping": ([ws_frame(PI, b"x", fin=False)], {1002}),
        "ping 200 bytes": ([ws_frame(PI, b"x" * 200)], {1002}),
        "interleaved ping in fragments": ([ws_frame(T, hello[:10], fin=False), ws_frame(PI, b"p"),
                                           ws_frame(C, hello[10:])], {"open"}),
        "1 MB text frame": ([ws_frame(T, b"x" * 1_048_576)], {1009}),
        "1 MB in 1,000 fragments": ([ws_frame(T, b"[" * 1024, fin=False)]
                                    + [ws_frame(C, b"[" * 1024, fin=False) for _ in range(998)]
                                    + [ws_frame(C, b"]")], {1009}),
        "close with bad code": ([ws_frame(T, hello), ws_frame(CL, struct.pack("!H", 999))], {1002, 1000}),
        "close with bad UTF-8 reason": ([ws_frame(T, hello), ws_frame(CL, struct.pack("!H", 1000) + b"\xff")],
                                        {1002, 1007, 1000}),
        "pong unasked": ([ws_frame(T, hello), ws_frame(PO, b"x")], {"open"}),
        "64 KB + 1 frame after hello": ([ws_frame(T, hello), ws_frame(T, b"x" * 65537)], {1009}),
        "deep JSON after hello": ([ws_frame(T, hello), ws_frame(T, b"[" * 5000 + b"]" * 5000)], {"open"}),
        "unknown type after hello": ([ws_frame(T, hello), ws_frame(T, b'{"type":"rm -rf"}')], {"open"}),
        "NUL body after hello": ([ws_frame(T, hello), ws_frame(T, b'{"type":"message","client_id":"a","body":"\\u0000"}')],
                                 {"open"}),
    }
    for path, cases in (("/ws/visitor", visitor_cases), ("/ws/agent", _agent_cases(agent_hello, forged, creds))):
        for name, (frames, allowed) in cases.items():
            try:
                upgraded, out = await asyncio.to_thread(ws_raw, host, port, path, frames, wait=12.0 if name == "no hello" else 3.0)
            except OSError as exc:
                tally.finding(f"{path} {name}: {type(exc).__name__} {exc}")
                continue
            if not upgraded:
                tally.finding(f"{path} {name}: not upgraded: {out[:120]!r}")
                continue
            code = ws_close_code(out)
            tally.statuses[f"close {code}" if code else "open"] += 1
            if (code or "open") not in allowed:
                tally.finding(f"{path} {name}: close {code} (expected {allowed}); {out[:200]!r}")
            if b'"internal"' in out:
                tally.finding(f"{path} {name}: an internal error frame: {out[:200]!r}")
    await _flood(base, creds, tally)
    await _reconnect_storm(base, creds, tally)
    await _sse(base, creds, tally, slow)
    return tally


def _agent_cases(agent_hello: bytes, forged: str, creds: dict) -> dict:
    T, B = 0x1, 0x2
    return {
        "binary hello": ([ws_frame(B, agent_hello)], {4400, 1003, 1008}),
        "visitor token on agent socket": ([ws_frame(T, json.dumps({"type": "hello", "token": creds["visitor_token"]}).encode())],
                                          {4401}),
        "garbage API key": ([ws_frame(T, b'{"type":"hello","token":"pk_live_nope"}')], {4401}),
        "last_event_id past int64": ([ws_frame(T, json.dumps({"type": "hello", "token": creds["owner"],
                                                               "last_event_id": 2**70}).encode())], {4400, "open"}),
        "last_event_id negative string": ([ws_frame(T, json.dumps({"type": "hello", "token": creds["owner"],
                                                                    "last_event_id": "-1"}).encode())], {4400, "open"}),
        "typing for another tenant's conversation": ([ws_frame(T, agent_hello), ws_frame(
            T, json.dumps({"type": "typing", "conversation_id": str(uuid.uuid4()), "on": True}).encode())], {"open"}),
        "read with a huge id": ([ws_frame(T, agent_hello), ws_frame(
            T, json.dumps({"type": "read", "conversation_id": "x", "message_id": 10**30}).encode())], {"open"}),
        "1 MB frame": ([ws_frame(T, agent_hello), ws_frame(T, b"x" * 1_048_576)], {1009}),
    }


async def _flood(base: str, creds: dict, tally: Tally) -> None:
    """One visitor sends 20,000 message frames as fast as it can: the server throttles, stays up, and
    the socket's answers are error frames (rate_limited), never an internal error."""
    ws_url = base.replace("http", "ws", 1) + "/ws/visitor"
    sent = 0
    frames: Counter = Counter()
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(ws_url, origin="https://shop.example", max_msg_size=0) as ws,
    ):
        await ws.send_str(json.dumps({"type": "hello", "token": creds["visitor_token"]}))
        for i in range(20_000):
            kind = ("message", "typing", "read", "ping")[i % 4]
            frame = {"type": kind, "client_id": str(uuid.uuid4()), "body": f"flood {i}", "on": True, "message_id": i}
            await ws.send_str(json.dumps(frame))
            sent += 1
        spent = time.monotonic() - started
        try:
            while True:
                msg = await ws.receive(timeout=3)
                if msg.type != aiohttp.WSMsgType.TEXT:
                    frames[f"ws {msg.type.name} {ws.close_code}"] += 1
                    break
                data = json.loads(msg.data)
                frames[data.get("type") + ("/" + data["code"] if data.get("code") else "")] += 1
        except TimeoutError:
            pass
    print(f"  flood: {sent} frames in {spent:.1f} s ({sent / spent:.0f}/s) from one visitor; answers {dict(frames)}")
    tally.statuses["flood frames"] += sent
    if any("internal" in k for k in frames):
        tally.finding(f"flood: internal error frames {dict(frames)}")


async def _reconnect_storm(base: str, creds: dict, tally: Tally, n: int = 300) -> None:
    """n visitor sockets of one session connect, say hello and leave, 50 at a time."""
    ws_url = base.replace("http", "ws", 1) + "/ws/visitor"
    outcomes: Counter = Counter()
    started = time.monotonic()

    async def one(http):
        try:
            async with http.ws_connect(ws_url, origin="https://shop.example") as ws:
                await ws.send_str(json.dumps({"type": "hello", "token": creds["visitor_token"]}))
                msg = await ws.receive(timeout=15)
                outcomes[json.loads(msg.data).get("type") if msg.type == aiohttp.WSMsgType.TEXT else msg.type.name] += 1
        except Exception as exc:
            outcomes[type(exc).__name__] += 1

    async with aiohttp.ClientSession() as http:
        for start in range(0, n, 50):
            await asyncio.gather(*(one(http) for _ in range(start, min(n, start + 50))))
    print(f"  reconnect storm: {n} sockets in {time.monotonic() - started:.1f} s: {dict(outcomes)}")
    tally.statuses["storm sockets"] += n
    bad = {k: v for k, v in outcomes.items() if k not in ("ready", "message", "status", "error", "CLOSE")}
    if bad:
        tally.finding(f"reconnect storm: {bad}")


async def _sse(base: str, creds: dict, tally: Tally, slow: float) -> None:
    auth = {"Authorization": f"Bearer {creds['owner']}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=2)) as http:
        for value in ("abc", "-5", "9" * 40, "1e9", "\u0661", " 1 ", "0x10", "1,2"):
            try:
                async with http.get(base + "/api/events", headers={**auth, "Last-Event-ID": value}) as resp:
                    body = await resp.content.read(200) if resp.status >= 400 else b""
                    tally.answer(f"SSE Last-Event-ID {value!r}", resp.status, body or b'{"error":{"code":"","message":""}}')
            except (TimeoutError, aiohttp.ClientError) as exc:
                tally.finding(f"SSE Last-Event-ID {value!r}: {type(exc).__name__}")
        for query in ("?after=-1", "?after=" + "9" * 30, "?after=x", "?chatbot_id=nope"):
            try:
                async with http.get(base + "/api/events" + query, headers=auth) as resp:
                    body = await resp.content.read(200) if resp.status >= 400 else b""
                    tally.answer(f"SSE {query}", resp.status, body or b'{"error":{"code":"","message":""}}')
            except (TimeoutError, aiohttp.ClientError) as exc:
                tally.finding(f"SSE {query}: {type(exc).__name__}")
        # Many streams of one member at once.
        opened: Counter = Counter()

        async def stream():
            try:
                async with http.get(base + "/api/events", headers=auth) as resp:
                    opened[resp.status] += 1
                    if resp.status == 200:
                        await asyncio.sleep(1)
            except (TimeoutError, aiohttp.ClientError) as exc:
                opened[type(exc).__name__] += 1

        await asyncio.gather(*(stream() for _ in range(200)))
        print(f"  200 SSE streams of one member at once: {dict(opened)}")
        if any(isinstance(k, int) and k >= 500 for k in opened):
            tally.finding(f"SSE streams: {dict(opened)}")


# ------------------------------------------------------------------------------------ console


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b"\0" * (100 * 1024 * 1024))
    return buf.getvalue()


def _pdf_pages(pages: int) -> bytes:
    """A valid PDF with `pages` pages, each with a line of text."""
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", None, b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for i in range(pages):
        content = f"BT /F1 12 Tf 72 720 Td (Page {i} of a hostile upload) Tj ET".encode()
        objs.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
        objs.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                    b"/Resources << /Font << /F1 3 0 R >> >> >>" % len(objs))
        kids.append(len(objs))
    objs[1] = b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % k for k in kids) + b"] /Count %d >>" % pages
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for n, body in enumerate(objs, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def hostile_files() -> dict[str, tuple[str, bytes]]:
    return {
        "0 bytes": ("empty.txt", b""),
        "0-byte PDF": ("empty.pdf", b""),
        "text named .pdf": ("fake.pdf", b"just words, no PDF here " * 100),
        "PDF header then garbage": ("broken.pdf", b"%PDF-1.7\n" + os.urandom(200_000)),
        "zip bomb named .pdf": ("bomb.pdf", _zip_bomb()),
        "PNG named .md": ("image.md", b"\x89PNG\r\n\x1a\n" + os.urandom(50_000)),
        "UTF-16 text": ("utf16.txt", "hello world ".encode("utf-16") * 1000),
        "invalid UTF-8 text": ("bad.txt", b"caf\xe9 \xff\xfe " * 5000),
        "NUL bytes text": ("nul.txt", b"a\x00b\x00" * 10000),
        "100,000 nested tags": ("deep.html", b"<div>" * 100_000 + b"text" + b"</div>" * 100_000),
        "unclosed 1M tags": ("open.html", b"<b>" * 1_000_000),
        "HTML with script only": ("script.html", b"<script>" + b"x" * 500_000 + b"</script>"),
        "5,000-page PDF": ("pages.pdf", _pdf_pages(5000)),
        "20 MB text": ("big.txt", b"lorem ipsum dolor sit amet " * 780_000),
        "filename traversal": ("../../../../etc/passwd.txt", b"root:x:0:0"),
        "filename 10 KB": ("a" * 10_000 + ".txt", b"x"),
    }


async def phase_console(base: str, creds: dict, slow: float) -> Tally:
    tally = Tally("console")
    chatbot = creds["chatbot_id"]
    auth = {"Authorization": f"Bearer {creds['owner']}"}
    timeout = aiohttp.ClientTimeout(total=max(slow, 120))
    async with aiohttp.ClientSession(timeout=timeout) as http:
        # API uploads: each answer in the shape, within bounded time.
        for name, (filename, data) in hostile_files().items():
            form = aiohttp.FormData()
            form.add_field("file", data, filename=filename, content_type="application/octet-stream")
            started = time.monotonic()
            try:
                async with http.post(f"{base}/api/chatbots/{chatbot}/knowledge/upload", data=form, headers=auth) as resp:
                    body = await resp.read()
                    tally.answer(f"upload {name}", resp.status, body)
                    print(f"  upload {name}: {resp.status} in {time.monotonic() - started:.1f} s "
                          f"{body[:90].decode('utf-8', 'replace')!r}", flush=True)
            except (TimeoutError, aiohttp.ClientError) as exc:
                tally.finding(f"upload {name}: {type(exc).__name__} after {time.monotonic() - started:.1f} s")
        # Multipart oddities on the upload route.
        oddities = {
            "10,000 parts": b"".join(b'--b\r\nContent-Disposition: form-data; name="p%d"\r\n\r\nx\r\n' % i
                                     for i in range(10_000)) + b"--b--\r\n",
            "unterminated part": b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nabc',
            "no disposition": b"--b\r\nContent-Type: text/plain\r\n\r\nabc\r\n--b--\r\n",
            "header line 100 KB": b'--b\r\nX-Long: ' + b"a" * 100_000 + b'\r\nContent-Disposition: form-data; name="file"; '
                                  b'filename="a.txt"\r\n\r\nabc\r\n--b--\r\n',
            "base64 transfer encoding": b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n'
                                        b"Content-Transfer-Encoding: base64\r\n\r\n!!!notbase64\r\n--b--\r\n",
            "nested multipart": b'--b\r\nContent-Type: multipart/mixed; boundary=c\r\nContent-Disposition: form-data; '
                                b'name="file"; filename="a.txt"\r\n\r\n--c\r\n\r\nx\r\n--c--\r\n--b--\r\n',
        }
        for name, body in oddities.items():
            try:
                async with http.post(f"{base}/api/chatbots/{chatbot}/knowledge/upload", data=body,
                                     headers={**auth, "Content-Type": "multipart/form-data; boundary=b"}) as resp:
                    tally.answer(f"upload multipart {name}", resp.status, await resp.read())
            except (TimeoutError, aiohttp.ClientError) as exc:
                tally.finding(f"upload multipart {name}: {type(exc).__name__}")
        # Console forms: a workspace signed up through the console's own form (its cookie; signing in
        # would meet the sign-in limiter after the schema phase's logins), then CSRF abuse.
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(timeout=timeout, cookie_jar=jar) as console:
            async with console.get(base + "/console/sign-up") as resp:
                csrf = _meta(await resp.text(), "csrf-token")
            slug = f"console-{uuid.uuid4().hex[:8]}"
            async with console.post(base + "/console/sign-up", allow_redirects=False,
                                    data={"email": f"{slug}@example.test", "password": PASSWORD, "name": "Console",
                                          "tenant_name": "Console", "slug": slug, "_csrf": csrf or ""}) as resp:
                signed_in = resp.status in (302, 303)
            if not signed_in:
                tally.finding(f"console sign-up failed: {resp.status}")
                return tally
            async with console.get(base + "/console/chatbots") as resp:
                found = re.findall(r"/console/chatbots/([0-9a-f-]{36})", await resp.text())
            chatbot = found[0] if found else chatbot
            async with console.get(base + "/console/settings") as resp:
                token = _meta(await resp.text(), "csrf-token") or ""
            forms = [("/console/settings", {"name": "x"}), ("/console/keys", {"name": "k", "scopes": "read"}),
                     (f"/console/knowledge/{chatbot}/text", {"title": "t", "text": "x"}),
                     ("/console/team/invites", {"email": "a@b.c", "role": "agent"})]
            for path, data in forms:
                for label, extra, headers in (("no CSRF", {}, {}), ("wrong CSRF", {"_csrf": "A" * 40}, {}),
                                              ("other origin", {"_csrf": token}, {"Origin": "https://evil.example"}),
                                              ("JSON body", None, {"Content-Type": "application/json"})):
                    body = json.dumps(data) if extra is None else {**data, **extra}
                    async with console.post(base + path, data=body, headers={**headers, "Accept": "application/json"},
                                            allow_redirects=False) as resp:
                        text = await resp.read()
                        # The token is the guard: a post that carries it is answered as any other (the Origin
                        # header is not checked); without it, or with a wrong one, 403.
                        expect = {403} if label != "other origin" else {200, 303, 404}
                        tally.answer(f"console {path} {label}", resp.status, text, expect=expect)
            upload = f"/console/knowledge/{chatbot}/upload"
            for name, (filename, data) in list(hostile_files().items())[:12]:
                form = aiohttp.FormData()
                form.add_field("_csrf", token)
                form.add_field("file", data, filename=filename, content_type="application/octet-stream")
                started = time.monotonic()
                try:
                    async with console.post(base + upload, data=form, allow_redirects=False,
                                            headers={"Accept": "application/json"}) as resp:
                        body = await resp.read()
                        tally.answer(f"console upload {name}", resp.status, body if resp.status >= 400 else b"")
                except (TimeoutError, aiohttp.ClientError) as exc:
                    tally.finding(f"console upload {name}: {type(exc).__name__} after {time.monotonic() - started:.1f} s")
    return tally


def _meta(page: str, name: str) -> str | None:
    marker = f'<meta name="{name}" content="'
    at = page.find(marker)
    return page[at + len(marker):page.index('"', at + len(marker))] if at >= 0 else None


# ------------------------------------------------------------------------------------ webhooks


def stripe_signature(payload: bytes, secret: str = STRIPE_SECRET, at: int | None = None) -> str:
    at = int(time.time()) if at is None else at
    key = secret.encode()  # Stripe signs with the secret string itself
    mac = hmac.new(key, f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


async def phase_webhooks(base: str, creds: dict, slow: float) -> Tally:
    tally = Tally("webhooks")
    url = base + "/api/billing/webhook"
    event = {"id": "evt_hostile", "type": "customer.subscription.updated", "created": int(time.time()),
             "data": {"object": {"id": "sub_nope", "object": "subscription"}}}
    payload = json.dumps(event).encode()
    cases = [
        ("no signature", payload, {}, {400}),
        ("garbage signature", payload, {"Stripe-Signature": "garbage"}, {400}),
        ("wrong secret", payload, {"Stripe-Signature": stripe_signature(payload, "whsec_wrong")}, {400}),
        ("10 minutes old", payload, {"Stripe-Signature": stripe_signature(payload, at=int(time.time()) - 600)}, {400}),
        ("from the future", payload, {"Stripe-Signature": stripe_signature(payload, at=int(time.time()) + 3600)},
         {400, 502}),  # the library bounds only the past; then Stripe (unreachable here) is asked
        ("signature of another body", payload + b" ", {"Stripe-Signature": stripe_signature(payload)}, {400}),
        ("huge signature header", payload, {"Stripe-Signature": "t=1," + "v1=" + "a" * 7000}, {400}),
        ("unknown type, signed", json.dumps({**event, "type": "made.up"}).encode(), None, {200}),
        ("signed, not JSON", b"not json", None, {400}),
        ("signed, a list", b"[1,2]", None, {400}),
        ("signed, data a string", json.dumps({**event, "data": "x"}).encode(), None, {400}),
        ("signed, no type", json.dumps({"id": "evt_x"}).encode(), None, {200, 400}),
        ("signed, NUL in id", json.dumps({**event, "id": "evt_\u0000"}).encode(), None, {422}),
        ("signed, invalid UTF-8", b'{"id": "\xff", "type": "made.up"}', None, {400}),
        ("signed, 2 MB", json.dumps({**event, "pad": "a" * 2_100_000}).encode(), None, {413}),
        ("signed, deep", b'{"id":"e","type":"made.up","x":' + b"[" * 5000 + b"]" * 5000 + b"}", None, {200, 400}),
    ]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=slow)) as http:
        for name, body, headers, expect in cases:
            headers = headers if headers is not None else {"Stripe-Signature": stripe_signature(body)}
            try:
                async with http.post(url, data=body, headers={**headers, "Content-Type": "application/json"}) as resp:
                    text = await resp.read()
                    if (resp.status in expect and _error_shape(text)) or (resp.status < 400 and resp.status in expect):
                        tally.statuses[resp.status] += 1  # an expected answer (502: Stripe is unreachable here)
                    else:
                        tally.answer(f"stripe {name}", resp.status, text, expect=expect)
            except (TimeoutError, aiohttp.ClientError) as exc:
                tally.finding(f"stripe {name}: {type(exc).__name__}")
        # Replays: the same signed event 50 times at once.
        signed = json.dumps({**event, "type": "made.up", "id": "evt_replay"}).encode()
        sig = stripe_signature(signed)

        async def replay():
            async with http.post(url, data=signed, headers={"Stripe-Signature": sig}) as resp:
                tally.answer("stripe replay", resp.status, await resp.read())

        await asyncio.gather(*(replay() for _ in range(50)))
        # Telegram webhook: unknown or malformed channels, no secret.
        for name, channel, headers, body in (
            ("non-UUID channel", "not-a-uuid", {}, b"{}"),
            ("10 KB channel", "a" * 10_000, {}, b"{}"),
            ("unknown channel", str(uuid.uuid4()), {"X-Telegram-Bot-Api-Secret-Token": "x"}, b"{}"),
            ("unknown channel, 2 MB", str(uuid.uuid4()), {}, b"{" + b" " * 2_100_000 + b"}"),
            ("unknown channel, not JSON", str(uuid.uuid4()), {}, b"\xff"),
        ):
            try:
                async with http.post(f"{base}/api/channels/telegram/{channel}/webhook", data=body, headers=headers) as resp:
                    tally.answer(f"telegram {name}", resp.status, await resp.read())
            except aiohttp.ClientOSError:
                tally.statuses["reset"] += 1  # the 2 MB body refused before it was all sent
            except (TimeoutError, aiohttp.ClientError) as exc:
                tally.finding(f"telegram {name}: {type(exc).__name__}")
    return tally


# ------------------------------------------------------------------------------------ the probe


def probe_process(base: str, creds: dict, rate: float, stop, out) -> None:
    """A well-behaved member and widget, in a process of their own: latencies until `stop` is set."""

    async def run() -> dict:
        latencies: list[float] = []
        errors: Counter = Counter()
        # A member's access token, refreshed every 10 minutes (an API key allows 60 requests a minute on free).
        auth = {"Authorization": f"Bearer {creds['prober']}"}
        refresh, refreshed = creds["refresh"]["prober"], time.monotonic()
        session_body = {"chatbot_key": creds["chatbot_key"]}
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            i = 0
            next_at = time.monotonic()
            while not stop.is_set():
                if time.monotonic() - refreshed > 600:
                    async with http.post(base + "/api/auth/refresh", json={"refresh_token": refresh}) as resp:
                        if resp.status == 200:
                            fresh = await resp.json()
                            auth["Authorization"] = f"Bearer {fresh['access_token']}"
                            refresh = fresh["refresh_token"]
                    refreshed = time.monotonic()
                i += 1
                started = time.monotonic()
                try:
                    if i % 2:
                        req = http.get(base + "/api/conversations?limit=20", headers=auth)
                    else:
                        req = http.post(base + "/api/widget/sessions", json=session_body,
                                        headers={"Origin": "https://shop.example"})
                    async with req as resp:
                        await resp.read()
                        if resp.status >= 400:
                            errors[resp.status] += 1
                except (TimeoutError, aiohttp.ClientError) as exc:
                    errors[type(exc).__name__] += 1
                latencies.append((time.monotonic() - started) * 1000)
                next_at += 1 / rate
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        return {"latencies": latencies, "errors": dict(errors)}

    out.put(asyncio.run(run()))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ------------------------------------------------------------------------------------ setup


async def arrange(base: str) -> dict:
    """A workspace from outside: owner, agent, a read-only API key, a chatbot allowing any origin, a
    visitor session with a conversation, and a second member whose requests are the probe's."""
    from pyapp.client import ParleyClient

    async with aiohttp.ClientSession() as http:
        anon = ParleyClient(base, session=http)
        email = f"hostile-{uuid.uuid4().hex[:10]}@example.test"
        slug = f"hostile-{uuid.uuid4().hex[:8]}"
        owner = await anon.sign_up(body={"email": email, "password": PASSWORD, "name": "Hostile Owner",
                                         "tenant_name": "Hostile bench", "slug": slug})
        boss = ParleyClient(base, owner["access_token"], session=http)
        people = {}
        for role in ("agent", "admin"):
            addr = f"{role}-{uuid.uuid4().hex[:10]}@example.test"
            joined = await anon.sign_up(body={"email": addr, "password": PASSWORD, "name": f"Hostile {role}"})
            invite = await boss.create_invite(body={"email": addr, "role": role})
            member = ParleyClient(base, joined["access_token"], session=http)
            await member.accept_invite(body={"token": invite["token"]})
            switched = await member.switch_tenant(body={"tenant_id": owner["tenant"]["id"]})
            people[role] = switched["access_token"]
            people[role + "_refresh"] = joined["refresh_token"]  # the session, and its refreshes, moved there
        key = (await boss.create_api_key(body={"name": "read only", "scopes": ["read"]}))["key"]
        chatbots = await boss.list_chatbots()
        items = chatbots["chatbots"] if isinstance(chatbots, dict) else chatbots
        chatbot = items[0] if items else await boss.create_chatbot(body={"name": "Hostile bot"})
        async with http.post(base + "/api/widget/sessions", json={"chatbot_key": chatbot["public_key"], "start": True},
                             headers={"Origin": "https://shop.example"}) as resp:
            session = await resp.json()
            if resp.status != 201:
                raise SystemExit(f"widget session: {resp.status} {session}")
    return {"owner": owner["access_token"], "agent": people["agent"], "prober": people["admin"],
            "refresh": {"owner": owner["refresh_token"], "agent": people["agent_refresh"],
                        "prober": people["admin_refresh"]},
            "readonly_key": key, "email": email, "tenant_id": owner["tenant"]["id"], "chatbot_id": chatbot["id"],
            "chatbot_key": chatbot["public_key"], "visitor_token": session["token"],
            "conversation_id": session["conversation_id"]}


def start_server() -> tuple[subprocess.Popen, str]:
    from pyapp.embedded import _free_port

    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PARLEY_EMBED_WARM="0", PARLEY_STRIPE_ENABLED="1",
               PARLEY_STRIPE_SECRET_KEY="sk_test_hostile", PARLEY_STRIPE_WEBHOOK_SECRET=STRIPE_SECRET,
               PARLEY_STRIPE_API_BASE=f"http://127.0.0.1:{_free_port()}")
    subprocess.run([sys.executable, "-m", "pyapp.cli", "db", "start"], env=env, check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "pyapp.cli", "migrate"], env=env, check=True, capture_output=True)
    log = open(ROOT / ".parley" / "hostile-server.log", "w")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen([sys.executable, "-m", "pyapp.cli", "serve", "--port", str(port)], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc, base
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"the server exited: see {log.name}") from None
            time.sleep(0.2)
    raise SystemExit("the server did not start in 60 s")


def rss_mb(pid: int | None) -> float:
    return _rss(pid) if pid else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (default: start one on this checkout's embedded PostgreSQL)")
    parser.add_argument("--server-pid", type=int, help="its process id, for RSS and liveness")
    parser.add_argument("--examples", type=int, default=200, help="schemathesis examples per operation and mode")
    parser.add_argument("--workers", type=int, default=2, help="schemathesis processes at once")
    parser.add_argument("--phases", default="http,bodies,schema,sockets,console,webhooks")
    parser.add_argument("--probe-rate", type=float, default=20.0, help="the well-behaved client's requests a second")
    parser.add_argument("--slow", type=float, default=30.0, help="seconds after which a missing answer is a finding")
    parser.add_argument("--quick", action="store_true", help="20 examples per operation (a few minutes)")
    args = parser.parse_args()
    if args.quick:
        args.examples = 20
    proc = None
    if args.url:
        base, pid = args.url.rstrip("/"), args.server_pid
    else:
        proc, base = start_server()
        pid = proc.pid
    try:
        creds = asyncio.run(arrange(base))
        ctx = multiprocessing.get_context("spawn")
        stop, out = ctx.Event(), ctx.Queue()
        probe = ctx.Process(target=probe_process, args=(base, creds, args.probe_rate, stop, out))
        probe.start()
        rss_before = rss_mb(pid)
        tallies: list[Tally] = []
        try:
            run_phases(args, base, creds, pid, tallies)
        finally:
            stop.set()
        result = out.get(timeout=60)
        probe.join()
        lat = result["latencies"]
        requests = sum(sum(t.statuses.values()) for t in tallies)
        findings = sum(len(t.findings) for t in tallies)
        print(f"probe: {len(lat)} requests, p50 {percentile(lat, 0.5):.1f} ms, p99 {percentile(lat, 0.99):.1f} ms, "
              f"max {max(lat, default=float('nan')):.1f} ms, mean {statistics.fmean(lat) if lat else float('nan'):.1f} ms, "
              f"errors {result['errors']}")
        print(f"requests={requests} findings={findings} probe_p50_ms={percentile(lat, 0.5):.1f} "
              f"probe_p99_ms={percentile(lat, 0.99):.1f} probe_errors={sum(result['errors'].values())} "
              f"rss_mb={rss_before:.0f}->{rss_mb(pid):.0f}")
        return 1 if findings else 0
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


def run_phases(args, base: str, creds: dict, pid: int | None, tallies: list[Tally]) -> None:
    for number, name in enumerate(args.phases.split(",")):
        print(f"phase {name}", flush=True)
        if number:  # access tokens last 15 minutes, and a phase may have ended its workspace or sessions
            creds = asyncio.run(arrange(base))
        if name == "http":
            tally = phase_http(base, creds, args.slow)
        elif name == "bodies":
            tally = asyncio.run(phase_bodies(base, creds, args.slow))
        elif name == "schema":
            tally = phase_schema(base, creds, args.examples, args.slow, args.workers)
        elif name == "sockets":
            tally = asyncio.run(phase_sockets(base, creds, args.slow))
        elif name == "console":
            tally = asyncio.run(phase_console(base, creds, args.slow))
        elif name == "webhooks":
            tally = asyncio.run(phase_webhooks(base, creds, args.slow))
        else:
            raise SystemExit(f"unknown phase {name}")
        if pid and not os.path.exists(f"/proc/{pid}"):
            tally.finding("the server process is gone")
        tallies.append(tally)
        print(tally.report(), flush=True)


if __name__ == "__main__":
    sys.exit(main())
