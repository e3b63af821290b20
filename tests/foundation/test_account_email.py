"""The account e-mail rule has one home, parley.is_account_email (sql/27_account.sql): the API's
Email type (pyapp/accounts/models.py) answers the same, and sign-up and an e-mail change refuse in
SQL, whoever calls them, an address the rule refuses."""

from __future__ import annotations

import asyncpg
import pytest
from pyapp.accounts.models import Email
from pydantic import TypeAdapter, ValidationError

SAMPLES = [
    "ana@example.test", "A.N.A+tag@Example.TEST", "x@y", "üñï@çødé.test", "a@b@c", "@example.test", "ana@",
    "ana", "an a@example.test", "ana@exa\tmple.test", "ana@exa\nmple.test", "ana\u202e@example.test",
    "ana\x07@example.test", "ana\u2066@example.test", "a" * 307 + "@example.test", "a" * 308 + "@example.test",
    "", "@",
]


def _python_accepts(value: str) -> bool:
    try:
        TypeAdapter(Email).validate_python(value)
    except ValidationError:
        return False
    return True


async def test_python_email_rule_is_sqls(owner_conn):
    sql = await owner_conn.fetchval(
        "SELECT array_agg(coalesce(parley.is_account_email(e), false) ORDER BY i)"
        " FROM unnest($1::text[]) WITH ORDINALITY u(e, i)", SAMPLES)
    assert [(value, accepted) for value, accepted in zip(SAMPLES, sql, strict=True) if accepted != _python_accepts(value)] == []
    assert sum(sql) == 5  # the first four and the 320-character address


@pytest.mark.parametrize("email", ["ana", "an a@example.test", "ana\u202e@example.test", "a" * 308 + "@example.test"])
async def test_sign_up_and_email_change_refuse_what_the_rule_refuses(owner_conn, rows, email):
    person = await rows.tenant()
    calls = [
        ("SELECT parley.sign_up($1, 'not-a-hash', 'X', NULL, NULL, '\\x01', 60)", (email,)),
        ("SELECT parley.begin_auth_request('127.0.0.1', 'r', $2, $3), parley.request_email_verification('\\x02', $1)",
         (email, person.user_id, person.session_id)),
    ]
    for sql, args in calls:
        with pytest.raises(asyncpg.PostgresError) as exc:
            async with owner_conn.transaction():
                await owner_conn.execute(sql, *args)
        assert (exc.value.sqlstate, exc.value.hint) == ("PT422", "invalid_email"), sql
    async with owner_conn.transaction():  # the same calls with a good address go through
        await owner_conn.execute("SELECT parley.begin_auth_request('127.0.0.1', 'r', $1, $2),"
                                 " parley.request_email_verification('\\x02', 'ana.new@example.test')",
                                 person.user_id, person.session_id)


async def test_an_address_taken_meanwhile_is_not_taken_over(owner_conn, rows):
    person = await rows.tenant()
    wanted = f"wanted-{person.user_id.hex[:8]}@example.test"

    async def request(token: bytes, email: str) -> None:
        async with owner_conn.transaction():
            await owner_conn.execute("SELECT parley.begin_auth_request('127.0.0.1', 'r', $1, $2),"
                                     " parley.request_email_verification($3, $4)",
                                     person.user_id, person.session_id, token, email)

    await request(b"\x03", wanted)
    await owner_conn.execute("SELECT parley.sign_up($1, 'not-a-hash', 'Y', NULL, NULL, '\\x04', 60)", wanted.upper())
    with pytest.raises(asyncpg.PostgresError) as exc:
        await owner_conn.execute("SELECT parley.verify_email('\\x03')")
    assert (exc.value.sqlstate, exc.value.hint) == ("PT409", "email_taken")
    # Their own address in other letters is still theirs (a link to it, as an earlier change left it).
    own = await owner_conn.fetchval(
        "INSERT INTO parley.email_verifications (user_id, email, token_hash, expires_at)"
        " SELECT id, upper(email), '\\x05', now() + interval '1 hour' FROM parley.users WHERE id = $1"
        " RETURNING email", person.user_id)
    assert (await owner_conn.fetchval("SELECT parley.verify_email('\\x05')"))["email"] == own
