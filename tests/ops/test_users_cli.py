"""`parley users reset-password EMAIL`: an operator recovers an account on an install without mail.
The link goes to the terminal only, works once, and ends the account's sessions like any reset."""
from urllib.parse import parse_qs, urlsplit

from support.cli import run_parley as _cli


async def test_reset_password_link_recovers_the_account(server, settings, signup, owner_conn):
    user = await signup(server)
    code, out, err = await _cli(settings, "users", "reset-password", user["email"].upper())
    assert code == 0, err
    url = urlsplit(out.strip())
    assert (url.scheme, url.netloc, url.path) == ("https", "chat.example", "/console/reset-password")
    token = parse_qs(url.query)["token"][0]
    assert token not in err
    status, _ = await server.call("POST", "/api/auth/reset", json={"token": token, "password": "a new long password"})
    assert status == 204
    status, _ = await server.call("POST", "/api/auth/login", json={"email": user["email"], "password": user["password"]})
    assert status == 401
    status, _ = await server.call("POST", "/api/auth/login",
                                  json={"email": user["email"], "password": "a new long password"})
    assert status == 200
    # Once only.
    status, body = await server.call("POST", "/api/auth/reset", json={"token": token, "password": "yet another one 1"})
    assert (status, body["error"]["code"]) == (400, "invalid_reset_token")
    assert await owner_conn.fetchval(
        "SELECT count(*) FROM parley.audit_log WHERE action = 'auth.password_reset_requested'") >= 1


async def test_unknown_email_says_so(settings):
    code, out, err = await _cli(settings, "users", "reset-password", "nobody@example.test")
    assert code == 1 and out == "" and "no account" in err
