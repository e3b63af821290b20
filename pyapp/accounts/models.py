"""Request and response bodies of the account routes; they are also the OpenAPI schemas.

Input models forbid unknown fields, so a body that tries to name a tenant or an owner id
is refused (422) instead of silently ignored. Text that Postgres cannot store (NUL, lone
surrogates) or that would render deceptively in an agent's view (control characters,
bidirectional overrides) is refused with a field error, never a 500.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    field_validator,
    model_validator,
)

from pyapp import types

# The text rule (pyapp/types.py): names, emails and titles are one line of text people read.
_storable = types.storable
_display = types.line


Email = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"),
    AfterValidator(_display),
]
NewPassword = Annotated[str, StringConstraints(min_length=8, max_length=256), AfterValidator(_storable)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(_storable)]
PersonName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200), AfterValidator(_display)]
TenantName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200), AfterValidator(_display)
]
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")]
Token = Annotated[str, StringConstraints(min_length=1, max_length=512), AfterValidator(_storable)]
Role = Literal["owner", "admin", "agent"]
Scope = Literal["read", "write"]
SettingKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.]{0,63}$")]
ShortText = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(_display)]

MAX_SETTING_BYTES = 16_384


class Input(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- shapes returned to clients ----------------------------------------------------------


class UserOut(BaseModel):
    id: UUID
    email: str
    name: str
    email_verified_at: datetime | None = None
    created_at: datetime


class TenantOut(BaseModel):
    id: UUID
    slug: str
    name: str
    plan: str
    role: str | None = Field(description="The caller's role in this workspace (null: staff, not a member).")
    created_at: datetime
    suspended: bool | None = Field(default=None, description="Suspended by the operator (batch fetch only).")


class AuthOut(BaseModel):
    access_token: str
    refresh_token: str
    expires_in: int = Field(description="Seconds until the access token expires.")
    token_type: Literal["Bearer"] = "Bearer"
    user: UserOut
    tenant: TenantOut | None = Field(
        description="The workspace the access token is for (last used); null when the person belongs to none yet."
    )


class AccessOut(BaseModel):
    access_token: str
    expires_in: int
    token_type: Literal["Bearer"] = "Bearer"
    user: UserOut
    tenant: TenantOut


class MeOut(BaseModel):
    user: UserOut
    tenant: TenantOut | None
    session_id: UUID


class TenantsQuery(Input):
    ids: str | None = Field(
        default=None,
        max_length=3800,
        description="Comma-separated workspace ids (at most 100): a batch fetch. Staff get any workspace; "
        "anyone else the ones they belong to; the rest are left out.",
    )

    def id_list(self) -> list[UUID] | None:
        if self.ids is None:
            return None
        try:
            ids = list(dict.fromkeys(UUID(part.strip()) for part in self.ids.split(",") if part.strip()))
        except ValueError:
            raise ValueError("ids are workspace ids (UUIDs) separated by commas") from None
        if not ids or len(ids) > 100:
            raise ValueError("give 1 to 100 workspace ids")
        return ids


class TenantsOut(BaseModel):
    tenants: list[TenantOut]


class AcceptedOut(BaseModel):
    status: Literal["accepted"] = "accepted"


class SettingsOut(BaseModel):
    tenant: TenantOut
    values: dict[str, JsonValue]


class InviteOut(BaseModel):
    id: UUID
    email: str
    role: Role
    invited_by: UUID | None
    created_at: datetime
    expires_at: datetime
    accepted_at: datetime | None
    accepted_by: UUID | None
    revoked_at: datetime | None
    status: Literal["pending", "accepted", "revoked", "expired"]


class InviteCreatedOut(InviteOut):
    token: str = Field(description="The single-use invite token; shown only now (also emailed).")
    accept_url: str
    mail: Literal["sent", "not_configured", "failed"] = Field(
        description="Whether the invitation email went out; when not, pass accept_url on yourself."
    )


class ProfileOut(BaseModel):
    user: UserOut
    pending_email: str | None = Field(
        description="A new address that was mailed a confirmation link; it replaces yours once opened."
    )


class PasswordChangedOut(BaseModel):
    sessions_ended: int = Field(description="How many of your other sessions were ended.")


class InvitesOut(BaseModel):
    invites: list[InviteOut]


class JoinedOut(BaseModel):
    tenant: TenantOut


class MemberOut(BaseModel):
    user_id: UUID
    email: str
    name: str
    role: Role
    created_at: datetime


class MembersOut(BaseModel):
    members: list[MemberOut]


class ApiKeyOut(BaseModel):
    id: UUID
    name: str
    prefix: str
    scopes: list[Scope]
    created_by: UUID | None
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="The full API key; shown only now, stored only as a hash.")


class ApiKeysOut(BaseModel):
    keys: list[ApiKeyOut]


class AuditEntry(BaseModel):
    id: int
    at: datetime
    actor_kind: str
    actor_id: str | None
    action: str
    target_kind: str | None
    target_id: str | None
    ip: str | None
    request_id: str | None
    details: dict[str, Any]
    changes: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the details for people: {field, before, after} per changed field, else {field, value}",
    )


class AuditOut(BaseModel):
    items: list[AuditEntry]
    next_before: int | None = Field(description="Pass as ?before= for the next (older) page; null at the end.")


# ---- request bodies ------------------------------------------------------------------------


class SignupIn(Input):
    email: Email
    password: NewPassword
    name: PersonName = ""
    tenant_name: TenantName | None = Field(default=None, description="Create a workspace with this name (with slug).")
    slug: Slug | None = None
    ref: str | None = Field(
        default=None,
        max_length=64,
        description="A referral code (`?ref=` of the sign-up link); unknown codes are ignored.",
    )

    @model_validator(mode="after")
    def _tenant_pair(self):
        if (self.tenant_name is None) != (self.slug is None):
            raise ValueError("give both tenant_name and slug, or neither (to join by invite)")
        return self


class LoginIn(Input):
    email: Email
    password: Password


class RefreshIn(Input):
    refresh_token: Token


class LogoutIn(Input):
    everywhere: bool = Field(False, description="End every session of this person, not just this one.")


class ForgotIn(Input):
    email: Email


class ResetIn(Input):
    token: Token
    password: NewPassword


class SwitchIn(Input):
    tenant_id: UUID


class SettingsIn(Input):
    name: TenantName | None = Field(default=None, description="Rename the workspace.")
    values: dict[SettingKey, JsonValue | None] = Field(
        default_factory=dict, description="Keys to set; null removes a key; keys not given are kept."
    )

    @field_validator("values")
    @classmethod
    def _storable_values(cls, values: dict) -> dict:
        for key, value in values.items():
            _check_json(value, key)
            if len(json.dumps(value)) > MAX_SETTING_BYTES:
                raise ValueError(f"{key}: a value may be at most {MAX_SETTING_BYTES} bytes of JSON")
        return values


def _check_json(value: Any, where: str) -> None:
    """jsonb refuses NUL and unpaired surrogates anywhere in a document."""
    if isinstance(value, str):
        try:
            _storable(value)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            _check_json(k, where)
            _check_json(v, where)
    elif isinstance(value, list):
        for v in value:
            _check_json(v, where)


class VerifyIn(Input):
    token: Token


class ProfileIn(Input):
    name: PersonName | None = Field(default=None, description="Your display name.")
    email: Email | None = Field(default=None, description="A new email address; it is mailed a confirmation link.")


class PasswordChangeIn(Input):
    current_password: Password
    new_password: NewPassword


class DeleteAccountIn(Input):
    password: Password = Field(description="Your current password.")


class InviteIn(Input):
    email: Email
    role: Role = "agent"


class AcceptIn(Input):
    token: Token


class MemberPatch(Input):
    role: Role


def _read_only() -> list[Scope]:
    return ["read"]


class ApiKeyIn(Input):
    name: ShortText
    scopes: list[Scope] = Field(default_factory=_read_only, min_length=1, max_length=8)
    expires_at: AwareDatetime | None = None


class AuditQuery(BaseModel):
    """Query strings often carry unrelated parameters (cache busters); unknown ones are ignored."""

    before: int | None = Field(default=None, ge=1, le=2**63 - 1)
    limit: int = Field(50, ge=1, le=200)
    action: ShortText | None = None
    actor: ShortText | None = Field(default=None, description="Actor id: a user id, API key id or visitor id.")
