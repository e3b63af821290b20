"""The first frame of a socket (agent or visitor): a hello, within a time limit."""

from __future__ import annotations

from typing import TypeVar

from aiohttp import WSMsgType, web
from pydantic import BaseModel, ValidationError

from pyapp.context import json_dumps
from pyapp.errors import ApiError
from pyapp.inputs import parse_json

Hello = TypeVar("Hello", bound=BaseModel)
_GONE = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


async def read_hello(ws: web.WebSocketResponse, model: type[Hello], timeout: float) -> Hello | None:
    """The validated hello; None when there is none, the client told why and the socket closed
    (4408 after `timeout` seconds, 4400 for anything else; nothing to say to a closed socket)."""
    try:
        msg = await ws.receive(timeout=timeout)
    except TimeoutError:
        await _refuse(ws, "hello_timeout", "Send hello first.", 4408, b"hello timeout")
        return None
    if msg.type != WSMsgType.TEXT:
        if msg.type not in _GONE:
            await _refuse(ws, "invalid_frame", "The first frame must be hello.", 4400, b"hello expected")
        return None
    try:
        return model.model_validate(parse_json(msg.data))
    except (ValidationError, ApiError):
        await _refuse(ws, "hello_expected", "The first frame must be a valid hello.", 4400, b"hello expected")
        return None


async def _refuse(ws: web.WebSocketResponse, code: str, message: str, close_code: int, reason: bytes) -> None:
    await ws.send_str(json_dumps({"type": "error", "code": code, "message": message}))
    await ws.close(code=close_code, message=reason)
