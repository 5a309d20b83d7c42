"""Partners and commission plans over HTTP, against the real database: admins build the agent tree, hosts,
franchisees, versioned plans, assignments and attributions; what would not hold together is refused;
every change is audited; finance reads within its cities; a partner logs in with its own token."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from swapflow.api.app import create_app
from swapflow.cli import main
from swapflow.db.engine import Database, create_sync_engine
from swapflow.db.migrate import upgrade
from swapflow.demo.network import seed_demo_network
from swapflow.domain.clock import utcnow
from swapflow.domain.ops import OperatorRole
from swapflow.services.partners import attribute_by_referral
from swapflow.settings import Settings, get_settings
from tests.ops_harness import admin_headers, bearer, operator_token

SH_RIDER, BER_RIDER = "rider-sh-0001", "rider-ber-0001"


@pytest.fixture
def database_url(empty_database_url: str) -> str:
    """The demo network without its demo partners: these tests build partners from nothing."""
    upgrade(empty_database_url)
    engine = create_sync_engine(empty_database_url)
    seed_demo_network(
        engine,
        stations_per_city=2,
        riders_per_city=6,
        command_only_share=0.0,
        demo_pricing=False,
        demo_partners=False,
    )
    engine.dispose()
    return empty_database_url


@pytest.fixture
async def api(settings: Settings, db: Database) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=await admin_headers(db)) as client:
        yield client


def create(api: TestClient, partner_id: str, kind: str = "channel_agent", **fields: Any) -> dict[str, Any]:
    body = {"id": partner_id, "kind": kind, "name": partner_id, "cities": ["SH"], "payout_method": "bank", **fields}
    response = api.post("/v1/partners", json=body)
    assert response.status_code == 201, response.json()
    return response.json()


def terms(days_ago: float = 30, currency: str = "CNY", **fields: Any) -> dict[str, Any]:
    at = utcnow() - timedelta(days=days_ago)
    return {"effective_from": at.isoformat(), "currency": currency, "percent_bp": 500, **fields}


def create_plan(api: TestClient, plan_id: str, **fields: Any) -> dict[str, Any]:
    response = api.post("/v1/commission-plans", json={"id": plan_id, "name": plan_id, "terms": terms(**fields)})
    assert response.status_code == 201, response.json()
    return response.json()


def test_an_agent_tree_takes_its_time_zone_and_currency_from_the_first_city(api: TestClient) -> None:
    create(api, "agent-a", cities=["BER"], referral_code="berlin-a")
    create(api, "agent-b", parent_id="agent-a", cities=["BER"])

    b = api.get("/v1/partners/agent-b").json()
    assert (b["parent_id"], b["time_zone"], b["currency"]) == ("agent-a", "Europe/Berlin", "EUR")
    assert api.get("/v1/partners/agent-a").json()["referral_code"] == "BERLIN-A"  # codes are case-insensitive
    assert [p["id"] for p in api.get("/v1/partners", params={"parent_id": "agent-a"}).json()] == ["agent-b"]


def test_an_agent_cannot_be_put_under_its_own_descendant(api: TestClient) -> None:
    create(api, "agent-a")
    create(api, "agent-b", parent_id="agent-a")
    create(api, "agent-c", parent_id="agent-b")

    response = api.patch("/v1/partners/agent-a", json={"parent_id": "agent-c"})

    assert response.status_code == 409 and response.json()["title"] == "Cycle in the agent tree"
    assert api.get("/v1/partners/agent-a").json()["parent_id"] is None


def test_an_agents_parent_is_an_agent(api: TestClient) -> None:
    create(api, "host-1", kind="station_host")
    response = api.post(
        "/v1/partners",
        json={"kind": "channel_agent", "name": "x", "cities": ["SH"], "payout_method": "bank", "parent_id": "host-1"},
    )
    assert response.status_code == 409 and response.json()["title"] == "Parent not an agent"


def test_a_partner_in_cities_of_two_currencies_is_refused(api: TestClient) -> None:
    response = api.post(
        "/v1/partners",
        json={"kind": "station_host", "name": "x", "cities": ["SH", "BER"], "payout_method": "bank"},
    )
    assert response.status_code == 409 and response.json()["title"] == "Currency mismatch"


def test_a_station_is_hosted_only_by_a_station_host(api: TestClient) -> None:
    create(api, "agent-a")
    create(api, "host-1", kind="station_host")

    wrong = api.put("/v1/station-hosts/st-sh-001", json={"partner_id": "agent-a"})
    right = api.put("/v1/station-hosts/st-sh-001", json={"partner_id": "host-1"})

    assert wrong.status_code == 409 and wrong.json()["title"] == "Wrong kind of partner"
    assert right.json() == {"station_id": "st-sh-001", "partner_id": "host-1", "city_code": "SH"}
    assert api.get("/v1/station-hosts").json() == [right.json()]


def test_a_city_is_franchised_only_to_a_franchisee_working_in_it(api: TestClient) -> None:
    create(api, "fr-sz", kind="city_franchisee", cities=["SZ"])
    create(api, "fr-sh", kind="city_franchisee")

    elsewhere = api.put("/v1/city-franchisees/SH", json={"partner_id": "fr-sz"})
    here = api.put("/v1/city-franchisees/SH", json={"partner_id": "fr-sh"})

    assert elsewhere.status_code == 409 and elsewhere.json()["title"] == "Not in the city"
    assert here.json() == {"city_code": "SH", "partner_id": "fr-sh"}


def test_a_new_plan_version_is_a_new_row_and_a_version_in_force_never_changes(api: TestClient) -> None:
    create_plan(api, "plan-a")
    second = api.post("/v1/commission-plans/plan-a/versions", json=terms(days_ago=1, percent_bp=600))
    future = api.post("/v1/commission-plans/plan-a/versions", json=terms(days_ago=-7, percent_bp=700))

    corrected_in_force = api.put("/v1/commission-plans/plan-a/versions/1", json=terms(percent_bp=900))
    corrected_future = api.put("/v1/commission-plans/plan-a/versions/3", json=terms(days_ago=-7, percent_bp=650))

    assert (second.json()["version"], future.json()["version"]) == (2, 3)
    assert corrected_in_force.status_code == 409 and corrected_in_force.json()["title"] == "Version in force"
    versions = api.get("/v1/commission-plans/plan-a").json()["versions"]
    assert [(v["version"], v["percent_bp"]) for v in versions] == [(1, 500), (2, 600), (3, 650)]
    assert corrected_future.status_code == 200


def test_plan_terms_the_domain_refuses_are_refused(api: TestClient) -> None:
    tiers = [{"above_swaps": 1000, "percent_bp": 700}, {"above_swaps": 500, "percent_bp": 600}]
    response = api.post("/v1/commission-plans", json={"name": "p", "terms": terms(tiers=tiers)})
    assert response.status_code == 409 and response.json()["title"] == "Plan terms refused"
    assert "tiers ascend" in response.json()["detail"]


def test_a_partner_is_assigned_only_a_plan_in_its_currency(api: TestClient) -> None:
    create(api, "host-1", kind="station_host")
    create_plan(api, "plan-eur", currency="EUR")
    create_plan(api, "plan-cny")
    since = (utcnow() - timedelta(days=30)).isoformat()

    euros = api.post("/v1/partners/host-1/assignments", json={"plan_id": "plan-eur", "effective_from": since})
    yuan = api.post("/v1/partners/host-1/assignments", json={"plan_id": "plan-cny", "effective_from": since})
    again = api.post("/v1/partners/host-1/assignments", json={"plan_id": "plan-cny", "effective_from": since})

    assert euros.status_code == 409 and euros.json()["title"] == "Currency mismatch"
    assert (yuan.status_code, yuan.json()["assigned_by"]) == (201, "test-admin")
    assert again.status_code == 409  # one assignment per partner and time
    assert [a["plan_id"] for a in api.get("/v1/partners/host-1/assignments").json()] == ["plan-cny"]


async def test_a_rider_signing_up_with_a_referral_code_is_attributed_to_its_agent(
    api: TestClient, db: Database
) -> None:
    create(api, "agent-a", referral_code="SHA1")
    create(api, "agent-b", referral_code="SHB2")
    async with db.transaction() as session:
        await attribute_by_referral(session, SH_RIDER, " sha1 ")
    async with db.transaction() as session:
        await attribute_by_referral(session, SH_RIDER, "SHB2")  # already attributed: stays with agent-a

    attribution = api.get(f"/v1/riders/{SH_RIDER}/attribution").json()
    assert (attribution["partner_id"], attribution["source"], attribution["by"]) == ("agent-a", "referral", None)
    assert [a["rider_id"] for a in api.get("/v1/partners/agent-a/riders").json()] == [SH_RIDER]


def test_an_admin_attributes_a_rider_only_to_an_agent_of_the_riders_city(api: TestClient) -> None:
    create(api, "agent-a")

    elsewhere = api.put(f"/v1/riders/{BER_RIDER}/attribution", json={"partner_id": "agent-a"})
    here = api.put(f"/v1/riders/{SH_RIDER}/attribution", json={"partner_id": "agent-a", "reason": "met at a station"})

    assert elsewhere.status_code == 409 and elsewhere.json()["title"] == "Not in the city"
    assert (here.json()["source"], here.json()["by"]) == ("admin", "test-admin")


def test_every_change_is_audited_with_who_when_before_and_after(api: TestClient) -> None:
    started = utcnow()
    create(api, "host-1", kind="station_host", reason="signed the site contract")
    api.patch("/v1/partners/host-1", json={"name": "Host One", "reason": "typo"})

    trail = api.get("/v1/audit/partner/host-1").json()

    assert [(e["actor"], e["action"], e["reason"]) for e in trail] == [
        ("test-admin", "create", "signed the site contract"),
        ("test-admin", "update", "typo"),
    ]
    created, renamed = trail
    assert created["before"] is None and created["after"]["name"] == "host-1"
    assert (renamed["before"]["name"], renamed["after"]["name"]) == ("host-1", "Host One")
    assert all(datetime.fromisoformat(e["at"]) >= started for e in trail)


async def test_a_city_scoped_finance_account_sees_only_its_cities_partners(api: TestClient, db: Database) -> None:
    create(api, "host-sh", kind="station_host")
    create(api, "host-sz", kind="station_host", cities=["SZ"])
    finance_sz = bearer(await operator_token(db, "finance-sz", OperatorRole.FINANCE, ["SZ"]))

    assert api.get("/v1/partners/host-sh", headers=finance_sz).status_code == 404
    assert api.get("/v1/audit/partner/host-sh", headers=finance_sz).status_code == 404
    assert [p["id"] for p in api.get("/v1/partners", headers=finance_sz).json()] == ["host-sz"]
    assert api.get("/v1/partners/host-sz", headers=finance_sz).status_code == 200


async def test_finance_reads_partners_but_does_not_create_them(api: TestClient, db: Database) -> None:
    finance = bearer(await operator_token(db, "finance", OperatorRole.FINANCE))
    body = {"kind": "station_host", "name": "x", "cities": ["SH"], "payout_method": "bank"}
    assert api.post("/v1/partners", json=body, headers=finance).status_code == 403
    assert api.get("/v1/partners", headers=finance).status_code == 200


def test_a_partner_token_authenticates_the_partner_and_is_refused_on_admin_endpoints(api: TestClient) -> None:
    create(api, "agent-a")
    create(api, "agent-b")
    issued = api.post("/v1/partners/agent-a/tokens")
    partner = bearer(issued.json()["token"])

    assert issued.status_code == 201
    assert api.get("/v1/partners/agent-a", headers=partner).json()["id"] == "agent-a"
    assert api.get("/v1/partners/agent-b", headers=partner).status_code == 404
    assert api.get("/v1/partners", headers=partner).status_code == 403
    assert api.post("/v1/partners/agent-b/tokens", headers=partner).status_code == 403
    assert [e["action"] for e in api.get("/v1/audit/partner/agent-a").json()] == ["create", "issue_token"]


@pytest.fixture
def configured(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The test's database as the one `swapflow` commands use."""
    monkeypatch.setenv("SWAPFLOW_DATABASE_URL", database_url)
    get_settings.cache_clear()
    yield database_url
    get_settings.cache_clear()


def test_the_partners_commands_create_a_partner_and_print_its_token(
    api: TestClient, configured: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["partners", "create", "--id", "host-1", "--kind", "station_host", "--cities", "SH"]) == 0
    assert (
        main(["plans", "create", "--id", "plan-h", "--name", "hosts", "--currency", "CNY", "--percent-bp", "300"]) == 0
    )
    assert main(["partners", "assign", "host-1", "--plan", "plan-h"]) == 0
    assert main(["partners", "host", "st-sh-001", "--partner", "host-1"]) == 0
    capsys.readouterr()
    assert main(["partners", "token", "host-1"]) == 0
    token = capsys.readouterr().out.strip()

    assert api.get("/v1/partners/host-1", headers=bearer(token)).json()["time_zone"] == "Asia/Shanghai"
    assert api.get("/v1/station-hosts").json()[0]["partner_id"] == "host-1"
    assert [e["actor"] for e in api.get("/v1/audit/partner/host-1").json()] == ["cli", "cli"]
