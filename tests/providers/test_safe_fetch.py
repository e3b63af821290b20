"""The SSRF guard: hostile URLs are refused before any connection; the local site fetches."""
from __future__ import annotations

import socket

import pytest
from pyapp.net.safe_fetch import (
    ALLOW_HOSTS_ENV,
    FetchFailed,
    FetchRefused,
    SafeFetcher,
    forbidden_reason,
    guarded_session,
    parse_host,
    vet_url,
)
from support.fakes.tls import make_certificate
from support.fakes.website import FakeWebsite

PUBLIC = "93.184.216.34"


@pytest.fixture(autouse=True)
def _no_env_allow_list(monkeypatch):
    monkeypatch.delenv(ALLOW_HOSTS_ENV, raising=False)


class FakeDNS:
    """An injected resolver: a fixed table, and a record of every lookup made."""

    def __init__(self, table: dict[str, list[str]]):
        self.table = table
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


HOSTILE_DNS = {
    "internal.test": ["10.0.0.1"],
    "mixed.test": [PUBLIC, "10.0.0.1"],
    "mapped.test": ["::ffff:10.0.0.1"],
    "nat64.test": ["64:ff9b::a9fe:a9fe"],
    "metadata-alias.test": ["169.254.169.254"],
}

HOSTILE = [
    # (url, code)
    ("http://127.0.0.1/", "address_not_allowed"),
    ("http://169.254.169.254/latest/meta-data/", "address_not_allowed"),
    ("http://2130706433/", "address_not_allowed"),
    ("http://0177.0.0.1/", "address_not_allowed"),
    ("http://0x7f000001/", "address_not_allowed"),
    ("http://0x7f.1/", "address_not_allowed"),
    ("http://127.1/", "address_not_allowed"),
    ("http://0/", "address_not_allowed"),
    ("http://0.0.0.0:8080/", "address_not_allowed"),
    ("http://[::]/", "address_not_allowed"),
    ("http://[::1]:8080/", "address_not_allowed"),
    ("http://[::ffff:127.0.0.1]/", "address_not_allowed"),
    ("http://[::ffff:169.254.169.254]/", "address_not_allowed"),
    ("http://[64:ff9b::7f00:1]/", "address_not_allowed"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "address_not_allowed"),
    ("http://[fe80::1]/", "address_not_allowed"),
    ("http://[2002:7f00:1::]/", "address_not_allowed"),
    ("http://100.100.100.200/latest/meta-data/", "address_not_allowed"),
    ("http://100.64.0.1/", "address_not_allowed"),
    ("http://10.1.2.3/", "address_not_allowed"),
    ("http://192.168.1.1/", "address_not_allowed"),
    ("http://172.16.0.1/", "address_not_allowed"),
    ("http://224.0.0.1/", "address_not_allowed"),
    ("http://255.255.255.255/", "address_not_allowed"),
    ("http://localhost/", "address_not_allowed"),
    ("http://localhost./", "address_not_allowed"),
    ("http://LOCALHOST:8080/", "address_not_allowed"),
    ("http://api.localhost/", "address_not_allowed"),
    ("http://metadata.google.internal/computeMetadata/v1/", "address_not_allowed"),
    ("http://metadata.google.internal./computeMetadata/v1/", "address_not_allowed"),
    ("http://internal.test/", "address_not_allowed"),
    ("http://mixed.test/", "address_not_allowed"),
    ("http://mapped.test/", "address_not_allowed"),
    ("http://nat64.test/", "address_not_allowed"),
    ("http://metadata-alias.test/", "address_not_allowed"),
    ("http://user@127.0.0.1/", "invalid_url"),
    ("http://example.com@127.0.0.1/", "invalid_url"),
    ("http://user:pass@example.com/", "invalid_url"),
    ("http://[fe80::1%25eth0]/", "invalid_url"),
    ("http://1.2.3.4.5/", "invalid_url"),
    ("http://256.0.0.1/", "invalid_url"),
    ("http://08.0.0.1/", "invalid_url"),
    ("file:///etc/passwd", "scheme_not_allowed"),
    ("gopher://127.0.0.1:70/_GET%20/", "scheme_not_allowed"),
    ("ftp://example.com/file", "scheme_not_allowed"),
    ("dict://127.0.0.1:11211/stat", "scheme_not_allowed"),
    ("javascript:alert(1)", "scheme_not_allowed"),
    ("//example.com/x", "scheme_not_allowed"),
]


