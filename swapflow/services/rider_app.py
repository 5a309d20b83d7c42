"""What the riders' phone page reads: a rider's own swaps (another rider's do not exist for them), a
swap as the live page shows it (with the refund of a failed one, and the pack handed over with its
state of charge), where to look for cabinets without the phone's location, a cabinet by the code on its label,
and the rider's wallet and plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.money import Refund, Wallet, WalletTopUp
from swapflow.db.network import Battery, Cabinet, City, Station
from swapflow.db.swaps import SwapOrder
from swapflow.domain.errors import NotFound
from swapflow.domain.swaps import SwapStatus
from swapflow.payments.confirmation import confirmation_params
from swapflow.payments.refunds import charge_key
from swapflow.services.network import find_rider


@dataclass(frozen=True)
class RiderSwap:
    """A swap as its rider sees it: the order, the refund a failed one opened, the pack handed over."""

    order: SwapOrder
    refund: Refund | None
    issued: Battery | None
    pay_sheet: dict[str, Any] | None = None
    """While the swap's payment waits for the rider (WeChat Pay): what WeChat's pay sheet is opened with."""


async def city_centre(session: AsyncSession, city_code: str) -> tuple[float, float] | None:
    """The middle of a city's stations (where to look without the phone's location); None: no stations."""
    lat, lon = (
        await session.execute(
            select(func.avg(Station.lat), func.avg(Station.lon)).where(Station.city_code == city_code)
        )
    ).one()
    return None if lat is None or lon is None else (float(lat), float(lon))


async def cabinet_by_code(session: AsyncSession, code: str) -> str:
    """The id of the cabinet whose label reads `code` (its id, in any case, spaces around ignored)."""
    typed = code.strip()
    if typed and await session.get(Cabinet, typed) is not None:
        return typed
    found = await session.scalar(select(Cabinet.id).where(func.lower(Cabinet.id) == typed.lower())) if typed else None
    if found is None:
        raise NotFound("cabinet", code.strip(), detail=f"no cabinet has the code {code.strip()!r}")
    return found


async def rider_swaps(session: AsyncSession, rider_id: str, limit: int) -> list[SwapOrder]:
    """The rider's swaps, newest first."""
    return list(
        await session.scalars(
            select(SwapOrder)
            .where(SwapOrder.rider_id == rider_id)
            .order_by(SwapOrder.created_at.desc(), SwapOrder.id)
            .limit(limit)
        )
    )


async def rider_swap(session: AsyncSession, rider_id: str, swap_id: str) -> RiderSwap:
    """One of the rider's swaps with its refund and the pack handed over; NotFound for another rider's."""
    order = await session.get(SwapOrder, swap_id)
    if order is None or order.rider_id != rider_id:
        raise NotFound("swap", swap_id)
    refund = await session.get(Refund, order.refund_ref) if order.refund_ref else None
    issued = (
        await session.get(Battery, order.issued_battery_serial)
        if order.issued_battery_serial and order.status == SwapStatus.COMPLETED
        else None
    )
    pay_sheet = (
        await confirmation_params(session, charge_key(order.id)) if order.status == SwapStatus.IN_PROGRESS else None
    )
    return RiderSwap(order, refund, issued, pay_sheet)


TOP_UP_SWAPS = (5, 10, 20)
"""The top-ups the page offers: so many swaps' worth at the rider's city's price."""


async def top_up_choices(session: AsyncSession, rider_id: str) -> tuple[str, list[int]]:
    """The currency of the rider's wallet and the amounts (minor units) the page offers to top up."""
    rider = await find_rider(session, rider_id)
    city = await session.get(City, rider.city_code)
    if city is None:
        raise NotFound("city", rider.city_code)
    return city.currency, [city.swap_price_minor * swaps for swaps in TOP_UP_SWAPS]


async def wallet_of(session: AsyncSession, rider_id: str) -> Wallet | None:
    """The rider's wallet; None until their first top-up or credit."""
    return await session.get(Wallet, rider_id)


async def recent_top_ups(session: AsyncSession, rider_id: str, limit: int) -> list[WalletTopUp]:
    return list(
        await session.scalars(
            select(WalletTopUp)
            .where(WalletTopUp.rider_id == rider_id)
            .order_by(WalletTopUp.created_at.desc(), WalletTopUp.id)
            .limit(limit)
        )
    )
