"""The demo network's partners (swapflow.demo.partners): who they are, what they are on, how they are paid,
and their tokens in tokens.json, so `./dev up --simulate` accrues commissions and settles them."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select
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
from swapflow.db.engine import create_sync_engine
from swapflow.db.identity import ApiToken
from swapflow.db.migrate import upgrade
from swapflow.db.network import Rider, Station
from swapflow.demo.accounts import load_demo_tokens, seed_demo_accounts
from swapflow.demo.network import seed_demo_network
from swapflow.ops.accounts import PARTNER, hash_token


def seeded(url: str, **options: object) -> Session:
    upgrade(url)
    engine = create_sync_engine(url)
    seed_demo_network(engine, **{"stations_per_city": 2, "riders_per_city": 6, **options})  # type: ignore[arg-type]
    return Session(engine)


def count(session: Session, model: type, *where: object) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def test_every_station_has_a_host_every_city_a_franchisee_and_an_agent_with_two_sub_agents(
    empty_database_url: str,
) -> None:
    with seeded(empty_database_url) as session:
        assert count(session, StationHost) == count(session, Station) == 8
        assert count(session, CityFranchisee) == 4
        agents = session.execute(
            select(Partner.id, Partner.parent_id).where(Partner.kind == "channel_agent", Partner.id.like("agent-sh%"))
        ).all()
        assert sorted(agents) == [("agent-sh", None), ("agent-sh-1", "agent-sh"), ("agent-sh-2", "agent-sh")]
        # Every partner is on a plan of its city's currency.
        assert count(session, PlanAssignment) == count(session, Partner) == 8 + 4 + 4 * 3


def test_half_the_riders_are_brought_by_the_sub_agents(empty_database_url: str) -> None:
    with seeded(empty_database_url, riders_per_city=8) as session:
        attributed = session.scalars(select(PartnerAttribution.partner_id).join(Rider).where(Rider.city_code == "SH"))
        assert sorted(attributed) == ["agent-sh-1", "agent-sh-1", "agent-sh-2", "agent-sh-2"]  # riders 1, 5; 2, 6
        assert count(session, PartnerAttribution) == count(session, Rider) // 2


def test_the_plans_settle_on_the_demo_cadence_with_tiers_caps_overrides_and_a_minimum(
    empty_database_url: str,
) -> None:
    with seeded(empty_database_url, settlement_minutes=3) as session:
        assert set(session.execute(select(CommissionPlan.cadence, CommissionPlan.cadence_minutes))) == {("minutes", 3)}
        host, franchise, agents = (
            session.get_one(CommissionPlanVersion, (f"demo-{kind}-sh", 1))
            for kind in ("station-host", "city-franchisee", "channel-agent")
        )
        assert (host.fixed_minor, host.percent_bp) == (60, 300)
        assert (franchise.percent_bp, len(franchise.tiers), franchise.cap_minor) == (800, 2, 3_000)
        assert (agents.overrides_bp, agents.minimum_payout_minor) == ([2_000], 1_200)


def test_partners_are_paid_by_the_sandbox_but_one_by_bank_transfer(empty_database_url: str) -> None:
    with seeded(empty_database_url) as session:
        grouped = session.execute(select(Partner.payout_method, func.count()).group_by(Partner.payout_method))
        methods = {method: n for method, n in grouped}
        assert methods == {"sandbox": 23, "bank": 1}
        bank = session.scalars(select(Partner).where(Partner.payout_method == "bank")).one()
        assert bank.payout_details["account_number"]


def test_each_partner_gets_a_token_in_tokens_json(empty_database_url: str, tmp_path: Path) -> None:
    with seeded(empty_database_url) as session:
        engine = session.get_bind()
        assert seed_demo_accounts(engine, tmp_path)  # type: ignore[arg-type]
        tokens = load_demo_tokens(tmp_path).partners
        assert len(tokens) == count(session, Partner)
        row = session.get_one(ApiToken, hash_token(tokens["franchisee-sh"]))
        assert (row.principal_kind, row.principal_id) == (PARTNER, "franchisee-sh")
