"""Conversation tests: a workspace made in SQL, the server started when a test calls the API
(`support.workspace`)."""
from support.workspace import _workspaces, make_workspace, ws  # noqa: F401 (fixtures)
