"""A rider's reservation of a charged pack: how it ends, and the no-show rule (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum


class ReservationStatus(StrEnum):
    """Where a reservation is. Only `active` holds a pack; the others are how it ended."""

    ACTIVE = "active"
    USED = "used"  # a swap of its rider at its cabinet took it
    EXPIRED = "expired"  # the hold ran out while the pack could not be had (slot fault, cabinet offline)
    CANCELLED = "cancelled"  # its rider (or an operator) let it go
    NO_SHOW = "no_show"  # the hold ran out with the pack waiting for its rider


def blocked_until(
    no_shows: Sequence[datetime], *, now: datetime, limit: int, window: timedelta, block: timedelta
) -> datetime | None:
    """Until when a rider may not reserve, given when their no-shows happened: `limit` of them within
    `window` of now block them for `block` after the latest. None: not blocked (a limit of 0: never)."""
    if limit <= 0:
        return None
    recent = sorted(at for at in no_shows if at > now - window)
    if len(recent) < limit:
        return None
    until = recent[-1] + block
    return until if until > now else None
