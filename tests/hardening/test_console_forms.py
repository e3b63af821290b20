"""Console forms with bodies aiohttp cannot decode (found by bench/hostile.py's console probe: 88 of 672
hostile posts over 21 signed-in forms were 500s, all of them a charset that does not exist)."""
from __future__ import annotations

import pytest
from support.accounts import TEST_PASSWORD
from support.console import console_client  # noqa: F401 (fixture)


@pytest.mark.parametrize("content_type, body", [
    ("application/x-www-form-urlencoded; charset=nope", "_csrf={csrf}&name=Renamed"),
    ("multipart/form-data; boundary=b",
     '--b\r\nContent-Disposition: form-data; name="_csrf"\r\n\r\n{csrf}\r\n--b\r\n'
     'Content-Disposition: form-data; name="name"\r\nContent-Type: text/plain; charset=nope\r\n\r\nx\r\n--b--\r\n'),
    ("multipart/form-data; boundary=b", '--b\r\nContent-Disposition: form-data; name="_csrf"\r\n\r\n{csrf}\r\n--b\r\n'
                                        'Content-Disposition: form-data; name="name"\r\n\r\nnever ends'),
])
async def test_a_form_in_a_charset_that_does_not_exist_is_a_400(server, signup, console_client, content_type, body):  # noqa: F811  pytest fixture imported above, injected by name
    owner = await signup(server)
    console = console_client()
    await console.sign_in(owner["email"], TEST_PASSWORD)
    await console.get("/console/settings")
    async with console.http.post(server.base_url + "/console/settings", data=body.format(csrf=console.csrf).encode(),
                                 headers={"Content-Type": content_type, "Accept": "application/json"}) as resp:
        assert (resp.status, (await resp.json())["error"]["code"]) == (400, "invalid_form")
