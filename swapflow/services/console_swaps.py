"""What the console shows of swaps: a search (by id, rider, cabinet, status and time, in the cities the
operator may see, a page at a time) and a swap's page (its order, its stages, the door commands sent for
it with their acks, and its workflow's history read from Temporal). Reads only; every listing bounded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.devices import DeviceCommand
from swapflow.db.network import Cabinet, Station
from swapflow.db.swaps import SwapOrder
from swapflow.domain.clock import as_utc
from swapflow.domain.errors import DomainError, NotFound
from swapflow.domain.swaps import SwapStatus
from swapflow.services.temporal import TemporalConnector, connect
from swapflow.services.workflow_history import Timeline, workflow_timeline
from swapflow.settings import TemporalSettings
from swapflow.workflows.swap_contract import swap_workflow_id

PER_PAGE = 50
COMMANDS_SHOWN = 100
SEND_COMMAND = "send_device_command"
"""The device command activity's name (swapflow.workflows.device_contract)."""


@dataclass(frozen=True)
class SwapQuery:
    """What an operator searches swaps by; every field optional."""

    swap_id: str | None = None
    rider_id: str | None = None
    cabinet_id: str | None = None
    status: SwapStatus | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class SwapRow:
    id: str
    rider_id: str
    cabinet_id: str
    city_code: str
    status: str
    stage: str
    failure_reason: str | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class SwapPage:
    """One page of a search: its rows, its number (from 1), and whether there are more."""

    rows: list[SwapRow]
    number: int
    has_next: bool

    @property
    def has_previous(self) -> bool:
        return self.number > 1


@dataclass(frozen=True)
class Stage:
    """One of the swap's steps as its workflow recorded it on the order."""

    step: str
    outcome: str
    detail: str | None
    at: datetime | None


@dataclass(frozen=True)
class CommandView:
    command: DeviceCommand
    round_trip_ms: float | None


@dataclass(frozen=True)
class SwapDetail:
    order: SwapOrder
    city_code: str
    stages: list[Stage]
    commands: list[CommandView]
    workflow_id: str

    @property
    def command_rows(self) -> list[DeviceCommand]:
        return [view.command for view in self.commands]

    @property
    def running(self) -> bool:
        return self.order.status == SwapStatus.IN_PROGRESS


@dataclass(frozen=True)
class History:
    """A workflow's timeline, or why it cannot be shown now (Temporal unreachable, no such workflow)."""

    timeline: Timeline | None
    problem: str | None = None


async def search_swaps(
    session: AsyncSession, cities: list[str] | None, query: SwapQuery, page: int = 1, per_page: int = PER_PAGE
) -> SwapPage:
    """The swaps matching `query` in `cities` (None: all), newest first, page `page`."""
    statement = (
        select(SwapOrder, Station.city_code)
        .join(Cabinet, Cabinet.id == SwapOrder.cabinet_id)
        .join(Station, Station.id == Cabinet.station_id)
    )
    if cities is not None:
        statement = statement.where(Station.city_code.in_(cities))
    if query.swap_id:
        statement = statement.where(SwapOrder.id.startswith(query.swap_id, autoescape=True))
    if query.rider_id:
        statement = statement.where(SwapOrder.rider_id == query.rider_id)
    if query.cabinet_id:
        statement = statement.where(SwapOrder.cabinet_id == query.cabinet_id)
    if query.status:
        statement = statement.where(SwapOrder.status == query.status)
    if query.since:
        statement = statement.where(SwapOrder.created_at >= query.since)
    if query.until:
        statement = statement.where(SwapOrder.created_at < query.until)
    statement = statement.order_by(SwapOrder.created_at.desc(), SwapOrder.id.desc())
    found = (await session.execute(statement.offset((page - 1) * per_page).limit(per_page + 1))).all()
    rows = [
        SwapRow(
            id=order.id,
            rider_id=order.rider_id,
            cabinet_id=order.cabinet_id,
            city_code=city,
            status=order.status,
            stage=order.stage,
            failure_reason=order.failure_reason,
            created_at=order.created_at,
            finished_at=order.finished_at,
        )
        for order, city in found[:per_page]
    ]
    return SwapPage(rows=rows, number=page, has_next=len(found) > per_page)


async def swap_city(session: AsyncSession, swap_id: str) -> str:
    """The city of the swap's cabinet (what an operator's scope is checked against); NotFound if no swap."""
    city = await session.scalar(
        select(Station.city_code)
        .join(Cabinet, Cabinet.station_id == Station.id)
        .join(SwapOrder, SwapOrder.cabinet_id == Cabinet.id)
        .where(SwapOrder.id == swap_id)
    )
    if city is None:
        raise NotFound("swap", swap_id)
    return city


def stages_of(order: SwapOrder) -> list[Stage]:
    """The steps the workflow recorded on the order, in order."""
    return [
        Stage(
            step=str(step.get("step", "")),
            outcome=str(step.get("outcome", "")),
            detail=step.get("detail"),
            at=_when(step.get("at")),
        )
        for step in order.steps or []
    ]


async def swap_detail(session: AsyncSession, swap_id: str) -> SwapDetail:
    """The swap's order, stages and door commands; NotFound if there is no such swap."""
    order = await session.get(SwapOrder, swap_id)
    if order is None:
        raise NotFound("swap", swap_id)
    workflow_id = swap_workflow_id(swap_id)
    commands = await session.scalars(
        select(DeviceCommand)
        .where(DeviceCommand.workflow_id == workflow_id)
        .order_by(DeviceCommand.sent_at, DeviceCommand.id)
        .limit(COMMANDS_SHOWN)
    )
    return SwapDetail(
        order=order,
        city_code=await swap_city(session, swap_id),
        stages=stages_of(order),
        commands=[CommandView(c, _round_trip_ms(c)) for c in commands],
        workflow_id=workflow_id,
    )


async def workflow_history(
    temporal: TemporalConnector,
    settings: TemporalSettings,
    workflow_id: str,
    commands: Sequence[DeviceCommand] = (),
) -> History:
    """The workflow's timeline (its command steps named by `commands`, the rows it recorded), or the reason
    it cannot be read now: the page shows the rest regardless."""
    try:
        client = await connect(temporal, "Cannot read the workflow's history")
        timeline = await workflow_timeline(client, settings, workflow_id)
        name_commands(timeline, commands)
        return History(timeline)
    except NotFound:
        return History(None, f"Temporal has no workflow {workflow_id} (not started yet, or past its retention).")
    except DomainError as exc:
        return History(None, str(exc))


def name_commands(timeline: Timeline, commands: Sequence[DeviceCommand]) -> None:
    """Say which command each `send_device_command` step sent: a local activity's marker keeps its answer,
    not its input. A step sent the newest command recorded before it ended (a resend repeats its
    command's id, so its row was recorded at the first send)."""
    rows = sorted(commands, key=lambda c: (as_utc(c.sent_at), c.id))
    for entry in timeline.named(SEND_COMMAND):
        ended = entry.ended_at or entry.started_at
        sent = [c for c in rows if as_utc(c.sent_at) <= ended]
        if sent:
            command = sent[-1]
            slot = f" slot {command.slot_no}" if command.slot_no is not None else ""
            answer = f": {entry.detail}" if entry.detail else ""
            entry.detail = f"{command.action}{slot} ({command.id}){answer}"


def _round_trip_ms(command: DeviceCommand) -> float | None:
    if command.acked_at is None:
        return None
    return (as_utc(command.acked_at) - as_utc(command.sent_at)).total_seconds() * 1000


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, str):
        return as_utc(datetime.fromisoformat(value))
    return None
