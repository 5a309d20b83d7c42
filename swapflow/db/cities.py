"""Which city a cabinet, a rider or a pack is in: what an operator's city scope is checked against."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from swapflow.db.network import Battery, Cabinet, Rider, Station
from swapflow.domain.network import CustodianKind
from swapflow.protocol.v1 import Channel


async def cabinet_city(session: AsyncSession, cabinet_id: str | None) -> str | None:
    """The city of the cabinet's station; None for no or an unknown cabinet."""
    if cabinet_id is None:
        return None
    return await session.scalar(
        select(Station.city_code).join(Cabinet, Cabinet.station_id == Station.id).where(Cabinet.id == cabinet_id)
    )


async def rider_city(session: AsyncSession, rider_id: str) -> str | None:
    return await session.scalar(select(Rider.city_code).where(Rider.id == rider_id))


async def battery_city(session: AsyncSession, battery: Battery) -> str | None:
    """Where a pack is: its cabinet's city (in a slot, or quarantined there) or its rider's; None in a
    depot or in repair."""
    if battery.custodian_kind in (CustodianKind.SLOT, CustodianKind.QUARANTINE):
        return await cabinet_city(session, battery.custodian_ref.rpartition("/")[0])
    if battery.custodian_kind == CustodianKind.RIDER:
        return await rider_city(session, battery.custodian_ref)
    return None


TOWER_TOPIC = "tower/"
"""The tower gateway's dead letters are kept under `tower/<cabinet id>` (`tower/<peer address>` before
the connection logged in)."""


def topic_cabinet(topic: ColumnElement[str] | InstrumentedAttribute[str], prefix: str) -> ColumnElement[str]:
    """In SQL: the cabinet id a device topic names (`<prefix>/cabinets/<id>/<channel>`, `tower/<id>`),
    or NULL; the caller joins it to `Cabinet.id`, so an id no cabinet has names none."""
    head = f"{prefix}/cabinets/"  # as protocol.v1.cabinet_topic writes it
    whens = [
        (
            and_(topic.startswith(head, autoescape=True), topic.endswith(f"/{channel.value}")),
            func.substr(topic, len(head) + 1, func.length(topic) - len(head) - len(channel.value) - 1),
        )
        for channel in Channel
    ]
    whens.append((topic.startswith(TOWER_TOPIC), func.substr(topic, len(TOWER_TOPIC) + 1)))
    return case(*whens)
