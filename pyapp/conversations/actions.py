"""The actions registry over REST: what the caller may do to a conversation now, and doing it.

The catalog, its rules (roles, states, input) and the dispatcher are SQL's (sql/57_actions.sql:
parley.conversation_actions, parley.perform_action); these routes only pass the input through.
The older per-action routes (claim, release, close, …) stay as they were.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pyapp.api import Call, api
from pyapp.conversations.routes import ConversationOut
from pyapp.errors import ApiError
from pyapp.inputs import check_value

TAGS = ("conversations",)
SURFACE = "api"
ACTION_KEY = re.compile(r"^[a-z][a-z_]{1,31}$")


class ActionOut(BaseModel):
    key: str
    label: str
    input: dict[str, Any] = Field(description="JSON Schema of the action's input (the POST body)")


class ActionsOut(BaseModel):
    actions: list[ActionOut]


class ActionInput(BaseModel):
    """The action's input; its schema is the action's `input` in the list (most take none)."""

    model_config = ConfigDict(extra="allow")


class ActionDone(BaseModel):
    action: str
    status: str
    conversation: ConversationOut
    actions: list[ActionOut] = Field(description="what the caller may do now")


@api.route("GET", "/api/conversations/{conversation_id}/actions", response=ActionsOut, tags=TAGS)
async def list_actions(call: Call):
    """The actions you may take on this conversation now, with their input schemas."""
    async with call.tx() as conn:
        actions = await conn.fetchval(
            "SELECT parley.conversation_actions($1, $2)", call.uuid_param("conversation_id"), SURFACE
        )
    return {"actions": actions}


@api.route(
    "POST",
    "/api/conversations/{conversation_id}/actions/{key}",
    body=ActionInput,
    response=ActionDone,
    tags=TAGS,
)
async def perform_action(call: Call):
    """Do one action (its key from the list) with its input as the body: 404 unknown, 403 not yours,
    422 bad input, 409 not in this state."""
    key = call.param("key")
    if not ACTION_KEY.match(key):  # the catalog's key rule (migration 0033); anything else names no action
        raise ApiError(404, "unknown_action", "There is no such action here.")
    data = call.body.model_extra or {}
    check_value(data)
    async with call.tx() as conn:
        return await conn.fetchval(
            "SELECT parley.perform_action($1, $2, $3, $4)", call.uuid_param("conversation_id"), key, data, SURFACE
        )
