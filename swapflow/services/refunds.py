"""Refunds of a swap's capture: an operator's (one per Idempotency-Key) or an approved complaint's,
opened here and followed by the refund workflow, which `start_refund` starts (the one place that says
how); a rider's refunds; finance's list of stuck refunds, and finance's resolution of a refund escalated
to it."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.db.money import Payment, Refund
from swapflow.db.network import Rider
from swapflow.db.ops import Alert
from swapflow.db.swaps import SwapOrder
from swapflow.domain.clock import utcnow
from swapflow.domain.errors import Conflict, NotFound
from swapflow.domain.ops import AlertStatus
from swapflow.domain.refunds import RefundResolution
from swapflow.domain.swaps import SwapStatus
from swapflow.payments.ledger import BANK_CASH, REFUNDS_PAYABLE, Posting, post_transaction, provider_clearing
from swapflow.payments.provider import PaymentMethod, refund_submission_key
from swapflow.payments.refunds import (
    RefundOrigin,
    RefundRefused,
    RefundState,
    book_refund_owed,
    charge_key,
    method_account,
    open_refund,
    settled_key,
)
from swapflow.services.audit import record_change, snapshot
from swapflow.services.idempotency import create_once
from swapflow.services.temporal import TemporalConnector, connect, start_once
from swapflow.settings import Settings
from swapflow.workflows.refund import RefundWorkflow
from swapflow.workflows.refund_contract import RefundStart, refund_workflow_id

UNSUBMITTED_AFTER = timedelta(hours=1)
"""A refund not accepted by its provider after this long is stuck too (its workflow never got it there)."""


def operator_refund_id(order_id: str, idempotency_key: str) -> str:
    """The id of an operator's refund: from the order and the request's Idempotency-Key, so a repeated
    request opens nothing new."""
    digest = hashlib.sha256(f"{order_id}\n{idempotency_key}".encode()).hexdigest()[:24]
    return f"op-{digest}"


def complaint_refund_id(complaint_id: str) -> str:
    """The refund an approved complaint opens: one per complaint, however often it is approved."""
    return f"complaint-{complaint_id}"


async def open_order_refund(
    db: Database, *, refund_id: str, order_id: str, amount_minor: int | None, reason: str, origin: RefundOrigin
) -> tuple[Refund, bool]:
    """Open refund `refund_id` of the order's capture: NotFound without the order, Conflict while it runs,
    if it was never charged or the refund does not fit. The same id returns the refund it opened.
    Returns (refund, created)."""
    async with db.transaction() as session:

        async def find() -> Refund | None:
            return await session.get(Refund, refund_id)

        async def create() -> Refund | None:
            order = await session.get(SwapOrder, order_id)
            if order is None:
                raise NotFound("swap", order_id)
            if order.status == SwapStatus.IN_PROGRESS:
                # Its charge is still deferred: a failure refunds it anyway, a completion recognises it first.
                raise Conflict("Swap still running", f"swap {order_id!r} has not finished; refund it once it has")
            payment = await session.scalar(select(Payment).where(Payment.key == charge_key(order_id)))
            if payment is None:
                raise Conflict("Nothing to refund", f"swap {order_id!r} was never charged")
            try:
                refund, opened = await open_refund(
                    session,
                    refund_id=refund_id,
                    payment=payment,
                    amount_minor=amount_minor,
                    reason=reason,
                    origin=origin,
                )
            except RefundRefused as refused:
                raise Conflict("Refund refused", str(refused)) from None
            return refund if opened else None  # a concurrent request opened it

        return await create_once(session, find=find, create=create)


async def start_refund(
    temporal: TemporalConnector, settings: Settings, refund: Refund, *, resubmission: bool = False
) -> None:
    """Start the workflow that follows an opened refund (once: a finished one is never started again,
    except for finance's `resubmission`, a new run under the same id). Unavailable while Temporal is
    unreachable; the refund is kept, and the same request starts it later."""
    client = await connect(temporal, "Refunds unavailable")
    start = RefundStart(
        refund_id=refund.id,
        order_id=refund.order_id,
        reason=refund.reason,
        origin=refund.origin,
        opened=True,
        poll_schedule_s=tuple(settings.payments.refund_poll_schedule_s),
        expected_days=settings.payments.refund_expected_days,
    )
    await start_once(
        client,
        RefundWorkflow.run,
        start,
        workflow_id=refund_workflow_id(refund.id),
        task_queue=settings.temporal.task_queue,
        rerun=resubmission,
    )


async def refund_order(
    db: Database,
    settings: Settings,
    temporal: TemporalConnector,
    *,
    order_id: str,
    amount_minor: int | None,
    reason: str,
    idempotency_key: str,
) -> tuple[Refund, bool]:
    """An operator's refund of (part of) a swap's capture, once per Idempotency-Key, followed by its
    workflow. Returns (refund, created)."""
    refund, created = await open_order_refund(
        db,
        refund_id=operator_refund_id(order_id, idempotency_key),
        order_id=order_id,
        amount_minor=amount_minor,
        reason=reason,
        origin=RefundOrigin.OPERATOR,
    )
    await start_refund(temporal, settings, refund)
    return refund, created


async def find_refund(session: AsyncSession, refund_id: str) -> Refund:
    """The refund, or NotFound."""
    refund = await session.get(Refund, refund_id)
    if refund is None:
        raise NotFound("refund", refund_id)
    return refund


@dataclass(frozen=True)
class RefundPage:
    """A page of refunds, newest first, and the cursor of the next page (None: this was the last)."""

    refunds: list[Refund]
    next_cursor: str | None


async def rider_refunds(session: AsyncSession, rider_id: str, *, cursor: str | None = None, limit: int) -> RefundPage:
    """The rider's refunds, newest first, at most `limit`; `cursor` is the previous page's `next_cursor`
    (the last refund it showed): NotFound unless it names a refund of the rider's."""
    if await session.get(Rider, rider_id) is None:
        raise NotFound("rider", rider_id)
    query = select(Refund).where(Refund.rider_id == rider_id)
    if cursor is not None:
        last = await session.get(Refund, cursor)
        if last is None or last.rider_id != rider_id:
            raise NotFound("refund", cursor, detail=f"cursor {cursor!r} names no refund of this rider's")
        query = query.where(
            or_(Refund.created_at < last.created_at, and_(Refund.created_at == last.created_at, Refund.id < last.id))
        )
    found = list(await session.scalars(query.order_by(Refund.created_at.desc(), Refund.id.desc()).limit(limit + 1)))
    refunds = found[:limit]
    return RefundPage(refunds=refunds, next_cursor=refunds[-1].id if len(found) > limit else None)


async def order_rider(session: AsyncSession, order_id: str) -> str | None:
    """The rider of a swap order, if there is one."""
    order = await session.get(SwapOrder, order_id)
    return order.rider_id if order else None


async def stuck_refunds(session: AsyncSession) -> list[Refund]:
    """Refunds past their expected arrival, never accepted by the provider, or escalated to finance."""
    now = utcnow()
    rows = await session.scalars(
        select(Refund)
        .where(
            or_(
                and_(Refund.status == RefundState.PROCESSING, Refund.expected_by < now),
                and_(Refund.status == RefundState.REQUESTED, Refund.created_at < now - UNSUBMITTED_AFTER),
                Refund.status == RefundState.ESCALATED,
            )
        )
        .order_by(Refund.created_at)
    )
    return list(rows)


# ------------------------------------------------------------------------------ finance's resolution

TRANSFER_ACCOUNTS = {
    "bank": BANK_CASH,
    PaymentMethod.WECHAT.value: provider_clearing(PaymentMethod.WECHAT),
    PaymentMethod.STRIPE.value: provider_clearing(PaymentMethod.STRIPE),
}
"""Where the money of a refund finance paid by transfer left from, by the transfer's channel."""


async def _locked_refund(session: AsyncSession, refund_id: str) -> Refund:
    refund = await session.get(Refund, refund_id, with_for_update=True)
    if refund is None:
        raise NotFound("refund", refund_id)
    return refund


def _check_escalated(refund: Refund) -> None:
    if refund.status != RefundState.ESCALATED:
        raise Conflict("Refund not escalated", f"refund {refund.id} is {refund.status}: nothing for finance to resolve")


def _resolved(refund: Refund, resolution: RefundResolution, *, actor: str, note: str) -> None:
    refund.resolution, refund.resolved_by, refund.resolved_at = resolution, actor, utcnow()
    refund.resolution_note = note


async def _close_escalation_alert(session: AsyncSession, refund_id: str) -> None:
    for alert in await session.scalars(
        select(Alert).where(Alert.dedupe_key == f"refund_escalated:{refund_id}", Alert.status == AlertStatus.OPEN)
    ):
        alert.status, alert.resolved_at = AlertStatus.RESOLVED, utcnow()


async def _settle_outside(
    session: AsyncSession,
    refund: Refund,
    before: dict[str, Any] | None,
    resolution: RefundResolution,
    account: str,
    *,
    memo: str,
    actor: str,
    note: str,
) -> Refund:
    """The money reached the rider outside the refund workflow: owed (if no provider ever accepted the
    refund, it is owed now) and cleared from refunds payable against `account`, at once. `before` is the
    refund as finance found it."""
    await book_refund_owed(session, refund)
    await post_transaction(
        session,
        key=settled_key(refund.id),
        kind="refund_resolved",
        currency=refund.currency,
        order_id=refund.order_id,
        memo=memo[:200],
        postings=[Posting(REFUNDS_PAYABLE, refund.amount_minor), Posting(account, -refund.amount_minor)],
    )
    _resolved(refund, resolution, actor=actor, note=note)
    refund.status, refund.final_at = RefundState.SUCCEEDED, utcnow()
    await _close_escalation_alert(session, refund.id)
    await session.flush()
    record_change(session, actor, resolution, "refund", refund.id, before, snapshot(refund), note)
    return refund


async def pay_refund_by_transfer(
    session: AsyncSession, refund_id: str, *, method: str, reference: str, actor: str, note: str = ""
) -> Refund:
    """Finance paid the rider an escalated refund another way (`method`: bank, wechat, stripe), under the
    transfer's `reference`: refunds payable is cleared against where that money left from."""
    if method not in TRANSFER_ACCOUNTS:
        raise Conflict("Unknown transfer method", f"a transfer goes by {', '.join(TRANSFER_ACCOUNTS)}")
    refund = await _locked_refund(session, refund_id)
    _check_escalated(refund)
    before = snapshot(refund)
    refund.resolution_method, refund.resolution_ref = method, reference
    return await _settle_outside(
        session,
        refund,
        before,
        RefundResolution.PAID_BY_TRANSFER,
        TRANSFER_ACCOUNTS[method],
        memo=f"paid by {method} transfer {reference}",
        actor=actor,
        note=note,
    )


async def mark_refunded_offline(
    session: AsyncSession, refund_id: str, *, reference: str, actor: str, note: str = ""
) -> Refund:
    """An escalated refund was returned outside swapflow through its own provider (its merchant portal's
    handling of an abnormal refund), under `reference`: cleared like a landed refund, against the
    provider's clearing account. A wallet's or a plan's refund is resubmitted instead."""
    refund = await _locked_refund(session, refund_id)
    _check_escalated(refund)
    if refund.method in (PaymentMethod.WALLET, PaymentMethod.SUBSCRIPTION):
        raise Conflict("Not an outside refund", f"a {refund.method} refund is resubmitted, not refunded offline")
    before = snapshot(refund)
    refund.resolution_method, refund.resolution_ref = refund.method, reference
    return await _settle_outside(
        session,
        refund,
        before,
        RefundResolution.REFUNDED_OFFLINE,
        method_account(refund.method, refund.rider_id),
        memo=f"refunded offline by {refund.method}: {reference}",
        actor=actor,
        note=note,
    )


async def resubmit_refund(
    db: Database, settings: Settings, temporal: TemporalConnector, refund_id: str, *, actor: str, note: str = ""
) -> Refund:
    """Finance sends an escalated refund to its provider again: a new submission (a new key) followed by a
    new run of the refund workflow. Sent again while that run has not started (Temporal was unreachable),
    it starts it; otherwise Conflict."""
    async with db.transaction() as session:
        refund = await _locked_refund(session, refund_id)
        if not (refund.resolution == RefundResolution.RESUBMITTED and refund.status == RefundState.REQUESTED):
            _check_escalated(refund)
            before = snapshot(refund)
            refund.attempt += 1
            refund.key = refund_submission_key(refund.id, refund.attempt)
            refund.status, refund.provider_status, refund.provider_ref = RefundState.REQUESTED, None, None
            # Dated, and due, from the new submission's acceptance (which books it owed only if nothing did).
            refund.submitted_at = refund.expected_by = refund.final_at = None
            _resolved(refund, RefundResolution.RESUBMITTED, actor=actor, note=note)
            await _close_escalation_alert(session, refund.id)
            await session.flush()
            record_change(
                session, actor, RefundResolution.RESUBMITTED, "refund", refund.id, before, snapshot(refund), note
            )
    await start_refund(temporal, settings, refund, resubmission=True)
    return refund
