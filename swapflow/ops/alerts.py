"""Alerts: what a person must look at. One open alert per device and kind (its dedupe key); a repeat
of an open alert counts an occurrence instead of opening another."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.ops import Alert
from swapflow.domain.clock import utcnow
from swapflow.domain.ops import AlertStatus
from swapflow.workflows.swap_contract import FaultReport

DEVICE_FLOOD = "device_flood"
"""A cabinet sent more than its rate of messages (SWAPFLOW_DEVICE_RATE_PER_S); the device adapter dropped
the excess, counted in its dead letters. Raised by the adapter; each further flood counts an occurrence."""


def alert_key(report: FaultReport) -> str:
    """The device and kind an alert is about."""
    return ":".join(
        str(part) for part in (report.kind, report.cabinet_id, report.slot_no or "-", report.battery_serial or "-")
    )


async def raise_alert(session: AsyncSession, report: FaultReport) -> Alert:
    """Open an alert for the report, or count one more occurrence of the open alert it repeats."""
    key = alert_key(report)
    alert = await session.scalar(select(Alert).where(Alert.dedupe_key == key, Alert.status == AlertStatus.OPEN))
    if alert is not None:
        alert.occurrences += 1
        alert.last_seen_at = utcnow()
        alert.message = report.message
        return alert
    alert = Alert(
        kind=report.kind,
        severity=report.severity,
        dedupe_key=key,
        cabinet_id=report.cabinet_id,
        slot_no=report.slot_no,
        battery_serial=report.battery_serial,
        order_id=report.order_id,
        message=report.message,
    )
    session.add(alert)
    return alert


RECONCILIATION_EXCEPTIONS = "reconciliation_exceptions"


async def raise_reconciliation_alert(session: AsyncSession, *, day: str, provider: str, exceptions: int) -> Alert:
    """Finance must look at a provider's day that reconciliation found differences on: one open alert per
    provider and day; running the day again updates it instead of opening another."""
    key = f"{RECONCILIATION_EXCEPTIONS}:{provider}:{day}"
    message = f"reconciliation of {day} with {provider}: {exceptions} exception(s) to resolve"
    alert = await session.scalar(select(Alert).where(Alert.dedupe_key == key, Alert.status == AlertStatus.OPEN))
    if alert is None:
        alert = Alert(kind=RECONCILIATION_EXCEPTIONS, severity="warning", dedupe_key=key, message=message)
        session.add(alert)
    else:
        alert.occurrences, alert.last_seen_at, alert.message = alert.occurrences + 1, utcnow(), message
    return alert


# Alert kinds raised by the device adapter for a device that contradicts what the platform holds true.
FORGED_PACK_REPORT = "forged_pack_report"
"""A pack report through a cabinet that neither holds the pack nor swaps it (device_adapter/authority.py)."""
LATE_DEVICE_FACT = "custody_reconciled"
"""A device fact, after its swap ended or in no swap, that moved custody (device_adapter/reconcile.py)."""


SETTLEMENT_UNAPPROVED = "settlement_unapproved"
"""A settlement run has waited for finance's approval longer than SWAPFLOW_SETTLEMENT_REMIND_AFTER_S."""
SETTLEMENT_PAYOUT_FAILED = "settlement_payout_failed"
"""A settlement run's payout failed or came back: the partner is still owed; finance retries it."""


async def raise_settlement_alert(session: AsyncSession, *, kind: str, run_id: str, message: str) -> Alert:
    """Finance must act on a settlement run: one open alert per run and kind; a repeat (the next reminder)
    counts an occurrence instead of opening another."""
    key = f"{kind}:{run_id}"
    alert = await session.scalar(select(Alert).where(Alert.dedupe_key == key, Alert.status == AlertStatus.OPEN))
    if alert is None:
        alert = Alert(kind=kind, severity="warning", dedupe_key=key, message=message)
        session.add(alert)
    else:
        alert.occurrences, alert.last_seen_at, alert.message = alert.occurrences + 1, utcnow(), message
    return alert


async def resolve_settlement_alert(session: AsyncSession, *, kind: str, run_id: str) -> None:
    """Finance has acted on the run: its open alert of `kind` is resolved."""
    alert = await session.scalar(
        select(Alert).where(Alert.dedupe_key == f"{kind}:{run_id}", Alert.status == AlertStatus.OPEN)
    )
    if alert is not None:
        alert.status, alert.resolved_at = AlertStatus.RESOLVED, utcnow()
