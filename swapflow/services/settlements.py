"""Settlement runs: a partner's period started as workflow `settlement/<partner>/<period label>` (the one
place that says how), by hand or by the schedules, once: the same partner and period never settle
twice, and a second start answers the first run. The schedules, one per cadence, start `SettlementsDue`,
which starts the runs of the partners with a closed period to settle. Finance's actions on a run are
updates of its workflow; when the workflow says no, they raise the domain's errors (Forbidden for four
eyes, Invalid for a rejection without a reason, Conflict when the run is not waiting for it)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from swapflow.db.commissions import CommissionPlan, Partner, PlanAssignment
from swapflow.db.engine import Database
from swapflow.domain.clock import utcnow
from swapflow.domain.commissions import (
    Cadence,
    CadenceKind,
    SettlementPeriod,
    period_containing,
    period_of_label,
    previous_period,
)
from swapflow.domain.errors import Conflict, Forbidden, Invalid, NotFound, Unavailable
from swapflow.services.temporal import start_once
from swapflow.settings import Settings
from swapflow.workflows.settlement import SettlementsDueWorkflow, SettlementWorkflow
from swapflow.workflows.settlement_contract import (
    BankResult,
    DueRequest,
    SettlementActor,
    SettlementDecision,
    SettlementForbiddenError,
    SettlementInvalidError,
    SettlementStart,
    SettlementState,
    settlement_run_id,
    settlement_workflow_id,
    settlements_due_workflow_id,
)

UNAVAILABLE = "Settlements unavailable"


async def partner_cadence(session: AsyncSession, partner_id: str) -> tuple[Cadence, ZoneInfo]:
    """How often the partner settles (its plan's cadence, as assigned now) and in which time zone:
    NotFound without the partner, Conflict when it is on no plan."""
    zone_name = await session.scalar(select(Partner.time_zone).where(Partner.id == partner_id))
    if zone_name is None:
        raise NotFound("partner", partner_id)
    plan = (
        await session.execute(
            select(CommissionPlan.cadence, CommissionPlan.cadence_minutes)
            .join(PlanAssignment, PlanAssignment.plan_id == CommissionPlan.id)
            .where(PlanAssignment.partner_id == partner_id, PlanAssignment.effective_from <= utcnow())
            .order_by(PlanAssignment.effective_from.desc())
            .limit(1)
        )
    ).one_or_none()
    if plan is None:
        raise Conflict("No commission plan", f"partner {partner_id!r} is on no commission plan")
    kind, minutes = plan
    try:
        zone = ZoneInfo(zone_name)
    except ZoneInfoNotFoundError:
        raise Conflict("Unknown time zone", f"partner {partner_id!r} is in unknown time zone {zone_name!r}") from None
    return Cadence(kind=CadenceKind(kind), minutes=minutes if kind == CadenceKind.MINUTES else None), zone


async def last_closed_period(db: Database, partner_id: str) -> SettlementPeriod:
    """The partner's last period that is over."""
    async with db.sessions() as session:
        cadence, zone = await partner_cadence(session, partner_id)
    return previous_period(period_containing(utcnow(), cadence, zone), cadence, zone)


async def settlement_start(
    db: Database, settings: Settings, partner_id: str, period_label: str, prepared_by: str
) -> SettlementStart:
    """The run's input: Invalid if the label names no period of the partner's cadence, Conflict if the
    period is not over yet."""
    async with db.sessions() as session:
        cadence, zone = await partner_cadence(session, partner_id)
    try:
        period = period_of_label(period_label, cadence, zone)
    except ValueError as exc:
        raise Invalid(f"partner {partner_id!r} settles {cadence.name}: {exc}") from None
    if period.end > utcnow():
        raise Conflict(
            "Period not over", f"period {period_label} of partner {partner_id!r} is not over: it ends {period.end}"
        )
    return SettlementStart(
        run_id=settlement_run_id(partner_id, period.label),
        partner_id=partner_id,
        period_label=period.label,
        period_start=period.start,
        period_end=period.end,
        prepared_by=prepared_by,
        remind_after_s=settings.settlement.remind_after_s,
        payout_poll_schedule_s=tuple(settings.settlement.payout_poll_schedule_s),
    )


async def start_settlement(
    client: Client, settings: Settings, db: Database, partner_id: str, period_label: str, prepared_by: str
) -> SettlementState:
    """Settle the partner's period (by hand): starts its workflow unless it runs or ran, and answers the
    run's state, the first run's when it was started before."""
    start = await settlement_start(db, settings, partner_id, period_label, prepared_by)
    workflow_id = settlement_workflow_id(partner_id, start.period_label)
    try:
        await start_once(
            client, SettlementWorkflow.run, start, workflow_id=workflow_id, task_queue=settings.temporal.task_queue
        )
    except RuntimeError as exc:
        raise Unavailable(UNAVAILABLE, f"workflow service unreachable: {exc}") from exc
    return await settlement_state(client, workflow_id)


async def settlement_state(client: Client, workflow_id: str) -> SettlementState:
    """The run as its workflow sees it (an ended one's result)."""
    handle = client.get_workflow_handle_for(SettlementWorkflow.run, workflow_id)
    try:
        described = await handle.describe()
        if described.status == WorkflowExecutionStatus.COMPLETED:
            return await handle.result()
        return await handle.query(SettlementWorkflow.state)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound("settlement run", workflow_id) from None
        raise Unavailable(UNAVAILABLE, f"workflow service: {exc}") from exc
    except RuntimeError as exc:
        raise Unavailable(UNAVAILABLE, f"workflow service unreachable: {exc}") from exc


async def _update(client: Client, workflow_id: str, update: Any, argument: Any) -> SettlementState:
    handle = client.get_workflow_handle_for(SettlementWorkflow.run, workflow_id)
    try:
        state: SettlementState = await handle.execute_update(update, argument)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        message = str(getattr(cause, "message", "") or cause or exc)
        kind = cause.type if isinstance(cause, ApplicationError) else None
        if kind == SettlementForbiddenError.TYPE:
            raise Forbidden(message) from None
        if kind == SettlementInvalidError.TYPE:
            raise Invalid(message) from None
        raise Conflict("Not possible now", message) from None
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise Unavailable(UNAVAILABLE, f"workflow service: {exc}") from exc
        ended = await settlement_state(client, workflow_id)  # NotFound if it never ran
        raise Conflict("Not possible now", f"run {ended.run_id} has ended: it is {ended.status.value}") from None
    except RuntimeError as exc:
        raise Unavailable(UNAVAILABLE, f"workflow service unreachable: {exc}") from exc
    return state


async def decide(client: Client, workflow_id: str, decision: SettlementDecision) -> SettlementState:
    """Approve (the payout goes out) or reject a run awaiting approval."""
    return await _update(client, workflow_id, SettlementWorkflow.decide, decision)


async def recompute(client: Client, workflow_id: str, actor: SettlementActor) -> SettlementState:
    """Freeze and compute a rejected run again, after corrections (its next revision)."""
    return await _update(client, workflow_id, SettlementWorkflow.recompute, actor)


async def retry_payout(client: Client, workflow_id: str, actor: SettlementActor) -> SettlementState:
    """Pay a run whose payout failed again (a new payout)."""
    return await _update(client, workflow_id, SettlementWorkflow.retry_payout, actor)


async def bank_result(client: Client, workflow_id: str, result: BankResult) -> SettlementState:
    """Say how a run's bank transfer ended: paid (with the bank's reference) or returned."""
    return await _update(client, workflow_id, SettlementWorkflow.bank_result, result)


async def minute_cadences_in_use(db: Database) -> list[int]:
    """The lengths of the plans' periods in minutes (the demo's cadences)."""
    async with db.sessions() as session:
        minutes = await session.scalars(
            select(CommissionPlan.cadence_minutes)
            .where(CommissionPlan.cadence == CadenceKind.MINUTES, CommissionPlan.cadence_minutes.is_not(None))
            .distinct()
        )
        return sorted(value for value in minutes if value is not None)


def schedule_id(cadence: Cadence) -> str:
    return f"settlement-{cadence.name}"


async def ensure_settlement_schedules(
    client: Client, settings: Settings, minute_cadences: Iterable[int] = ()
) -> list[str]:
    """Create the settlement schedules that do not exist yet (every worker calls this on start): weekly
    and monthly, each ticking hourly (a period ends at midnight in each partner's own zone), and one per
    cadence in `minute_cadences`, ticking at its length. A tick comes `settle_after_s` (and a little)
    after the hour, so the periods just ended are ready. Returns the schedules' ids."""
    cadences = [Cadence(kind=CadenceKind.WEEKLY), Cadence(kind=CadenceKind.MONTHLY)]
    cadences += [Cadence(kind=CadenceKind.MINUTES, minutes=minutes) for minutes in sorted(set(minute_cadences))]
    lag = timedelta(seconds=settings.settlement.settle_after_s + 5)
    ids = []
    for cadence in cadences:
        every = timedelta(minutes=cadence.minutes or 60)
        schedule = Schedule(
            action=ScheduleActionStartWorkflow(
                SettlementsDueWorkflow.run,
                DueRequest(cadence=cadence),
                id=settlements_due_workflow_id(cadence),
                task_queue=settings.temporal.task_queue,
            ),
            spec=ScheduleSpec(
                intervals=[ScheduleIntervalSpec(every=every, offset=min(lag, every - timedelta(seconds=1)))]
            ),
            policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        )
        try:
            await client.create_schedule(schedule_id(cadence), schedule)
        except ScheduleAlreadyRunningError:
            pass
        ids.append(schedule_id(cadence))
    return ids
