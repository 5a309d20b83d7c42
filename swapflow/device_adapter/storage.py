"""The adapter's writes: a unit of work run in a transaction, again from the start while the database
is briefly unavailable; telemetry's commits that need not wait for the WAL flush; and the record of a
device message, whose unique key recognises a redelivery (or another adapter's copy) as a duplicate."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from swapflow.db.devices import DeviceMessage
from swapflow.db.engine import Database
from swapflow.db.network import Cabinet
from swapflow.device_adapter.payloads import Rejected
from swapflow.domain.clock import utcnow

log = logging.getLogger(__name__)

T = TypeVar("T")


class Storage:
    """The adapter's database: `transaction` retries for up to `retry_s`."""

    def __init__(self, db: Database, *, retry_s: float) -> None:
        self._db = db
        self._retry_s = retry_s
        self.postgres = db.engine.dialect.name == "postgresql"
        self.insert = postgresql.insert if self.postgres else sqlite.insert
        """The dialect's INSERT, which has ON CONFLICT."""

    @property
    def sessions(self) -> async_sessionmaker[AsyncSession]:
        """Sessions for reads."""
        return self._db.sessions

    async def transaction(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `work` in a transaction, again from the start while the database is briefly unavailable
        or locked (bounded by `retry_s`)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_s
        delay = 0.05
        while True:
            try:
                async with self._db.transaction() as session:
                    return await work(session)
            except (OperationalError, InterfaceError) as exc:
                # Cancelled mid-statement (a COPY, say), the pool's rollback of the busy connection fails
                # and its error replaces the CancelledError: retrying would swallow the cancellation and
                # keep a stopping adapter writing forever.
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from exc
                if loop.time() + delay > deadline:
                    raise
                log.warning("database unavailable (%s); retrying in %.2fs", exc.orig or exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def relaxed_commit(self, session: AsyncSession) -> None:
        """On PostgreSQL, let this (telemetry) transaction commit without waiting for its WAL flush."""
        if self.postgres:
            await session.execute(text("SET LOCAL synchronous_commit TO OFF"))

    async def record(
        self,
        session: AsyncSession,
        cabinet_id: str,
        message_id: str,
        kind: str,
        topic: str,
        payload: dict[str, Any],
        workflow_id: str | None = None,
    ) -> bool:
        """Insert the device message; False when it is already there (a duplicate)."""
        statement = (
            self.insert(DeviceMessage)
            .values(
                cabinet_id=cabinet_id,
                message_id=message_id,
                kind=kind,
                topic=topic[:200],
                payload=payload,
                workflow_id=workflow_id,
                received_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["cabinet_id", "message_id"])
            .returning(DeviceMessage.id)
        )
        return (await session.execute(statement)).scalar_one_or_none() is not None


async def known_cabinet(session: AsyncSession, cabinet_id: str) -> Cabinet:
    """The cabinet; Rejected when there is none of that id."""
    cabinet = await session.get(Cabinet, cabinet_id)
    if cabinet is None:
        raise Rejected(f"unknown cabinet {cabinet_id!r}")
    return cabinet
