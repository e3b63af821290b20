"""Client JSON as every surface reads it (REST bodies, socket frames, console posts): one parser, one set of limits.

`json.loads` alone lets through what PostgreSQL or the interpreter later refuses with a 500:
nesting deep enough for a RecursionError, U+0000 (text and jsonb cannot hold it, SQLSTATE
22P05), lone surrogates (they cannot be encoded), NaN/Infinity (not JSON; jsonb refuses them)
and integers past int64 (no column holds them). They are refused here, before any handler runs:
rejected rather than stripped, since a silently changed key, email or message would store
something the client never sent.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pyapp.errors import ApiError

# What aiohttp's form and multipart readers raise for a body they cannot read: no or a bad boundary,
# a part that never ends ("Reading after EOF"), a charset that does not exist (LookupError). Every
# reader of a form or multipart body answers these as a 400, never a 500.
MALFORMED_BODY: tuple[type[Exception], ...] = (ValueError, LookupError, AssertionError)

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_DEPTH = 32  # arrays/objects inside each other; Parley's deepest legitimate input is ~5
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _path(node: tuple | None) -> str:
    parts = []
    while node is not None:
        key, node = node
        parts.append(str(key))
    return ".".join(reversed(parts)) or "(body)"


def _refuse(node: tuple | None, message: str) -> ApiError:
    """The REST API's 422 shape (as pydantic's errors are reported), naming the field."""
    field = _path(node)
    return ApiError(422, "validation_failed", f"{field}: {message}", {"fields": [{"field": field, "message": message}]})


def storable(text: str) -> bool:
    """True when a string can be stored and sent back as UTF-8 (no NUL, no unpaired surrogate)."""
    return _UNSTORABLE.search(text) is None


def check_value(data: Any) -> None:
    """Raise ApiError(422) if a parsed JSON value holds something no column can store."""
    stack: list[tuple[Any, int, tuple | None]] = [(data, 0, None)]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            if _UNSTORABLE.search(value):
                raise _refuse(path, "text must not contain NUL characters or unpaired surrogates")
        elif isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise _refuse(path, "numbers must be finite")
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise _refuse(path, "integers are limited to 64 bits")
        elif isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise ApiError(400, "too_deep", f"JSON nested deeper than {MAX_DEPTH} levels.")
            if isinstance(value, dict):
                for key, item in value.items():
                    if _UNSTORABLE.search(key):
                        raise _refuse(path, "keys must not contain NUL characters or unpaired surrogates")
                    stack.append((item, depth + 1, (key, path)))
            else:
                stack.extend((item, depth + 1, (i, path)) for i, item in enumerate(value))


def parse_json(raw: bytes | str, *, empty: Any = ..., check: bool = True) -> Any:
    """Parse client JSON or raise ApiError: 400 invalid_json / too_deep, 422 validation_failed.

    `empty` is returned for a blank body when given (REST bodies report missing fields instead).
    `check=False` leaves the 422 checks to the caller (`check_value`), which may want to answer
    in its own terms (the visitor socket's `invalid_frame` carrying the message's client_id).
    Nesting is limited either way.
    """
    if empty is not ... and not raw.strip():
        return empty
    try:
        data = json.loads(raw, parse_constant=_no_constants)
    except RecursionError:
        raise ApiError(400, "too_deep", f"JSON nested deeper than {MAX_DEPTH} levels.") from None
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "invalid_json", "The body is not valid JSON.") from None
    if check:
        check_value(data)
    else:
        _check_depth(data)
    return data


def _check_depth(data: Any) -> None:
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise ApiError(400, "too_deep", f"JSON nested deeper than {MAX_DEPTH} levels.")
            stack.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
