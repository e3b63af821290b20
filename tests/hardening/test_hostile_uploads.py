"""Knowledge uploads that bench/hostile.py found hurting the whole server.

- A 1.1 MB HTML file of 100,000 nested <div> took 40 s to parse (the parser's time grows with the
  square of the depth), on the event loop: every request of every workspace waited meanwhile.
  Markup nested deeper than 20,000 elements is refused before parsing (about a second at most), and
  extraction and chunking run off the event loop.
- A file whose multipart part header is longer than 8 KB (a 10 KB filename) was a 500.
"""
from __future__ import annotations

import aiohttp
import pytest
from pyapp.knowledge import extract as ex


@pytest.mark.parametrize("html", [
    b"<div>" * 100_000 + b"text" + b"</div>" * 100_000,
    b"<b>" * 1_000_000,
    b"<section><span>" * 10_001 + b"text",
])
def test_markup_deeper_than_browsers_nest_is_refused_before_parsing(html):
    with pytest.raises(ex.ExtractError) as caught:
        ex.extract(html, content_type="text/html")
    assert caught.value.code == "too_deep"


@pytest.mark.parametrize("html, text", [
    (b"<article>" * 2000 + b"deep text" + b"</article>" * 2000, "deep text"),  # 20,000: tests/providers/test_extract
    (b"<ul>" + b"<li>unclosed item " * 2000 + b"</ul>", "- unclosed item"),
    (b"<p>unclosed paragraph " * 2000 + b"<br><img src=x><hr>" * 2000, "unclosed paragraph"),
    (b"<table>" + b"<tr><td>cell" * 2000 + b"</table>", "cell"),
    (b"<script>if (a<b) { s = '<div>'.repeat(9999) }</script><p>after the script</p>", "after the script"),
])
def test_ordinary_markup_still_reads(html, text):
    assert text in ex.extract(html, content_type="text/html").text


async def _upload(server, tenant, filename: str, data: bytes):
    form = aiohttp.FormData()
    form.add_field("file", data, filename=filename, content_type="text/html")
    return await server.call("POST", f"/api/chatbots/{tenant['chatbot_id']}/knowledge/upload", data=form,
                             token=tenant["access_token"])


async def test_deep_html_upload_is_a_422(server, tenant):
    status, body = await _upload(server, tenant, "deep.html", b"<div>" * 100_000 + b"text" + b"</div>" * 100_000)
    assert (status, body["error"]["code"]) == (422, "too_deep"), body


async def test_a_part_header_past_8_kb_is_a_400(server, tenant):
    status, body = await _upload(server, tenant, "a" * 10_000 + ".html", b"<p>hello</p>")
    assert (status, body["error"]["code"]) == (400, "malformed_body"), body


@pytest.mark.parametrize("body", [
    # a part that never ends: aiohttp's "Reading after EOF"
    b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nabc',
    # a title in a charset that does not exist
    b'--b\r\nContent-Disposition: form-data; name="title"\r\nContent-Type: text/plain; charset=nope\r\n\r\nx\r\n--b--\r\n',
])
async def test_malformed_multipart_is_a_400(server, tenant, body):
    """Found by bench/hostile.py: both were 500s."""
    async with server.http.post(server.base_url + f"/api/chatbots/{tenant['chatbot_id']}/knowledge/upload", data=body,
                                headers={"Authorization": f"Bearer {tenant['access_token']}",
                                         "Content-Type": "multipart/form-data; boundary=b"}) as resp:
        assert (resp.status, (await resp.json())["error"]["code"]) == (400, "malformed_body")


async def test_a_nested_multipart_part_is_no_server_error(server, tenant):
    """A part that is itself multipart has no field name: it was an AttributeError (500). aiohttp reads
    this one's inner body to the end of the request, so the file after it is lost: 400 malformed_body."""
    body = (b'--b\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--c\r\n\r\nx\r\n--c--\r\n'
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nThe shop opens at nine.\r\n'
            b'--b--\r\n')
    async with server.http.post(server.base_url + f"/api/chatbots/{tenant['chatbot_id']}/knowledge/upload", data=body,
                                headers={"Authorization": f"Bearer {tenant['access_token']}",
                                         "Content-Type": "multipart/form-data; boundary=b"}) as resp:
        assert (resp.status, (await resp.json())["error"]["code"]) == (400, "malformed_body")
