"""Shared field types: the text rule and the size limits people's input is held to.

The rules live in SQL (sql/15_text.sql: parley.unsafe_text, parley.message_body_max; lead
fields: parley.check_lead_fields); these are their copies for early, field-level 422s, and
tests/foundation/test_text_rules.py checks every one against the database.

Decision: text that breaks the rule is refused, never stripped (a silently changed message or
name would mislead whoever reads it). Refused everywhere: NUL and unpaired surrogates (Postgres
cannot store them), C0/C1 control characters and bidirectional embeddings, overrides and
isolates (U+202A-U+202E, U+2066-U+2069). "Text" keeps tab, newline and carriage return;
"line" (names of people, workspaces, chatbots and API keys, emails, phones, titles, the keys of
a lead's custom fields) keeps none.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field, JsonValue

# The same classes as parley.unsafe_text (NUL added: Postgres refuses it before any rule could).
UNSAFE_IN_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
UNSAFE_IN_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

MESSAGE_BODY_MAX = 4000  # parley.message_body_max('visitor' | 'agent' | 'note')
BOT_MESSAGE_BODY_MAX = 16000  # parley.message_body_max('bot' | 'system'), the messages.body CHECK
LEAD_NAME_MAX = 200  # parley.check_lead_fields
LEAD_EMAIL_MAX = 320
LEAD_PHONE_MAX = 50
SYSTEM_TEXT_MAX = 2000  # parley.system_texts.body CHECK (migration 0029)


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (no unpaired surrogates)") from None
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def storable(value: str) -> str:
    """What Postgres can store at all (passwords, tokens: anything not shown to people)."""
    return _encodable(value)


def text(value: str) -> str:
    """The text rule for multi-line text people read (messages, lead names): see the module."""
    _encodable(value)
    if UNSAFE_IN_TEXT.search(value):
        raise ValueError("must not contain control or text-direction characters")
    return value


def line(value: str) -> str:
    """The text rule for one line people read (names, emails, phones, titles): no tab or newline either."""
    _encodable(value)
    if UNSAFE_IN_LINE.search(value):
        raise ValueError("must not contain control or text-direction characters")
    return value


def custom(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    """A lead's custom fields (parley.check_lead_fields): every key is a line, every string value text."""

    def walk(item: JsonValue) -> None:
        if isinstance(item, str):
            text(item)
        elif isinstance(item, list):
            for inner in item:
                walk(inner)
        elif isinstance(item, dict):
            for key, inner in item.items():
                line(key)
                walk(inner)

    walk(value)
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


MessageBody = Annotated[
    str, Field(min_length=1, max_length=MESSAGE_BODY_MAX), AfterValidator(text), AfterValidator(_not_blank)
]
LeadName = Annotated[str, Field(max_length=LEAD_NAME_MAX), AfterValidator(text)]
LeadEmail = Annotated[str, Field(max_length=LEAD_EMAIL_MAX), AfterValidator(line)]
LeadPhone = Annotated[str, Field(max_length=LEAD_PHONE_MAX), AfterValidator(line)]
LeadCustom = Annotated[dict[str, JsonValue], AfterValidator(custom)]
SystemTextBody = Annotated[
    str, Field(min_length=1, max_length=SYSTEM_TEXT_MAX), AfterValidator(text), AfterValidator(_not_blank)
]


# Bounded text fields whose limits are the API's own (chatbot config, search queries): the
# text rule plus a length. Annotated aliases, not a factory, so type checkers see plain str.
Text32 = Annotated[str, Field(max_length=32), AfterValidator(text)]
Text100 = Annotated[str, Field(max_length=100), AfterValidator(text)]
Text200 = Annotated[str, Field(max_length=200), AfterValidator(text)]
Text500 = Annotated[str, Field(max_length=500), AfterValidator(text)]
Text8000 = Annotated[str, Field(max_length=8000), AfterValidator(text)]
Name100 = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(line)]  # chatbots: parley.check_name_text
