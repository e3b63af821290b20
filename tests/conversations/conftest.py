"""Conversation tests: a workspace reached through the real server (`support.workspace`)."""
from support.workspace import make_workspace, ws  # noqa: F401 (fixtures)
