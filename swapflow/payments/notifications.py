"""Payment notifications (WeChat Pay notify, Stripe webhooks) after their signature was verified: what they
name, and what swapflow does with them. Each is recorded once (unique on provider + notification id) in the
same transaction as its effect; the provider's state is re-read rather than trusted from the message, and a
refund's state is passed on to its refund workflow.
"""

from __future__ import annotations

import hashlib
import logging
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from temporalio.service import RPCError, RPCStatusCode

from swapflow.db.engine import Database
from swapflow.db.money import PaymentNotification
from swapflow.payments.provider import (
    REFUND_NOTIFICATION_SIGNAL,
    PaymentMethod,
    PaymentProvider,
    ProviderPayment,
    ProviderRefund,
    refund_id_from_key,
)
from swapflow.services.temporal import TemporalConnector
from swapflow.workflows.refund_contract import refund_workflow_id

log = logging.getLogger(__name__)


class NotificationRejected(Exception):
    """A notification that is not authentic (bad signature, undecryptable) or stale: answered 4xx."""

    def __init__(self, reason: str, *, stale: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.stale = reason, stale


class NotificationMalformed(Exception):
    """An authentic notification whose content is not what the provider documents (a resource that is not an
    object, a key that is not text, ...): answered 400 and recorded as malformed, never acted on."""

    def __init__(
        self,
        reason: str,
        *,
        body: bytes = b"",
        notification_id: str | None = None,
        event_type: str = "",
        content: Any = None,
    ) -> None:
        super().__init__(reason)
        self.reason, self.body, self.notification_id, self.event_type, self.content = (
            reason,
            body,
            notification_id,
            event_type,
            content,
        )


MALFORMED = "malformed"  # the status of a recorded malformed notification
NOTIFICATION_ID_LENGTH: int = PaymentNotification.__table__.c.notification_id.type.length  # type: ignore[attr-defined]


def text_field(obj: dict[str, Any], name: str, *, where: str) -> str | None:
    """`obj[name]` when it is text, None when absent; anything else makes the notification malformed."""
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise NotificationMalformed(f"{where}.{name} is {type(value).__name__}, not text")
    return value


def object_value(value: Any, *, where: str) -> dict[str, Any]:
    """`value` when it is an object, {} when absent; anything else makes the notification malformed."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise NotificationMalformed(f"{where} is {type(value).__name__}, not an object")
    return value


async def record_malformed(db: Database, provider: PaymentMethod, malformed: NotificationMalformed) -> None:
    """Keep a malformed notification once, for whoever holds the provider's keys to explain: under its own id
    when it had a usable one, else under a digest of its body."""
    notification_id = malformed.notification_id
    if not notification_id or len(notification_id) > NOTIFICATION_ID_LENGTH:
        notification_id = f"body:{hashlib.sha256(malformed.body).hexdigest()[:40]}"
    payload = {
        "error": malformed.reason,
        "content": malformed.content if malformed.content is not None else malformed.body.decode("utf-8", "replace"),
    }
    try:
        async with db.transaction() as session:
            if (
                await session.scalar(
                    select(PaymentNotification.id).where(
                        PaymentNotification.provider == provider.value,
                        PaymentNotification.notification_id == notification_id,
                    )
                )
                is None
            ):
                session.add(
                    PaymentNotification(
                        provider=provider.value,
                        notification_id=notification_id,
                        event_type=malformed.event_type[:60],
                        key=None,
                        status=MALFORMED,
                        payload=payload,
                    )
                )
    except IntegrityError:
        pass  # a concurrent duplicate recorded it


class NotificationNotDelivered(Exception):
    """The refund workflow could not be signalled (Temporal unreachable or failing): nothing was recorded,
    so the provider's retry of the notification gets through."""


class NotificationSubject(StrEnum):
    PAYMENT = "payment"
    REFUND = "refund"
    OTHER = "other"  # an event we keep but act on in no way


class VerifiedNotification(BaseModel):
    """A notification whose signature and timestamp were checked (and, for WeChat, decrypted)."""

    provider: PaymentMethod
    notification_id: str
    event_type: str
    subject: NotificationSubject
    key: str | None  # our charge/refund key, when the notification names one
    payload: dict[str, Any]


class NotificationOutcome(StrEnum):
    RECORDED = "recorded"  # new; a refund's workflow (if it exists) got the re-read state
    DUPLICATE = "duplicate"  # seen before: nothing changed


async def process_notification(
    note: VerifiedNotification, provider: PaymentProvider, db: Database, temporal: TemporalConnector
) -> NotificationOutcome:
    """Record `note` once and pass a refund's re-read state to its workflow.

    Order matters: the provider is re-read first (outside any transaction: it is a network call), then the
    row is inserted and the workflow signalled inside one transaction. A signal that fails rolls the row
    back, so the provider's retry of the notification gets through; a commit that fails after the signal
    only means the workflow may hear the same state twice, which changes nothing. A refund workflow that
    does not exist (yet) is not started from here: its own poll finds the state.
    """
    if await _recorded(db, note):
        return NotificationOutcome.DUPLICATE
    state = await _reread(note, provider)
    try:
        async with db.transaction() as session:
            row = PaymentNotification(
                provider=note.provider.value,
                notification_id=note.notification_id,
                event_type=note.event_type,
                key=note.key,
                status=state.status.value if state else None,
                payload=note.payload,
            )
            session.add(row)
            await session.flush()  # a concurrent duplicate fails here, before anything is signalled
            if isinstance(state, ProviderRefund):
                row.workflow_id = await _signal_refund(state, temporal)
    except IntegrityError:
        return NotificationOutcome.DUPLICATE
    return NotificationOutcome.RECORDED


async def _recorded(db: Database, note: VerifiedNotification) -> bool:
    async with db.sessions() as session:
        found = await session.scalar(
            select(PaymentNotification.id).where(
                PaymentNotification.provider == note.provider.value,
                PaymentNotification.notification_id == note.notification_id,
            )
        )
    return found is not None


async def _reread(note: VerifiedNotification, provider: PaymentProvider) -> ProviderPayment | ProviderRefund | None:
    """The provider's current state of what the notification names (the message itself is only a hint)."""
    if note.key is None:
        return None
    if note.subject is NotificationSubject.REFUND:
        return await provider.find_refund(note.key)
    if note.subject is NotificationSubject.PAYMENT:
        return await provider.find_payment(note.key)
    return None


async def _signal_refund(state: ProviderRefund, temporal: TemporalConnector) -> str | None:
    """Signal the refund workflow; its id, or None when there is no such workflow (nothing waits)."""
    refund_id = refund_id_from_key(state.key)
    if refund_id is None:
        return None
    workflow_id = refund_workflow_id(refund_id)
    try:
        client = await temporal()
    except RuntimeError as exc:  # the SDK reports an unreachable server as RuntimeError
        raise NotificationNotDelivered(f"Temporal unreachable: {exc}") from exc
    try:
        await client.get_workflow_handle(workflow_id).signal(REFUND_NOTIFICATION_SIGNAL, state)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise NotificationNotDelivered(f"signal to {workflow_id} failed: {exc.message}") from exc
        log.info("refund notification for %s: no workflow %s; recorded only", state.key, workflow_id)
        return None
    return workflow_id
