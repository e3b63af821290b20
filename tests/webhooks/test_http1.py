"""pyapp.net.http1, the webhooks' lean HTTP/1.1 client, against raw servers on 127.0.0.1: keep-alive
reuse, Content-Length, chunked and until-close answers, a kept body cut to its limit, an oversized
answer not drained, a server that closed an idle connection (sent once more on a new one), no
redirect followed, one deadline, the SSRF guard before any connection (and again once its vetting
is old), and TLS checked for the URL's name on the pinned address."""
import asyncio

import pytest
from pyapp.net import FetchRefused
from pyapp.net.http1 import PinnedClient, ProtocolError
from support.fakes.tls import make_certificate


class RawServer:
    """Reads each request (head + Content-Length body) and writes the next scripted answer as raw
    bytes; ``close_after`` closes the connection after answering. Records requests and connections."""

    def __init__(self, answers, *, close_after=False, ssl_context=None):
        self.answers = list(answers)
        self.close_after = close_after
        self.ssl_context = ssl_context
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.server = None
        self.port = 0

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                answer = self.answers.pop(0) if self.answers else b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                if isinstance(answer, float):  # a pause instead of an answer
                    await asyncio.sleep(answer)
                    continue
                writer.write(answer)
                await writer.drain()
                if self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _client(**kw):
    kw.setdefault("allow_hosts", ["127.0.0.1"])
    return PinnedClient(**kw)


