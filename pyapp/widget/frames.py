"""The frames a visitor may send (docs/protocol.md), validated before anything touches the database."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pyapp import types
from pyapp.inputs import INT64_MAX


def _clean_text(value: str | None) -> str | None:
    """Every string of a frame must be storable; the fields people read are held to the text
    rule below (pyapp/types.py, the copy of SQL's), the same as over REST."""
    return None if value is None else types.storable(value)


class _Frame(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @field_validator("*", mode="before")
    @classmethod
    def _text(cls, v):
        return _clean_text(v) if isinstance(v, str) else v


class HelloFrame(_Frame):
    type: Literal["hello"]
    token: str = Field(min_length=10, max_length=4096)
    last_seen_id: int = Field(default=0, ge=0, le=INT64_MAX)
    # Where the visitor is: recorded on the conversation if the visitor starts one on this socket.
    page_url: str | None = Field(default=None, max_length=2048)
    referrer: str | None = Field(default=None, max_length=2048)
    locale: str | None = Field(default=None, max_length=35)


class MessageFrame(_Frame):
    type: Literal["message"]
    client_id: str = Field(min_length=1, max_length=100)
    body: types.MessageBody


class TypingFrame(_Frame):
    type: Literal["typing"]
    on: bool


class ReadFrame(_Frame):
    type: Literal["read"]
    message_id: int = Field(ge=1, le=INT64_MAX)


class HumanFrame(_Frame):
    type: Literal["human"]


class LeadFrame(_Frame):
    model_config = ConfigDict(extra="allow")
    type: Literal["lead"]
    name: types.LeadName | None = None
    email: types.LeadEmail | None = None
    phone: types.LeadPhone | None = None

    @model_validator(mode="after")
    def _custom(self) -> LeadFrame:
        """The form's other fields are the lead's custom fields: the same rule as over REST."""
        types.custom(dict(self.model_extra or {}))
        return self


class FeedbackFrame(_Frame):
    type: Literal["feedback"]
    message_id: int = Field(ge=1, le=INT64_MAX)
    value: Literal["up", "down"]
    comment: str = Field(default="", max_length=2000)


class RatingFrame(_Frame):
    type: Literal["rating"]
    score: int = Field(ge=1, le=5)
    comment: str = Field(default="", max_length=2000)


FRAME_MODELS: dict[str, type[BaseModel]] = {
    "message": MessageFrame,
    "typing": TypingFrame,
    "read": ReadFrame,
    "human": HumanFrame,
    "lead": LeadFrame,
    "feedback": FeedbackFrame,
    "rating": RatingFrame,
}


def error_frame(code: str, message: str, **extra) -> dict:
    return {"type": "error", "code": code, "message": message, **extra}


def _validation_message(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ())) or "frame"
    return f"{where}: {err.get('msg')}"
