"""The signed-in person's own account: e-mail verification (and e-mail change), profile, password, deletion.

The rules live in sql/27_account.sql (SECURITY DEFINER, filtered by the session's user); leaving a
workspace is DELETE /api/members/{your id}. Verification never blocks sign-in: the console shows
a banner until the address is verified. The current password is verified here (argon2) against
the hash SQL hands out, and SQL counts the outcome like a sign-in.
"""

from __future__ import annotations

import uuid

from pyapp.api import Call, api
from pyapp.db import acquire
from pyapp.errors import ApiError
from pyapp.security import new_opaque_token, sha256

from .common import VERIFY_PATH, auth_tx, link, passwords, send_later
from .models import (
    AcceptedOut,
    DeleteAccountIn,
    PasswordChangedOut,
    PasswordChangeIn,
    ProfileIn,
    ProfileOut,
    UserOut,
    VerifyIn,
)

TAGS = ("account",)


async def send_verification(call: Call, user_id: uuid.UUID, session_id: uuid.UUID, new_email: str | None = None) -> str:
    """Store a verification link for the person (their address, or a new one to change to) and mail it.

    Returns the address it goes to. SQL refuses an already verified address, a taken one, and
    more than one link a minute."""
    token, token_hash = new_opaque_token()
    async with acquire(call.pool) as conn, conn.transaction():
        await conn.execute("SELECT parley.begin_auth_request($1, $2, $3, $4)", *_context(call), user_id, session_id)
        target = await conn.fetchval("SELECT parley.request_email_verification($1, $2)", token_hash, new_email)
    url = link(call, VERIFY_PATH, token)
    intro = (
        "Confirm that this is the new email address of your Parley account"
        if target["change"]
        else "Confirm the email address of your Parley account"
    )
    send_later(
        call,
        target["email"],
        "Confirm your email address for Parley",
        f"Hello {target['name'] or target['email']},\n\n{intro} by opening\n\n  {url}\n\n"
        f"The link works once, for 24 hours. If it wasn't you, ignore this email.\n",
        url,
    )
    return target["email"]


def _context(call: Call) -> tuple:
    from pyapp.context import REQUEST_ID, client_ip

    return client_ip(call.request), call.request.get(REQUEST_ID)


def _signed_in(call: Call) -> tuple[uuid.UUID, uuid.UUID]:
    if call.user_id is None or call.session_id is None:
        raise ApiError(401, "unauthenticated", "Sign in first.")
    return call.user_id, call.session_id


@api.route("POST", "/api/auth/verify-email", auth="public", body=VerifyIn, response=UserOut, tags=TAGS)
async def verify_email(call: Call):
    """Use an emailed verification link: the address is verified (or, for an e-mail change, becomes yours)."""
    async with auth_tx(call) as conn:
        user = await conn.fetchval("SELECT parley.verify_email($1)", sha256(call.body.token))
    return UserOut.model_validate(user)


@api.route("POST", "/api/me/verification", auth="user", response=AcceptedOut, status=202, tags=TAGS)
async def resend_verification(call: Call):
    """Email a new verification link to your address (409 when already verified; one a minute)."""
    await send_verification(call, *_signed_in(call))
    return AcceptedOut()


@api.route("PATCH", "/api/me", auth="user", body=ProfileIn, response=ProfileOut, tags=TAGS)
async def update_profile(call: Call):
    """Change your display name; a new email address is mailed a link and changes only once it is opened."""
    body: ProfileIn = call.body
    user_id, session_id = _signed_in(call)
    async with auth_tx(call, signed_in=True) as conn:
        if body.name is not None:
            user = await conn.fetchval("SELECT parley.update_profile($1)", body.name)
        else:
            user = (await conn.fetchval("SELECT parley.get_me(NULL)"))["user"]
    pending = None
    if body.email is not None and body.email.lower() != user["email"].lower():
        pending = await send_verification(call, user_id, session_id, body.email)
    return ProfileOut(user=user, pending_email=pending)


async def _check_password(call: Call, password: str) -> tuple[str, bool]:
    """The current password hash and whether `password` matches it (recorded by SQL in the next step)."""
    async with auth_tx(call, signed_in=True) as conn:
        current = await conn.fetchval("SELECT parley.begin_password_check()")
    return current, await passwords(call).verify(current, password)


def _refuse_wrong_password() -> ApiError:
    return ApiError(403, "wrong_password", "The current password is not right.")


@api.route("POST", "/api/me/password", auth="user", body=PasswordChangeIn, response=PasswordChangedOut, tags=TAGS)
async def change_password(call: Call):
    """Change your password (the current one is required); every other session of yours ends."""
    body: PasswordChangeIn = call.body
    current, ok = await _check_password(call, body.current_password)
    new_hash = await passwords(call).hash(body.new_password)
    async with auth_tx(call, signed_in=True) as conn:
        result = await conn.fetchval("SELECT parley.change_password($1, $2, $3)", current, ok, new_hash)
    if result["status"] != "ok":
        raise _refuse_wrong_password()
    return PasswordChangedOut(sessions_ended=result["sessions_ended"])


@api.route("POST", "/api/me/delete", auth="user", body=DeleteAccountIn, status=204, tags=TAGS)
async def delete_account(call: Call):
    """Delete your account (password required); refused while you are a workspace's only owner."""
    current, ok = await _check_password(call, call.body.password)
    async with auth_tx(call, signed_in=True) as conn:
        result = await conn.fetchval("SELECT parley.delete_account($1, $2)", current, ok)
    if result["status"] != "ok":
        raise _refuse_wrong_password()
