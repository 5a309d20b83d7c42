"""What keeps one device from costing the others: a token bucket per cabinet (or pack) for its message
rate, and per-cabinet bounded queues served round-robin, so one cabinet's backlog never delays
another's events."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    """A token bucket per key: `rate_per_s` sustained, `burst` at once. A key whose bucket has refilled is
    forgotten (`forget_idle`), so keys that come and go (unknown ids) cost no memory for long."""

    def __init__(self, rate_per_s: float, burst: int, clock: Callable[[], float]) -> None:
        self._rate = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def allow(self, key: str) -> bool:
        """Take a token from the key's bucket; False when it has none left."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(self._burst, now)
        else:
            bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.at) * self._rate)
            bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def forget_idle(self) -> None:
        """Drop the buckets that would be full by now: they are as if never used."""
        now = self._clock()
        self._buckets = {
            key: b for key, b in self._buckets.items() if b.tokens + (now - b.at) * self._rate < self._burst
        }


class FairQueue(Generic[T]):
    """A bounded queue per key, served round-robin: `get` hands out the oldest item of the key whose turn
    it is, and a key is not handed out again until its item is `done` (its items stay in order, one at a
    time), after which it goes to the back of the line if it has more."""

    def __init__(self, per_key: int) -> None:
        self._per_key = per_key
        self._items: dict[str, deque[T]] = {}
        self._turns: asyncio.Queue[str] = asyncio.Queue()
        self._busy: set[str] = set()
        self._unfinished = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        return self._unfinished

    def put(self, key: str, item: T) -> bool:
        """Queue `item` under `key`; False (and nothing queued) when the key's queue is full."""
        items = self._items.setdefault(key, deque())
        if len(items) >= self._per_key:
            return False
        items.append(item)
        self._unfinished += 1
        self._idle.clear()
        if len(items) == 1 and key not in self._busy:
            self._turns.put_nowait(key)
        return True

    async def get(self) -> tuple[str, T]:
        """The next key in turn and its oldest item; call `done(key)` once it is handled."""
        key = await self._turns.get()
        self._busy.add(key)
        return key, self._items[key].popleft()

    def done(self, key: str) -> None:
        self._busy.discard(key)
        self._unfinished -= 1
        if self._items[key]:
            self._turns.put_nowait(key)
        else:
            del self._items[key]
        if not self._unfinished:
            self._idle.set()

    async def join(self) -> None:
        """Wait until every item put has been handled."""
        await self._idle.wait()