@pytest.mark.parametrize("url,code", HOSTILE, ids=[u for u, _ in HOSTILE])
@pytest.mark.asyncio
async def test_hostile_urls_are_refused_without_connecting(url, code):
    dns = FakeDNS(HOSTILE_DNS)
    fetcher = SafeFetcher(resolver=dns, timeout=5)
    assert fetcher.allow_hosts == frozenset()
    with pytest.raises(FetchRefused) as info:
        await fetcher.fetch(url)
    assert info.value.code == code, info.value
    # Internal names are refused by name: they never reach DNS.
    assert not any(name.rstrip(".").endswith(("localhost", "internal")) for name in dns.lookups)


@pytest.mark.parametrize("host,canonical", [
    ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("0x7f.1", "127.0.0.1"), ("127.1", "127.0.0.1"), ("0", "0.0.0.0"), ("10.1", "10.0.0.1"),
    ("[::ffff:127.0.0.1]", "::ffff:7f00:1"), ("Example.COM.", "example.com"), ("8.8.8.8", "8.8.8.8"),
])
def test_parse_host_canonicalises_every_notation(host, canonical):
    assert parse_host(host)[0] == canonical


@pytest.mark.parametrize("address,forbidden", [
    ("8.8.8.8", False), ("93.184.216.34", False), ("2606:4700:4700::1111", False),
    ("127.0.0.1", True), ("169.254.169.254", True), ("100.100.100.200", True), ("fd00:ec2::254", True),
    ("::ffff:8.8.8.8", True), ("64:ff9b::808:808", True), ("::", True), ("ff02::1", True),
    ("192.0.2.1", True), ("240.0.0.1", True),
])
def test_forbidden_reason(address, forbidden):
    assert (forbidden_reason(address) is not None) is forbidden


@pytest.mark.asyncio
async def test_public_name_is_vetted_and_pinned_to_its_addresses():
    dns = FakeDNS({"docs.example.test": [PUBLIC, "2606:4700::6810:84e5"]})
    vetted = await vet_url("http://Docs.Example.Test./guide?q=1", resolver=dns)
    assert vetted.host == "docs.example.test"
    assert vetted.addresses == (PUBLIC, "2606:4700::6810:84e5")
    assert str(vetted.url) == "http://docs.example.test/guide?q=1"
    assert dns.lookups == ["docs.example.test"]


@pytest.mark.asyncio
async def test_unknown_name_is_a_dns_failure():
    with pytest.raises(FetchFailed) as info:
        await SafeFetcher(resolver=FakeDNS({})).fetch("http://nowhere.test/")
    assert info.value.code == "dns_failed"


# --- against the local website ------------------------------------------------------------


@pytest.mark.asyncio
async def test_allowed_local_site_is_fetched():
    async with FakeWebsite() as site:
        fetcher = SafeFetcher(allow_hosts={"127.0.0.1"})
        result = await fetcher.fetch(site.url("/faq"), allowed_types=["text/html"])
        assert result.status == 200
        assert result.content_type == "text/html"
        assert "How do I reset my password?" in result.text()
        assert result.url == site.url("/faq")


@pytest.mark.asyncio
async def test_env_allow_list_is_read_when_no_parameter(monkeypatch):
    async with FakeWebsite() as site:
        with pytest.raises(FetchRefused):
            await SafeFetcher().fetch(site.url("/"))
        monkeypatch.setenv(ALLOW_HOSTS_ENV, "127.0.0.1, site.test")
        assert SafeFetcher().allow_hosts == {"127.0.0.1", "site.test"}
        assert (await SafeFetcher().fetch(site.url("/"))).status == 200


@pytest.mark.asyncio
async def test_allow_list_matches_the_host_as_written_only():
    async with FakeWebsite() as site:
        fetcher = SafeFetcher(allow_hosts={"127.0.0.1"})
        with pytest.raises(FetchRefused) as info:
            await fetcher.fetch(f"http://2130706433:{site.port}/")
        assert info.value.code == "address_not_allowed"
        assert site.requests == []


