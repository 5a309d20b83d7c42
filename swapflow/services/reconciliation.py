"""Reconciliation: one day of each provider's money compared three ways: the ledger with our payments and
refunds, and those with the provider's own statement. Every difference is filed as a
`reconciliation_exceptions` row for finance and a day with differences raises an alert; nothing is ever
corrected here (finance marks a difference resolved, with a note). Re-running a day files no difference
twice. The daily Temporal Schedule runs it through the reconciliation workflow; `swapflow reconcile` runs
it at once; finance reads a day's result.

Each movement is dated as its provider's statement dates it, or a movement near midnight would be
missing on one day and unknown on the next: a charge from its capture; a refund from its acceptance, but
on WeChat from its success (a WeChat bill lists a refund on the day it succeeded)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

from swapflow.db.engine import Database
from swapflow.db.money import (
    LedgerPosting,
    LedgerTransaction,
    Payment,
    ReconciliationException,
    ReconciliationRun,
    Refund,
)
from swapflow.domain.clock import utcnow
from swapflow.domain.errors import Conflict, NotFound
from swapflow.ops.alerts import raise_reconciliation_alert
from swapflow.payments.provider import PaymentMethod, PaymentProvider, PaymentStatus, RefundStatus, day_bounds
from swapflow.payments.refunds import method_account
from swapflow.services.audit import record_change, snapshot
from swapflow.settings import Settings
from swapflow.workflows.reconciliation import ReconciliationWorkflow
from swapflow.workflows.reconciliation_contract import ProviderReconciliation, ReconcileInput

_NO_MONEY = (RefundStatus.CLOSED.value, RefundStatus.FAILED.value, "declined")
_REFUNDS_LISTED_ON_SUCCESS = frozenset({PaymentMethod.WECHAT.value})
LEDGER_REF = "ledger:"  # the ref of a difference between the ledger and our payments: ledger:<our key>


@dataclass(frozen=True)
class Movement:
    """One of our payments or refunds as money moving at its provider."""

    amount_minor: int  # captures positive, refunds negative
    ledger_key: str  # the ledger transaction that books it


async def our_movements(db: Database, day: date, method: str) -> dict[str, Movement]:
    """Our record of a provider's day, by key: captures and accepted refunds, dated as the provider does."""
    start, end = day_bounds(day)
    captured_at = func.coalesce(Payment.captured_at, Payment.created_at)
    refunded_at = Refund.succeeded_at if method in _REFUNDS_LISTED_ON_SUCCESS else Refund.submitted_at
    async with db.sessions() as session:
        payments = (
            await session.execute(
                select(Payment.key, Payment.amount_minor).where(
                    Payment.method == method,
                    Payment.status == PaymentStatus.CAPTURED,
                    captured_at >= start,
                    captured_at < end,
                )
            )
        ).all()
        refunds = (
            await session.execute(
                select(Refund.id, Refund.key, Refund.amount_minor).where(
                    Refund.method == method,
                    refunded_at >= start,
                    refunded_at < end,
                    Refund.provider_status.not_in(_NO_MONEY),
                )
            )
        ).all()
    return {
        **{key: Movement(amount, key) for key, amount in payments},
        **{key: Movement(-amount, f"refund:{refund_id}") for refund_id, key, amount in refunds},
    }


