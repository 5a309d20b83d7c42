"""Creating something once per Idempotency-Key: the same request again answers what the first created;
the key sent with another request is refused (IdempotencyKeyReused)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.domain.errors import IdempotencyKeyReused

T = TypeVar("T")


async def create_once(
    session: AsyncSession,
    *,
    find: Callable[[], Awaitable[T | None]],
    create: Callable[[], Awaitable[T | None]],
    differs: Callable[[T], str | None] = lambda _: None,
    reused_title: str = "Idempotency-Key reused",
) -> tuple[T, bool]:
    """What the key names (`find`), created now (`create`) if nothing yet. Returns (it, created now).

    `create` runs in a savepoint; a concurrent request under the same key may win the race, which
    `create` reports by returning None or by failing the key's unique constraint: what it made is found
    then. `differs` says how an existing one's request differs from this one (None: the same request),
    which refuses the key with that detail under `reused_title`; by default what a key names is the
    first request's, whatever the later ones ask."""
    existing = await find()
    if existing is None:
        try:
            async with session.begin_nested():
                made = await create()
        except IntegrityError:
            existing = await find()
            if existing is None:
                raise
        else:
            if made is not None:
                return made, True
            existing = await find()
            if existing is None:
                raise RuntimeError("create found what the key names, yet it cannot be read back")
    difference = differs(existing)
    if difference is not None:
        raise IdempotencyKeyReused(difference, title=reused_title)
    return existing, False
