"""Device timestamps, and seqs counted from device clocks, bounded by the platform's clock. A cabinet
or pack whose clock jumps must not freeze what the platform knows of it: a time far ahead would win
every "newer than" comparison (last seen, a pack's latest reading, the door a report shows) until the
real clock caught up, and one far behind would lose every one. Such a time is replaced by the time the
message was received, and counted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypeVar

from prometheus_client import Counter

from swapflow.domain.clock import as_utc, utcnow
from swapflow.protocol.v1 import BatteryTelemetry, Telemetry

M = TypeVar("M", Telemetry, BatteryTelemetry)


class DeviceClock:
    """Bounds device timestamps to [now - `max_age_s`, now + `skew_s`]."""

    def __init__(self, skew_s: float, max_age_s: float, clamped: Counter) -> None:
        self._skew = timedelta(seconds=skew_s)
        self._max_age = timedelta(seconds=max_age_s)
        self._clamped = clamped

    def bound(self, stamped: datetime, *, past: bool = True) -> datetime:
        """`stamped` in UTC, or now when it lies beyond the allowed skew ahead (or, with `past`, further back
        than the allowed age). State messages pass `past=False`: an old retained one must stay old."""
        at, now = as_utc(stamped), utcnow()
        if at > now + self._skew:
            self._clamped.labels("future").inc()
            return now
        if past and at < now - self._max_age:
            self._clamped.labels("past").inc()
            return now
        return at

    def bound_seq(self, seq: int) -> int:
        """A seq as a watermark. Devices count it from their clock in milliseconds, so one beyond the allowed
        skew came from a clock that jumped, and would hold back every later message until the device's
        next birth: as a watermark it is taken as the receive time, like the message's timestamp."""
        now = utcnow()
        return seq if seq <= (now + self._skew).timestamp() * 1000 else int(now.timestamp() * 1000)

    def bound_report(self, message: M) -> M:
        """A telemetry or pack report with its timestamp bounded."""
        at = self.bound(message.ts)
        return message if at == message.ts else message.model_copy(update={"ts": at})