async def _ledger_amounts(session: AsyncSession, keys: list[str]) -> dict[str, int]:
    """What each of these ledger transactions moves (the sum of its debits), by transaction key."""
    if not keys:
        return {}
    rows = await session.execute(
        select(LedgerTransaction.key, func.sum(LedgerPosting.amount_minor))
        .join(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
        .where(LedgerTransaction.key.in_(keys), LedgerPosting.amount_minor > 0)
        .group_by(LedgerTransaction.key)
    )
    return {key: int(amount) for key, amount in rows.all()}


async def _unbacked_ledger_charges(session: AsyncSession, day: date, method: str) -> dict[str, int]:
    """Charges the ledger booked on `day` into `method`'s account that no captured payment of ours backs."""
    start, end = day_bounds(day)
    rows = await session.execute(
        select(LedgerTransaction.key, LedgerPosting.amount_minor)
        .join(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
        .where(
            LedgerTransaction.kind == "swap_charge",
            LedgerTransaction.created_at >= start,
            LedgerTransaction.created_at < end,
            LedgerPosting.amount_minor > 0,
            # The method's account: its clearing account, or a rider's wallet or subscription in it.
            LedgerPosting.account.startswith(method_account(method, "")),
        )
    )
    booked = {key: int(amount) for key, amount in rows.all()}
    backed = (
        set(
            (
                await session.scalars(
                    select(Payment.key).where(Payment.key.in_(list(booked)), Payment.status == PaymentStatus.CAPTURED)
                )
            ).all()
        )
        if booked
        else set()
    )
    return {key: amount for key, amount in booked.items() if key not in backed}


async def ledger_differences(
    session: AsyncSession, day: date, method: str, ours: dict[str, Movement]
) -> list[tuple[str, str, int | None, int | None]]:
    """Where the ledger and our payments and refunds disagree: (ref, kind, ours, the ledger's)."""
    booked = await _ledger_amounts(session, [movement.ledger_key for movement in ours.values()])
    differences: list[tuple[str, str, int | None, int | None]] = []
    for key, movement in sorted(ours.items()):
        amount = booked.get(movement.ledger_key)
        ledger = None if amount is None else amount if movement.amount_minor >= 0 else -amount
        if ledger is None:
            differences.append((LEDGER_REF + key, "missing_in_ledger", movement.amount_minor, None))
        elif ledger != movement.amount_minor:
            differences.append((LEDGER_REF + key, "ledger_mismatch", movement.amount_minor, ledger))
    for key, amount in sorted((await _unbacked_ledger_charges(session, day, method)).items()):
        differences.append((LEDGER_REF + key, "missing_in_payments", None, amount))
    return differences


async def reconcile_provider(db: Database, provider: PaymentProvider, day: date) -> ProviderReconciliation:
    """Compare the ledger with our record of `day`, and ours with one provider's statement; file each
    difference, and raise an alert for the day if there is any."""
    ours = await our_movements(db, day, provider.method)
    lines = await provider.statement(day)
    theirs: dict[str, int] = {}
    for line in lines:
        ref = line.key or f"provider:{line.provider_ref}"
        theirs[ref] = theirs.get(ref, 0) + line.amount_minor
    differences: list[tuple[str, str, int | None, int | None]] = []
    for ref in sorted(ours.keys() | theirs.keys()):
        mine, their = (ours[ref].amount_minor if ref in ours else None), theirs.get(ref)
        if their is None:
            differences.append((ref, "missing_at_provider", mine, None))
        elif mine is None:
            differences.append((ref, "missing_in_ours", None, their))
        elif mine != their:
            differences.append((ref, "amount_mismatch", mine, their))
    mismatched = sum(1 for d in differences if d[1] == "amount_mismatch")
    name = day.isoformat()
    async with db.transaction() as session:
        differences += await ledger_differences(session, day, provider.method, ours)
        for ref, kind, mine, their in differences:
            known = await session.scalar(
                select(ReconciliationException).where(
                    ReconciliationException.day == name,
                    ReconciliationException.provider == provider.method,
                    ReconciliationException.ref == ref,
                )
            )
            if known is None:
                other = "the ledger's" if ref.startswith(LEDGER_REF) else "the provider's"
                session.add(
                    ReconciliationException(
                        day=name,
                        provider=provider.method,
                        ref=ref,
                        kind=kind,
                        ours_minor=mine,
                        theirs_minor=their,
                        detail=f"{kind}: ours {mine}, {other} {their}",
                    )
                )
        run = await session.scalar(
            select(ReconciliationRun).where(
                ReconciliationRun.day == name, ReconciliationRun.provider == provider.method
            )
        )
        if run is None:
            run = ReconciliationRun(day=name, provider=provider.method, ours=0, theirs=0, matched=0, exceptions=0)
            session.add(run)
        run.ours, run.theirs = len(ours), len(theirs)
        run.matched = len(ours.keys() & theirs.keys()) - mismatched
        run.exceptions = len(differences)
        if differences:
            await raise_reconciliation_alert(session, day=name, provider=provider.method, exceptions=len(differences))
    return ProviderReconciliation(
        provider=provider.method, ours=len(ours), theirs=len(theirs), matched=run.matched, exceptions=len(differences)
    )


SCHEDULE_ID = "reconciliation-daily"


async def ensure_reconciliation_schedule(client: Client, settings: Settings) -> None:
    """Create the daily schedule unless it exists (every worker calls this on start: idempotent)."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            ReconciliationWorkflow.run,
            ReconcileInput(),
            id="reconciliation-daily-run",
            task_queue=settings.temporal.task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=[settings.payments.reconciliation_cron]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    try:
        await client.create_schedule(SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        pass


async def reconciliation_of(
    session: AsyncSession, day: date
) -> tuple[list[ReconciliationRun], list[ReconciliationException]]:
    """A day's reconciliation: its run per provider, and every difference filed for finance."""
    runs = await session.scalars(
        select(ReconciliationRun).where(ReconciliationRun.day == day.isoformat()).order_by(ReconciliationRun.provider)
    )
    exceptions = await session.scalars(
        select(ReconciliationException)
        .where(ReconciliationException.day == day.isoformat())
        .order_by(ReconciliationException.id)
    )
    return list(runs), list(exceptions)


async def resolve_exception(
    session: AsyncSession, exception_id: int, *, actor: str, note: str
) -> ReconciliationException:
    """Finance marks a difference resolved, saying how in `note` (who and when are recorded, and audited).
    Conflict if it already is."""
    row = await session.get(ReconciliationException, exception_id, with_for_update=True)
    if row is None:
        raise NotFound("reconciliation exception", exception_id)
    if row.status == "resolved":
        raise Conflict("Already resolved", f"difference {exception_id} was resolved by {row.resolved_by}")
    before = snapshot(row)
    row.status, row.resolved_by, row.resolved_at, row.resolution_note = "resolved", actor, utcnow(), note
    await session.flush()
    record_change(session, actor, "resolve", "reconciliation_exception", str(row.id), before, snapshot(row), note)
    return row
