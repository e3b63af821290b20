"""Real Chromium, real server, the run's PostgreSQL stopped: the visitor's message meets a socket
closed with 1013 (database unavailable); the widget says it is reconnecting, keeps the message
pending and its conversation, retries with its backoff, and once PostgreSQL is back reconnects by
itself and delivers the message exactly once."""
from __future__ import annotations

import re

from browser.test_visitor_speaks import _shop
from playwright.sync_api import expect
from support.database import start_postgres, stop_postgres


def test_the_widget_rides_out_a_database_outage(server_thread, widget_page, widget_build, pg_server):
    srv = server_thread
    owner, bot, runner, shop = _shop(srv)
    try:
        w = widget_page(shop, "/pricing")
        w.open()
        w.send("Before the outage")
        w.expect_bubble("visitor", "Before the outage")
        key = f"parley:{bot['public_key']}:cid"
        cid = w.page.wait_for_function(f"localStorage.getItem('{key}')").json_value()
        reopened = []  # sockets the widget opens from here on
        w.page.on("websocket", lambda ws: reopened.append(ws.url))

        options = stop_postgres(pg_server)
        try:
            w.send("Written during the outage")
            expect(w.q(".pl-state")).not_to_be_empty(timeout=15_000)  # "reconnecting"
            pending = w.bubbles("visitor").filter(has_text="Written during the outage")
            expect(pending).to_have_class(re.compile(r"\bpl-pending\b"))
            expect(pending).not_to_have_class(re.compile(r"\bpl-failed\b"))
        finally:
            start_postgres(pg_server, options)

        expect(w.q(".pl-state")).to_be_empty(timeout=45_000)
        expect(w.bubbles("visitor").last).not_to_have_class(re.compile(r"\bpl-pending\b"), timeout=15_000)
        assert w.page.evaluate(f"localStorage.getItem('{key}')") == cid  # the same conversation
        owner_client = srv.server.client(owner["access_token"])
        transcript = srv.run(owner_client.get_conversation(cid))
        bodies = [m["body"] for m in transcript["messages"] if m["author"] == "visitor"]
        assert bodies == ["Before the outage", "Written during the outage"]
        assert reopened and all(u.endswith("/ws/visitor") for u in reopened)  # it reconnected by itself
    finally:
        srv.run(runner.cleanup())
