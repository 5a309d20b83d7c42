"""The demo network's partners, so swaps accrue commissions and settlement runs come round: per station a
host, per city a franchisee and a two-level agent tree (an agent and its two sub-agents) with half the
city's riders attributed to the sub-agents. Every plan settles every `cadence_minutes` (the setting
`SWAPFLOW_SETTLEMENT_DEMO_CADENCE_MINUTES`). Seeded with the demo network (swapflow.demo.network)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from swapflow.db.commissions import (
    CityFranchisee,
    CommissionPlan,
    CommissionPlanVersion,
    Partner,
    PartnerAttribution,
    PlanAssignment,
    StationHost,
)
from swapflow.db.network import City, Rider, Station
from swapflow.domain.commissions import PartnerKind

EFFECTIVE_FROM = datetime(2025, 1, 1, tzinfo=UTC)
"""Since when the demo plans and assignments are in force."""
SEEDED_BY = "seed"
BANK_PAID_CITY = "BER"
"""The city whose franchisee is paid by bank transfer; every other demo partner by the sandbox."""


def demo_agent_of(rider_no: int) -> int | None:
    """The sub-agent (1 or 2) demo rider number `rider_no` was brought by: riders 1, 5, 9, ... by the
    first, 2, 6, 10, ... by the second, the others by none."""
    return {1: 1, 2: 2}.get(rider_no % 4)


def _plans(session: Session, city: City, cadence_minutes: int) -> dict[PartnerKind, str]:
    """The city's three plans, in its currency and scaled to its swap price: the host's (a fixed amount
    and a percentage per swap), the franchisee's (a percentage with volume tiers and a cap) and the
    agents' (a percentage, a 20 % override to the parent, a minimum payout)."""
    price, code = city.swap_price_minor, city.code.lower()
    terms: dict[PartnerKind, dict[str, Any]] = {
        PartnerKind.STATION_HOST: {"percent_bp": 300, "fixed_minor": price // 10},
        PartnerKind.CITY_FRANCHISEE: {
            "percent_bp": 800,
            "tiers": [{"above_swaps": 20, "percent_bp": 1_000}, {"above_swaps": 50, "percent_bp": 1_200}],
            "cap_minor": price * 5,
        },
        PartnerKind.CHANNEL_AGENT: {"percent_bp": 400, "overrides_bp": [2_000], "minimum_payout_minor": price * 2},
    }
    names = {
        PartnerKind.STATION_HOST: "station hosts",
        PartnerKind.CITY_FRANCHISEE: "franchise",
        PartnerKind.CHANNEL_AGENT: "agents",
    }
    plans = {}
    for kind, version in terms.items():
        plan_id = f"demo-{kind.value.replace('_', '-')}-{code}"
        session.add(
            CommissionPlan(
                id=plan_id,
                name=f"{city.name} {names[kind]}",
                cadence="minutes",
                cadence_minutes=cadence_minutes,
                created_by=SEEDED_BY,
            )
        )
        session.add(
            CommissionPlanVersion(
                plan_id=plan_id,
                version=1,
                effective_from=EFFECTIVE_FROM,
                currency=city.currency,
                created_by=SEEDED_BY,
                **version,
            )
        )
        plans[kind] = plan_id
    return plans


def _partner(session: Session, city: City, partner_id: str, kind: PartnerKind, name: str, **more: object) -> None:
    bank = kind == PartnerKind.CITY_FRANCHISEE and city.code == BANK_PAID_CITY
    session.add(
        Partner(
            id=partner_id,
            kind=kind,
            name=name,
            cities=[city.code],
            time_zone=city.timezone,
            currency=city.currency,
            payout_method="bank" if bank else "sandbox",
            payout_account=None if bank else f"sandbox-{partner_id}",
            payout_details=(
                {"holder": name, "bank": "Demo Bank", "account_number": "DE89370400440532013000"} if bank else {}
            ),
            **more,
        )
    )


def seed_demo_partners(session: Session, *, cadence_minutes: int) -> None:
    """Add the demo partners, their plans and the riders' attributions for every city of the network."""
    for city in session.scalars(select(City).order_by(City.code)).all():
        code = city.code.lower()
        plans = _plans(session, city, cadence_minutes)
        stations = session.scalars(select(Station).where(Station.city_code == city.code).order_by(Station.id)).all()
        hosts = {station.id: f"host-{station.id}" for station in stations}
        for station in stations:
            _partner(session, city, hosts[station.id], PartnerKind.STATION_HOST, f"{station.name} host")
        franchisee, agent = f"franchisee-{code}", f"agent-{code}"
        _partner(session, city, franchisee, PartnerKind.CITY_FRANCHISEE, f"{city.name} franchise")
        _partner(
            session, city, agent, PartnerKind.CHANNEL_AGENT, f"{city.name} agent", referral_code=f"{city.code}-AGENT"
        )
        session.flush()  # rows below point at these (no ORM relationships order the inserts)
        sub_agents = [f"{agent}-{n}" for n in (1, 2)]
        for n, sub_agent in enumerate(sub_agents, start=1):
            _partner(
                session,
                city,
                sub_agent,
                PartnerKind.CHANNEL_AGENT,
                f"{city.name} sub-agent {n}",
                parent_id=agent,
                referral_code=f"{city.code}-AGENT-{n}",
            )
        session.flush()
        session.add_all(StationHost(station_id=station, partner_id=host) for station, host in hosts.items())
        session.add(CityFranchisee(city_code=city.code, partner_id=franchisee))
        earning = [
            *((host, PartnerKind.STATION_HOST) for host in hosts.values()),
            (franchisee, PartnerKind.CITY_FRANCHISEE),
            *((partner, PartnerKind.CHANNEL_AGENT) for partner in (agent, *sub_agents)),
        ]
        session.add_all(
            PlanAssignment(
                partner_id=partner, plan_id=plans[kind], effective_from=EFFECTIVE_FROM, assigned_by=SEEDED_BY
            )
            for partner, kind in earning
        )
        for rider_id in session.scalars(select(Rider.id).where(Rider.city_code == city.code).order_by(Rider.id)):
            brought_by = demo_agent_of(int(rider_id.rsplit("-", 1)[-1]))
            if brought_by is not None:
                session.add(
                    PartnerAttribution(rider_id=rider_id, partner_id=sub_agents[brought_by - 1], source="referral")
                )
