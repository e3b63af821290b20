"""Accounts surface: sign-up/sign-in and sessions, the person's own account, workspaces, invites, members, API keys, audit.

Importing the package declares its routes on `pyapp.api.api`; `setup(app)` adds the password
hasher and the mailer the handlers use.
"""

from __future__ import annotations

from . import profile, sessions, workspace  # noqa: F401  (route declarations)
from .common import setup

__all__ = ["setup"]
