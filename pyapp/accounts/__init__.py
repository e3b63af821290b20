"""Accounts surface: sign-up/sign-in and sessions, the person's own account, workspaces, invites, members, API keys, audit.

Importing the package declares its routes on `pyapp.api.api`; `setup(app)` adds the password
hasher, the mailer and the OpenID Connect client the handlers use.
"""

from __future__ import annotations

from aiohttp import web

from . import common, profile, sessions, sso, workspace  # noqa: F401  (route declarations)


def setup(app: web.Application) -> None:
    common.setup(app)
    sso.setup(app)


__all__ = ["setup"]
