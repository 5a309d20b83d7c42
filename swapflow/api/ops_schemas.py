"""Request and response models of the ops API (`/v1/ops/...`)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from swapflow.domain.ops import WorkOrderStatus


class AlertView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    severity: str
    status: str
    cabinet_id: str | None
    slot_no: int | None
    battery_serial: str | None
    order_id: str | None
    city_code: str | None = None
    message: str
    occurrences: int
    created_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    age_s: float = 0.0


class AlertDeliveryView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    alert_id: int
    event: str
    channel: str
    attempt: int
    ok: bool
    status_code: int | None
    error: str | None
    at: datetime


class WorkOrderEventView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    seq: int
    kind: str
    actor: str | None
    detail: str
    at: datetime


class WorkOrderView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    workflow_id: str = ""
    cabinet_id: str
    slot_no: int | None
    city_code: str
    kind: str
    severity: str
    source: str
    alert_id: int | None
    description: str
    status: WorkOrderStatus
    technician_id: str | None
    escalated_to: str | None
    reopen_count: int
    opened_at: datetime
    acked_at: datetime | None
    closed_at: datetime | None
    timeline: list[WorkOrderEventView] = Field(default_factory=list)


class WorkOrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cabinet_id: str = Field(min_length=1, max_length=40)
    slot_no: int | None = Field(None, ge=1)
    severity: str = Field("warning", pattern="^(info|warning|critical)$")
    description: str = Field("", max_length=2000)


class ResolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field("", max_length=2000)


class ReassignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    technician_id: str | None = Field(None, description="None: the nearest other technician on duty.")


class CancelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=2000)


class IncidentFiguresView(BaseModel):
    city_code: str
    opened: int
    acked: int
    closed: int
    mtta_s: float | None
    mttr_s: float | None


class UptimeView(BaseModel):
    scope: str
    key: str
    city_code: str
    observed_s: float
    online_s: float
    transitions: int
    uptime: float | None


class FiguresPeriod(BaseModel):
    start: datetime
    end: datetime


class IncidentReport(BaseModel):
    period: FiguresPeriod
    cities: list[IncidentFiguresView]


class UptimeReport(BaseModel):
    period: FiguresPeriod
    items: list[UptimeView]


class OpenByAge(BaseModel):
    alerts: dict[str, int]
    work_orders: dict[str, int]
