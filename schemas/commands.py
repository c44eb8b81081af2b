"""Operator commands, published to the commands topic keyed like the contact's events (so in order)."""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from schemas.events import MAX_FUTURE, AccountId, Id, UInt64, normalize_email

MAX_CONTACTS_PER_REMOVAL = 50


class SeenEnrollment(BaseModel):
    """The enrollment as the operator's tool found it in enrollment_state. The worker uses it only when its
    own state does not know the enrollment (states lost, or data older than the topics), so that the
    removal is still named and placed, and the contact keeps its entry time."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenario_name: Annotated[str, Field(max_length=512)] = ""
    step_id: Annotated[str, Field(max_length=128)] = ""
    start_id: Annotated[str, Field(max_length=128)] = ""
    entered_at: datetime

    @field_validator("entered_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        v = v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)
        return v.replace(microsecond=v.microsecond // 1000 * 1000)


class RemoveContact(BaseModel):
    """Take one contact out of one scenario; it is written as an automation_removed event."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    command: Literal["remove_contact"] = "remove_contact"
    request_id: Id
    account_id: AccountId
    scenario_id: Id
    email: str | None = None
    contact_id: UInt64 | None = None
    requested_at: datetime
    requested_by: Annotated[str, Field(max_length=256)] = ""
    seen: SeenEnrollment | None = None

    @field_validator("email")
    @classmethod
    def _email(cls, v: str | None) -> str | None:
        return normalize_email(v)

    @field_validator("requested_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        v = v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)
        if v > datetime.now(timezone.utc) + MAX_FUTURE:  # as for events: it would hold the contact until then
            raise ValueError(f"{v.isoformat()} is more than 24 hours in the future (check the sender's clock "
                             "and time zone)")
        return v.replace(microsecond=v.microsecond // 1000 * 1000)

    @model_validator(mode="after")
    def _has_contact(self):
        if not self.email and not self.contact_id:
            raise ValueError("the command names no contact: give email or contact_id")
        return self


COMMAND_ADAPTER: TypeAdapter[RemoveContact] = TypeAdapter(RemoveContact)


def new_request_id() -> str:
    return uuid.uuid4().hex
