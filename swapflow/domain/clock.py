"""The clock: timezone-aware UTC everywhere."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Timezone-aware now, the only clock the platform's code uses outside workflows."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """A timestamp as aware UTC. A naive one is taken as UTC, never as local time: SQLite hands stored
    timestamps back naive, and devices may omit the offset."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
