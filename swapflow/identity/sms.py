"""Text messages to riders' phones (their sign-in codes). `SmsSender` is what sends one; a deployment
plugs in its SMS provider's. The default, `LogSmsSender`, is for development: it writes each message to
the log and, with the dev inbox on, keeps it in `dev_sms_messages`, which GET /v1/dev/sms-inbox shows
to every process (the API, the demo, the tests)."""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.db.rider_auth import DevSmsMessage
from swapflow.domain.clock import utcnow

log = logging.getLogger(__name__)


class SmsSender(Protocol):
    async def send(self, phone: str, text: str) -> None:
        """Send `text` to `phone` (E.164); raise when it could not be handed to the network."""


class LogSmsSender:
    """Sends nothing: logs the message and, when `inbox` is given, keeps it there."""

    def __init__(self, inbox: Database | None) -> None:
        self.inbox = inbox

    async def send(self, phone: str, text: str) -> None:
        log.info("SMS to %s: %s", phone, text)
        if self.inbox is not None:
            async with self.inbox.transaction() as session:
                session.add(DevSmsMessage(phone=phone, text=text, sent_at=utcnow()))


async def inbox_messages(session: AsyncSession, phone: str, limit: int = 20) -> list[DevSmsMessage]:
    """The latest messages the development sender kept for `phone`, newest first."""
    rows = await session.scalars(
        select(DevSmsMessage)
        .where(DevSmsMessage.phone == phone)
        .order_by(DevSmsMessage.sent_at.desc(), DevSmsMessage.id.desc())
        .limit(limit)
    )
    return list(rows)
