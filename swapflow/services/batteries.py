"""Battery packs as operators see them: the pack, the slot holding it, and its recent readings."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.devices import BatteryReadingRecord
from swapflow.db.network import Battery, Slot
from swapflow.domain.clock import utcnow
from swapflow.domain.errors import NotFound


async def find_battery(session: AsyncSession, serial: str) -> Battery:
    """The pack, or NotFound."""
    battery = await session.get(Battery, serial)
    if battery is None:
        raise NotFound("battery", serial)
    return battery


async def slot_of(session: AsyncSession, serial: str) -> Slot | None:
    """The slot holding the pack, if one does."""
    return await session.scalar(select(Slot).where(Slot.battery_serial == serial))


async def history(session: AsyncSession, serial: str, *, hours: float, limit: int) -> list[BatteryReadingRecord]:
    """The pack's readings of the last `hours`, newest first, at most `limit`."""
    since = utcnow() - timedelta(hours=hours)
    rows = await session.scalars(
        select(BatteryReadingRecord)
        .where(BatteryReadingRecord.battery_serial == serial, BatteryReadingRecord.at >= since)
        .order_by(BatteryReadingRecord.at.desc())
        .limit(limit)
    )
    return list(rows)