@pytest.mark.parametrize("path", [
    "/redirect/metadata",
    "/redirect/localhost",
    "/redirect/to?url=http://2130706433/private",
    "/redirect/to?url=http://[::ffff:127.0.0.1]/private",
    "/redirect/to?url=http://internal.test/",
    "/redirect/to?url=file:///etc/passwd",
])
@pytest.mark.asyncio
async def test_redirect_from_allowed_host_to_forbidden_target_is_refused(path):
    async with FakeWebsite() as site:
        fetcher = SafeFetcher(allow_hosts={"127.0.0.1"}, resolver=FakeDNS(HOSTILE_DNS))
        with pytest.raises(FetchRefused) as info:
            await fetcher.fetch(site.url(path))
        assert info.value.code in ("address_not_allowed", "scheme_not_allowed")
        assert len(site.requests) == 1  # the forbidden target was never requested


@pytest.mark.asyncio
async def test_redirect_to_127_0_0_1_is_refused_when_only_the_first_host_is_allowed():
    async with FakeWebsite() as site:
        dns = FakeDNS({"site.test": ["127.0.0.1"]})
        fetcher = SafeFetcher(allow_hosts={"site.test"}, resolver=dns)
        ok = await fetcher.fetch(f"http://site.test:{site.port}/about")
        assert "Acme Inc. has made widgets" in ok.text()
        with pytest.raises(FetchRefused) as info:
            await fetcher.fetch(f"http://site.test:{site.port}/redirect/local")
        assert info.value.code == "address_not_allowed"
        assert "/private" not in site.requested_paths()


@pytest.mark.asyncio
async def test_connection_uses_the_vetted_address_and_keeps_the_host_header():
    async with FakeWebsite() as site:
        dns = FakeDNS({"site.test": ["127.0.0.1"]})
        fetcher = SafeFetcher(allow_hosts={"site.test"}, resolver=dns)
        result = await fetcher.fetch(f"http://site.test:{site.port}/echo")
        echoed = __import__("json").loads(result.body)
        assert echoed["headers"]["Host"] == f"site.test:{site.port}"
        assert dns.lookups == ["site.test"]  # one lookup by us; aiohttp asked nobody


@pytest.mark.asyncio
async def test_https_verifies_the_certificate_for_the_url_name_on_a_pinned_address():
    cert = make_certificate(["site.test"])
    async with FakeWebsite(ssl_context=cert.server_context) as site:
        dns = FakeDNS({"site.test": ["127.0.0.1"]})
        fetcher = SafeFetcher(allow_hosts={"site.test", "127.0.0.1"}, resolver=dns, ssl=cert.client_context)
        result = await fetcher.fetch(f"https://site.test:{site.port}/faq")
        assert result.status == 200 and "shipping" in result.text()
        # The same server reached by IP fails verification: SNI/host checks really use the name.
        with pytest.raises(FetchFailed) as info:
            await fetcher.fetch(f"https://127.0.0.1:{site.port}/faq")
        assert info.value.code == "connect_failed"


@pytest.mark.asyncio
async def test_redirects_are_followed_up_to_the_limit():
    async with FakeWebsite() as site:
        fetcher = SafeFetcher(allow_hosts={"127.0.0.1"})
        result = await fetcher.fetch(site.url("/redirect/chain/5"))
        assert result.url == site.url("/") and len(result.redirects) == 5
        for path in ("/redirect/chain/6", "/redirect/loop"):
            with pytest.raises(FetchRefused) as info:
                await fetcher.fetch(site.url(path))
            assert info.value.code == "too_many_redirects"


@pytest.mark.asyncio
async def test_redirect_can_be_returned_instead_of_followed():
    async with FakeWebsite() as site:
        result = await SafeFetcher(allow_hosts={"127.0.0.1"}).fetch(site.url("/redirect/metadata"),
                                                                     follow_redirects=False)
        assert result.status == 302
        assert result.headers["Location"].startswith("http://169.254.169.254/")


