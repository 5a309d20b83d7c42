"""The adapter's dead letters: messages it could not accept or route, kept for an operator. They are
collected in memory and written in batches (a flood of bad messages must not cost a transaction each),
a repeat of one fault only counted on its row; cabinets that went over their rate raise an alert with
the same write, and letters past their retention are deleted now and then."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.base import table_of
from swapflow.db.devices import DeadLetter
from swapflow.device_adapter.metrics import AdapterMetrics
from swapflow.device_adapter.storage import Storage
from swapflow.domain.clock import utcnow
from swapflow.ops.alerts import DEVICE_FLOOD, raise_alert
from swapflow.settings import Settings
from swapflow.workflows.swap_contract import FaultReport

log = logging.getLogger(__name__)

_MAX_PENDING_LETTERS = 10_000  # distinct dead letters waiting for the next batch write; more are only counted
_DEAD_LETTER_WINDOW_S = 3600  # repeats of one fault within this window count on one row
_DEAD_LETTER_INSERT_ROWS = 500  # rows per insert statement (SQLite's bound on parameters)
_EXPIRY_INTERVAL_S = 3600.0  # how often dead letters past their retention are deleted
_EXPIRY_BATCH = 5_000  # dead letters deleted per transaction


@dataclass
class _Letter:
    """Dead letters of one fault waiting for the next batch write: the first payload, and how often."""

    topic: str
    payload: str
    reason: str
    first_at: datetime
    last_at: datetime
    occurrences: int = 1


@dataclass(eq=False)
class DeadLetters:
    """Collects dead letters and flooding cabinets until `flush`; `on_reject` counts each letter."""

    settings: Settings
    metrics: AdapterMetrics
    storage: Storage
    _: KW_ONLY
    on_reject: Callable[[], None]
    # By dedupe key (repeats of one fault are counted).
    _letters: dict[str, _Letter] = field(default_factory=dict, init=False)
    _lost: int = field(default=0, init=False)  # distinct dead letters beyond _MAX_PENDING_LETTERS since the last write
    _flooding: set[str] = field(default_factory=set, init=False)  # cabinets over their rate since the last write
    _next_expiry: float = field(default=0.0, init=False)  # loop time of the next expiry of old dead letters

    def reject(self, topic: str, payload: bytes, reason: str) -> None:
        """Keep a message that could not be accepted, for an operator, at the next batch write: its payload
        cut to a bounded size, and a repeat of the same fault (topic and reason, within a window) only
        counted."""
        self.on_reject()
        self.metrics.dead_letter(reason)
        window = int(time.time() // _DEAD_LETTER_WINDOW_S)
        key = hashlib.sha256(f"{topic}\0{reason}\0{window}".encode()).hexdigest()
        now = utcnow()
        letter = self._letters.get(key)
        if letter is not None:
            letter.occurrences += 1
            letter.last_at = now
        elif len(self._letters) < _MAX_PENDING_LETTERS:
            text = DeadLetter.text(payload, self.settings.devices.dead_letter_max_payload_bytes)
            self._letters[key] = _Letter(DeadLetter.text(topic, 300), text, DeadLetter.text(reason, 2000), now, now)
        else:
            self._lost += 1

    def flooding(self, cabinet_id: str) -> None:
        """The cabinet went over its rate: alert with the next write."""
        self._flooding.add(cabinet_id)

    async def flush(self) -> None:
        """Write the dead letters waiting (adding repeats to the rows of their fault), and raise an alert
        for each cabinet that went over its rate meanwhile. Never raises."""
        letters, self._letters = self._letters, {}
        flooding, self._flooding = self._flooding, set()
        lost, self._lost = self._lost, 0
        if not letters and not flooding:
            return
        sample = next(iter(letters.values()), None)
        if sample is not None:
            log.warning(
                "%d dead letters (%d kinds%s), e.g. on %s: %s",
                sum(x.occurrences for x in letters.values()),
                len(letters),
                f", {lost} more not kept" if lost else "",
                sample.topic,
                sample.reason,
            )
        rows = [
            {
                "dedupe_key": key,
                "topic": x.topic,
                "payload": x.payload,
                "reason": x.reason,
                "received_at": x.first_at,
                "last_seen_at": x.last_at,
                "occurrences": x.occurrences,
            }
            for key, x in letters.items()
        ]
        table = table_of(DeadLetter)

        async def work(session: AsyncSession) -> None:
            for start in range(0, len(rows), _DEAD_LETTER_INSERT_ROWS):
                statement = self.storage.insert(table).values(rows[start : start + _DEAD_LETTER_INSERT_ROWS])
                await session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["dedupe_key"],
                        set_={
                            "occurrences": table.c.occurrences + statement.excluded.occurrences,
                            "last_seen_at": statement.excluded.last_seen_at,
                        },
                    )
                )
            for cabinet_id in sorted(flooding):
                await raise_alert(
                    session,
                    FaultReport(
                        kind=DEVICE_FLOOD,
                        severity="warning",
                        cabinet_id=cabinet_id,
                        message=f"cabinet {cabinet_id} sent more than {self.settings.devices.device_rate_per_s:g} "
                        "messages a second; the excess was dropped (see its dead letters)",
                    ),
                )

        try:
            await self.storage.transaction(work)
        except Exception:
            log.exception("could not store %d dead letters", len(rows))

    async def expire_when_due(self) -> None:
        """Expire old dead letters if the last expiry was long enough ago. Never raises."""
        if asyncio.get_running_loop().time() < self._next_expiry:
            return
        self._next_expiry = asyncio.get_running_loop().time() + _EXPIRY_INTERVAL_S
        try:
            await self.expire()
        except Exception:
            log.exception("failed to expire old dead letters")

    async def expire(self) -> int:
        """Delete the dead letters last seen longer ago than their retention; returns how many."""
        cutoff = utcnow() - timedelta(days=self.settings.devices.dead_letter_retention_days)
        table = table_of(DeadLetter)
        old = (
            select(table.c.id)
            .where(table.c.received_at < cutoff, or_(table.c.last_seen_at.is_(None), table.c.last_seen_at < cutoff))
            .limit(_EXPIRY_BATCH)
        )
        deleted = 0
        while True:

            async def work(session: AsyncSession) -> int:
                result = await session.execute(table.delete().where(table.c.id.in_(old.scalar_subquery())))
                return int(result.rowcount)  # type: ignore[attr-defined]

            batch = await self.storage.transaction(work)
            deleted += batch
            if batch < _EXPIRY_BATCH:
                return deleted
