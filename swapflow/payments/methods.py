"""A rider's payment methods as the database keeps them: several per rider, at most one the default
(what swaps, top-ups and plans are charged through), removed ones kept with `removed_at`. Changes take
the rider's row lock, so two at once for one rider never leave two defaults or none."""

from __future__ import annotations

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.money import RiderPaymentMethod
from swapflow.db.network import Rider
from swapflow.domain.clock import utcnow
from swapflow.payments.provider import PaymentMethod


async def lock_rider(session: AsyncSession, rider_id: str) -> Rider | None:
    """The rider, locked for the rest of the transaction (None: no such rider)."""
    return await session.get(Rider, rider_id, with_for_update=True)


async def active_methods(session: AsyncSession, rider_id: str) -> list[RiderPaymentMethod]:
    """The rider's methods not removed: the default first, then the newest."""
    return list(
        await session.scalars(
            select(RiderPaymentMethod)
            .where(RiderPaymentMethod.rider_id == rider_id, RiderPaymentMethod.removed_at.is_(None))
            .order_by(RiderPaymentMethod.is_default.desc(), RiderPaymentMethod.created_at.desc(), RiderPaymentMethod.id)
        )
    )


async def default_method(session: AsyncSession, rider_id: str) -> RiderPaymentMethod | None:
    """The method the rider's charges go through; None: the sandbox."""
    return await session.scalar(
        select(RiderPaymentMethod).where(RiderPaymentMethod.rider_id == rider_id, RiderPaymentMethod.is_default)
    )


async def make_default(session: AsyncSession, chosen: RiderPaymentMethod) -> None:
    """Make `chosen` (active) its rider's default; the previous default stops being it first."""
    previous = await default_method(session, chosen.rider_id)
    if previous is not None and previous.id != chosen.id:
        previous.is_default = False
        await session.flush()  # before the new default, or the one-default index refuses it
    chosen.is_default = True
    await session.flush()


async def add_method(
    session: AsyncSession,
    *,
    rider_id: str,
    method: PaymentMethod,
    label: str,
    payer: str | None = None,
    provider_ref: str | None = None,
    default: bool | None = None,
) -> tuple[RiderPaymentMethod, bool]:
    """The rider's active method for this `method`, `payer` and `provider_ref`, added if new; call with the
    rider locked. A new method becomes the default when `default` says so, or (None) when the rider has
    none. Returns (method, added)."""
    same = await session.scalar(
        select(RiderPaymentMethod).where(
            RiderPaymentMethod.rider_id == rider_id,
            RiderPaymentMethod.removed_at.is_(None),
            RiderPaymentMethod.method == method,
            RiderPaymentMethod.payer.is_(None) if payer is None else RiderPaymentMethod.payer == payer,
            RiderPaymentMethod.provider_ref.is_(None)
            if provider_ref is None
            else RiderPaymentMethod.provider_ref == provider_ref,
        )
    )
    if same is not None:
        if default:
            await make_default(session, same)
        return same, False
    row = RiderPaymentMethod(
        id=f"rpm_{uuid.uuid4().hex[:20]}",
        rider_id=rider_id,
        method=method,
        payer=payer,
        provider_ref=provider_ref,
        label=label,
        is_default=False,
        created_at=utcnow(),
    )
    session.add(row)
    await session.flush()
    if default or (default is None and await default_method(session, rider_id) is None):
        await make_default(session, row)
    return row, True


async def remove_method(session: AsyncSession, row: RiderPaymentMethod) -> RiderPaymentMethod | None:
    """Remove an active method (kept, with `removed_at`); call with the rider locked. A removed default
    hands over to the newest remaining method. Returns the default now (None: the sandbox)."""
    was_default = row.is_default
    row.is_default, row.removed_at = False, utcnow()
    await session.flush()
    if not was_default:
        return await default_method(session, row.rider_id)
    remaining = await active_methods(session, row.rider_id)
    if not remaining:
        return None
    await make_default(session, remaining[0])
    return remaining[0]