async def test_keep_alive_content_length_chunked_and_headers():
    chunked = (b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n"
               b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n")
    async with RawServer([b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nRetry-After: 3\r\n\r\nfirst", chunked,
                          b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"]) as srv:
        client = _client()
        url = f"http://127.0.0.1:{srv.port}/hook/1?x=%20y"
        r1 = await client.post(url, b'{"a":1}', {"webhook-id": "msg_1"}, timeout=5, keep=100)
        r2 = await client.post(url, b"{}", {}, timeout=5, keep=100)
        r3 = await client.post(url, b"{}", {}, timeout=5, keep=100)
        await client.close()
    assert (r1.status, r1.body, r1.headers["retry-after"]) == (200, b"first", "3")
    assert (r2.status, r2.body, r2.headers["x-a"]) == (201, b"hello world", "1")
    assert (r3.status, r3.body) == (204, b"")
    assert srv.connections == 1  # one keep-alive connection for all three
    head, body = srv.requests[0]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /hook/1?x=%20y HTTP/1.1" and f"Host: 127.0.0.1:{srv.port}" in lines
    assert "webhook-id: msg_1" in lines and "Content-Length: 7" in lines and body == b'{"a":1}'


async def test_kept_body_is_cut_until_close_answers_and_oversized_answers_close():
    big = b"x" * (2 * 1024 * 1024)
    async with RawServer([b"HTTP/1.1 500 Oops\r\nContent-Length: 10\r\n\r\n0123456789",
                          b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big) + big]) as srv:
        client = _client()
        url = f"http://127.0.0.1:{srv.port}/"
        r1 = await client.post(url, b"{}", {}, timeout=5, keep=4)
        r2 = await client.post(url, b"{}", {}, timeout=5, keep=4)
        r3 = await client.post(url, b"{}", {}, timeout=5, keep=4)
        await client.close()
    assert (r1.status, r1.body) == (500, b"0123") and (r2.status, r2.body) == (200, b"xxxx")
    assert r3.status == 200 and srv.connections == 2  # past the drain cap the connection is dropped
    async with RawServer([b"HTTP/1.0 200 OK\r\n\r\nuntil the end"], close_after=True) as srv:
        client = _client()
        r = await client.post(f"http://127.0.0.1:{srv.port}/", b"{}", {}, timeout=5, keep=100)
        await client.close()
    assert (r.status, r.body) == (200, b"until the end")


async def test_a_connection_the_server_closed_is_replaced_and_garbage_is_an_error():
    async with RawServer([], close_after=True) as srv:
        client = _client()
        url = f"http://127.0.0.1:{srv.port}/"
        for _ in range(3):
            assert (await client.post(url, b"{}", {}, timeout=5, keep=10)).status == 200
        await client.close()
    assert srv.connections == 3 and len(srv.requests) == 3
    async with RawServer([b"SSH-2.0-OpenSSH\r\n\r\n"]) as srv:
        client = _client()
        with pytest.raises(ProtocolError):
            await client.post(f"http://127.0.0.1:{srv.port}/", b"{}", {}, timeout=5, keep=10)
        await client.close()


async def test_no_redirect_followed_and_one_deadline():
    async with RawServer([b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n",
                          30.0]) as srv:
        client = _client()
        url = f"http://127.0.0.1:{srv.port}/"
        r = await client.post(url, b"{}", {}, timeout=5, keep=10)
        assert r.status == 302 and r.headers["location"] == "http://169.254.169.254/"
        with pytest.raises(TimeoutError):
            await client.post(url, b"{}", {}, timeout=0.3, keep=10)
        await client.close()
    assert len(srv.requests) == 2  # the redirect's target was never asked


async def test_the_guard_refuses_before_connecting_and_vets_again_once_its_vetting_is_old():
    async with RawServer([]) as srv:
        for url in (f"http://127.0.0.1:{srv.port}/", f"http://2130706433:{srv.port}/", "http://169.254.169.254/"):
            with pytest.raises(FetchRefused):
                await PinnedClient(allow_hosts=[]).post(url, b"{}", {}, timeout=5, keep=10)
        answers = {"hook.test": ["127.0.0.1"]}
        lookups = []

        async def resolver(host, port):
            lookups.append(host)
            return answers[host]

        client = PinnedClient(allow_hosts=["hook.test"], resolver=resolver, vet_ttl=0)
        url = f"http://hook.test:{srv.port}/"
        assert (await client.post(url, b"{}", {}, timeout=5, keep=10)).status == 200
        answers["hook.test"] = ["10.0.0.1"]  # rebinding: the next vetting sees it (allow-listed name, still pinned)
        client.allow_hosts = frozenset()
        with pytest.raises(FetchRefused):
            await client.post(url, b"{}", {}, timeout=5, keep=10)
        await client.close()
    assert srv.connections == 1 and lookups == ["hook.test", "hook.test"]
    assert srv.requests[0][0].split(b"\r\n")[1] == f"Host: hook.test:{srv.port}".encode()


async def test_https_checks_the_certificate_for_the_urls_name_on_the_pinned_address():
    cert = make_certificate(["hook.test"])
    async with RawServer([], ssl_context=cert.server_context) as srv:

        async def resolver(host, port):
            return ["127.0.0.1"]

        client = PinnedClient(allow_hosts=["hook.test", "127.0.0.1"], resolver=resolver,
                              ssl_context=cert.client_context)
        r = await client.post(f"https://hook.test:{srv.port}/", b"{}", {}, timeout=5, keep=10)
        assert r.status == 200
        with pytest.raises(OSError):  # the same server by its address: the name does not match
            await client.post(f"https://127.0.0.1:{srv.port}/", b"{}", {}, timeout=5, keep=10)
        await client.close()


def test_header_values_cannot_inject_lines():
    client = _client()
    with pytest.raises(ValueError):
        asyncio.run(client.post("http://127.0.0.1:9/", b"", {"x": "a\r\nInjected: 1"}, timeout=1, keep=1))


async def test_idle_connections_past_their_time_are_closed_and_their_pool_forgotten():
    import time

    async with RawServer([]) as srv:
        client = _client()
        url = f"http://127.0.0.1:{srv.port}/"
        assert (await client.post(url, b"{}", {}, timeout=5, keep=10)).status == 200
        (pool,) = client._pools.values()
        (conn,) = pool.idle
        client._sweep(now=time.monotonic() + 60)  # past IDLE_S and the vetting's 30 s
        assert conn.closed and client._pools == {} and client._vetted == {}
        assert (await client.post(url, b"{}", {}, timeout=5, keep=10)).status == 200
        await client.close()
    assert srv.connections == 2