@pytest.mark.asyncio
async def test_size_cap_streamed_and_declared():
    async with FakeWebsite() as site:
        fetcher = SafeFetcher(allow_hosts={"127.0.0.1"})
        for path in ("/big", "/big-declared"):
            with pytest.raises(FetchRefused) as info:
                await fetcher.fetch(site.url(path))
            assert info.value.code == "too_large"
        with pytest.raises(FetchRefused):
            await fetcher.fetch(site.url("/big?size=2000"), max_bytes=1000)
        assert len((await fetcher.fetch(site.url("/big?size=2000"))).body) == 2000


@pytest.mark.asyncio
async def test_total_time_cap():
    async with FakeWebsite() as site:
        with pytest.raises(FetchFailed) as info:
            await SafeFetcher(allow_hosts={"127.0.0.1"}, timeout=0.3).fetch(site.url("/slow"))
        assert info.value.code == "timeout"


@pytest.mark.asyncio
async def test_content_type_allow_list():
    async with FakeWebsite() as site:
        fetcher = SafeFetcher(allow_hosts={"127.0.0.1"})
        with pytest.raises(FetchRefused) as info:
            await fetcher.fetch(site.url("/image.png"), allowed_types=["text/html", "application/pdf"])
        assert info.value.code == "bad_content_type"
        assert (await fetcher.fetch(site.url("/notes.txt"), allowed_types=["text/*"])).status == 200


@pytest.mark.asyncio
async def test_http_errors_and_refused_connections():
    async with FakeWebsite() as site:
        fetcher = SafeFetcher(allow_hosts={"127.0.0.1"})
        for status in (404, 500):
            with pytest.raises(FetchFailed) as info:
                await fetcher.fetch(site.url(f"/status/{status}"))
            assert (info.value.code, info.value.status) == ("http_error", status)
        closed_port = site.port
    with pytest.raises(FetchFailed) as info:
        await fetcher.fetch(f"http://127.0.0.1:{closed_port}/")
    assert info.value.code == "connect_failed"


@pytest.mark.asyncio
async def test_gzip_is_decoded():
    async with FakeWebsite() as site:
        result = await SafeFetcher(allow_hosts={"127.0.0.1"}).fetch(site.url("/gzip"))
        assert "Compressed page body." in result.text()


# --- the guarded session (raw aiohttp, for streaming API clients) ---------------------------


@pytest.mark.asyncio
async def test_guarded_session_refuses_internal_destinations():
    async with FakeWebsite() as site:
        dns = FakeDNS({**HOSTILE_DNS, "site.test": ["127.0.0.1"]})
        async with guarded_session(resolver=dns) as session:
            for url in (site.url("/"), f"http://2130706433:{site.port}/", "http://internal.test/",
                        "http://metadata.google.internal/", "http://[::ffff:127.0.0.1]/", "http://0x7f.1/"):
                with pytest.raises(FetchRefused):
                    async with session.get(url):
                        pass
        async with guarded_session(allow_hosts={"site.test"}, resolver=dns) as session:
            async with session.get(f"http://site.test:{site.port}/echo") as resp:
                assert (await resp.json())["headers"]["Host"] == f"site.test:{site.port}"
            with pytest.raises(FetchRefused):  # redirect hops are vetted too
                async with session.get(f"http://site.test:{site.port}/redirect/local"):
                    pass
        assert "/private" not in site.requested_paths()


@pytest.mark.asyncio
async def test_llm_client_with_a_guarded_session_refuses_a_loopback_base_url():
    from pyapp.providers.llm import LLMError, OpenAICompatibleLLM
    from support.fakes.llm_servers import FakeOpenAIServer

    async with FakeOpenAIServer() as srv:
        llm = OpenAICompatibleLLM(srv.base_url, "k", "m", session_factory=guarded_session)
        with pytest.raises(LLMError) as info:
            async for _ in llm.stream_chat([{"role": "user", "content": "hi"}]):
                pass
        assert info.value.code == "address_not_allowed" and srv.requests == []
        allowed = OpenAICompatibleLLM(srv.base_url, "k", "m",
                                      session_factory=lambda: guarded_session(allow_hosts={"127.0.0.1"}))
        assert "".join([d async for d in allowed.stream_chat([{"role": "user", "content": "hi"}])])
