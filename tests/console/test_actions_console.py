"""The console's conversation buttons are the actions registry's (sql/57_actions.sql): only the
actions valid now are drawn, each posts to the one dispatcher, and its refusals are shown beside
the actions. Over plain HTTP with the session cookie and CSRF."""
from __future__ import annotations

import re

from support.console import make_chatbot, widget_session


def _buttons(html: str) -> list[str]:
    """The action keys the pane offers (forms and the composer's action buttons)."""
    forms = re.findall(r'action="/console/conversations/[0-9a-f-]{36}/(\w+)" (?:class="\w+" )?data-action=', html)
    composer = re.findall(r'formaction="/console/conversations/[0-9a-f-]{36}/(\w+)"', html)
    return [k for k in forms if k != "reply"] + composer


async def test_buttons_follow_the_state_and_go_through_the_registry(server, signup, console_client):
    owner = await signup(server)
    bot = await make_chatbot(server, owner["access_token"])
    conv = (await widget_session(server, bot["public_key"]))["conversation_id"]
    c = console_client()
    await c.sign_in(owner["email"], owner["password"])
    page = f"/console/conversations/{conv}"
    status, html, _ = await c.get(page)
    assert status == 200 and _buttons(html) == ["claim", "close", "assign", "codename", "note"]
    assert ">Claim</button>" in html and "Set codename" in html and 'maxlength="64"' in html

    status, html, resp = await c.post(f"{page}/codename", {"codename": "Blue Fox", "tab": "all"})
    assert status == 200 and str(resp.url).endswith("done=codename") and "Codename set." in html
    assert 'value="Blue Fox"' in html
    status, html, _ = await c.post(f"{page}/codename", {"codename": "Fox\u202eHound"})
    assert status == 422 and "must not contain" in html  # the text rule, before SQL
    status, html, _ = await c.post(f"{page}/codename", {"codename": "x" * 65})
    assert status == 422 and "at most 64 characters" in html  # SQL's rule, shown beside the actions

    status, html, _ = await c.post(f"{page}/assign", {"user_id": owner["user_id"]})
    assert status == 200 and "Assigned." in html and "With an agent" in html
    assert _buttons(html) == ["release", "close", "assign", "codename", "note"]
    status, html, _ = await c.post(f"{page}/assign", {"user_id": "nobody"})
    assert status == 422 and "user_id must be uuid" in html

    status, html, _ = await c.post(f"{page}/close", {})
    assert status == 200 and _buttons(html) == ["reopen", "codename", "note"]
    assert "Send reply" not in html  # a closed conversation takes notes, not replies
    status, html, _ = await c.post(f"{page}/claim", {})  # a stale button
    assert status == 409 and "Claim is not possible while the conversation is closed" in html
    status, html, _ = await c.post(f"{page}/note", {"body": "Refund sent"})
    assert status == 200 and "Refund sent" in html
    for key in ("human", "rate", "new", "explode"):  # not console actions
        status, html, _ = await c.post(f"{page}/{key}", {})
        assert status == 404, key
