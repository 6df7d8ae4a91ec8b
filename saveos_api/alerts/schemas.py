"""Request and response bodies of the alert endpoints (API.md, "Alerts")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from saveos_api.schemas import INT64_MAX, LabelKey, Text

ChannelName = Text(100, 1)
ChannelUrl = Annotated[str, Field(min_length=1, max_length=4096)]


class ChannelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: ChannelUrl
    name: ChannelName | None = None
    labels: Annotated[dict[LabelKey, Text(253)], Field(max_length=16)] = {}
    min_status: Annotated[str, Field(max_length=16)] = "overdue"
    digest: StrictBool = False


class ChannelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str | None
    url: str = Field(description="Redacted: scheme and host only")
    labels: dict[str, str]
    min_status: str
    digest: bool
    source: str
    created_at: datetime
    disabled_at: datetime | None


class ChannelList(BaseModel):
    channels: list[ChannelOut]


class FlipOut(BaseModel):
    id: int
    agent_id: int
    host: str
    from_status: str | None
    to_status: str
    at: datetime
    reason: str | None


class FlipList(BaseModel):
    flips: list[FlipOut]


class DeliveryOut(BaseModel):
    id: int
    channel_id: int
    channel: str
    kind: str
    flip_id: int | None
    title: str
    state: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None
    last_error: str | None


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]


class TestIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel_id: Annotated[int, Field(ge=1, le=INT64_MAX)] | None = None


class TestResult(BaseModel):
    channel_id: int
    channel: str
    ok: bool
    error: str | None


class TestOut(BaseModel):
    results: list[TestResult]
