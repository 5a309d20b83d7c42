"""The ops API: tokens for every non-public endpoint, operators confined to their cities, riders to
their own swaps; figures from recorded transitions; device traces."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from swapflow.api.app import create_app
from swapflow.db.devices import DeadLetter
from swapflow.db.engine import Database
from swapflow.db.network import Cabinet
from swapflow.db.ops import Alert, WorkOrderEvent
from swapflow.db.swaps import CustodyEvent, SwapOrder
from swapflow.device_adapter.presence import record_transition
from swapflow.domain.clock import utcnow
from swapflow.domain.network import PresenceCause
from swapflow.domain.ops import OperatorRole
from swapflow.domain.swaps import SwapStatus
from swapflow.services.work_orders import new_work_order
from swapflow.settings import Settings
from tests.ops_harness import bearer, operator_token, rider_token
from tests.swap_harness import new_order

SH_CABINET = "cab-sh-001-1"
SZ_CABINET = "cab-sz-001-1"


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
async def ops_sh(db: Database) -> dict[str, str]:
    return bearer(await operator_token(db, "ops-sh", OperatorRole.OPERATOR, ["SH"]))


@pytest.fixture
async def sz_order(db: Database) -> str:
    """A work order at a Shenzhen cabinet."""
    async with db.transaction() as session:
        order = await new_work_order(
            session,
            cabinet_id=SZ_CABINET,
            slot_no=2,
            kind="door_fault",
            severity="warning",
            source="operator",
            description="jammed",
        )
        return order.id


async def test_an_operator_of_one_city_cannot_see_or_act_on_another_citys_work_order(
    api: TestClient, ops_sh: dict[str, str], sz_order: str
) -> None:
    assert api.get(f"/v1/ops/work-orders/{sz_order}", headers=ops_sh).status_code == 404
    assert api.post(f"/v1/ops/work-orders/{sz_order}/cancel", json={}, headers=ops_sh).status_code == 404
    assert api.get("/v1/ops/work-orders", params={"city": "SZ"}, headers=ops_sh).status_code == 403
    assert api.get("/v1/ops/work-orders", params={"status": "all"}, headers=ops_sh).json() == []
    assert api.get(f"/v1/ops/trace/cabinets/{SZ_CABINET}", headers=ops_sh).status_code == 404


async def test_an_operator_of_the_city_sees_its_work_order_and_timeline(
    api: TestClient, db: Database, sz_order: str
) -> None:
    ops_sz = bearer(await operator_token(db, "ops-sz", OperatorRole.OPERATOR, ["SZ"]))
    order = api.get(f"/v1/ops/work-orders/{sz_order}", headers=ops_sz).json()
    assert (order["cabinet_id"], order["city_code"], order["workflow_id"]) == (
        SZ_CABINET,
        "SZ",
        f"workorder/{sz_order}",
    )


async def test_an_operator_of_one_city_sees_only_its_alerts(
    api: TestClient, db: Database, ops_sh: dict[str, str]
) -> None:
    async with db.transaction() as session:
        for cabinet in (SH_CABINET, SZ_CABINET):
            session.add(
                Alert(
                    kind="slot_fault",
                    severity="warning",
                    dedupe_key=f"slot_fault:{cabinet}:1:-",
                    cabinet_id=cabinet,
                    slot_no=1,
                    message="charger",
                )
            )
    alerts = api.get("/v1/ops/alerts", headers=ops_sh).json()
    assert [(a["cabinet_id"], a["city_code"]) for a in alerts] == [(SH_CABINET, "SH")]


def test_the_ops_api_wants_a_token(api: TestClient) -> None:
    response = api.get("/v1/ops/alerts")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


async def test_a_rider_may_not_use_the_ops_api(api: TestClient, db: Database) -> None:
    rider = bearer(await rider_token(db, "rider-sh-0001"))
    assert api.get("/v1/ops/alerts", headers=rider).status_code == 403


async def test_a_rider_sees_only_their_own_swaps(api: TestClient, db: Database) -> None:
    order_id = await new_order(db, "rider-sh-0001", SH_CABINET)
    async with db.transaction() as session:  # finished: read from the database, no workflow needed
        await session.execute(update(SwapOrder).where(SwapOrder.id == order_id).values(status=SwapStatus.FAILED))
    owner = bearer(await rider_token(db, "rider-sh-0001"))
    other = bearer(await rider_token(db, "rider-sh-0002"))
    assert api.get(f"/v1/swaps/{order_id}", headers=owner).json()["rider_id"] == "rider-sh-0001"
    assert api.get(f"/v1/swaps/{order_id}", headers=other).status_code == 404
    assert api.get("/v1/riders/rider-sh-0001", headers=other).status_code == 404


async def test_a_rider_may_not_start_a_swap_for_another_rider(api: TestClient, db: Database) -> None:
    other = bearer(await rider_token(db, "rider-sh-0002"))
    response = api.post(
        "/v1/swaps",
        json={"rider_id": "rider-sh-0001", "cabinet_id": SH_CABINET},
        headers={"Idempotency-Key": "theirs", **other},
    )
    assert response.status_code == 403


async def test_uptime_is_computed_from_the_recorded_transitions(
    api: TestClient, db: Database, ops_sh: dict[str, str]
) -> None:
    end = utcnow().replace(microsecond=0)
    start = end - timedelta(hours=1)
    async with db.transaction() as session:
        await session.execute(update(Cabinet).where(Cabinet.id == SH_CABINET).values(online=True))
        record_transition(session, SH_CABINET, True, PresenceCause.BIRTH, start - timedelta(hours=1))
        record_transition(session, SH_CABINET, False, PresenceCause.LAST_WILL, start + timedelta(minutes=10))
        record_transition(session, SH_CABINET, True, PresenceCause.BIRTH, start + timedelta(minutes=16))
    report = api.get(
        "/v1/ops/figures/uptime",
        headers=ops_sh,
        params={"scope": "cabinet", "key": SH_CABINET, "from": start.isoformat(), "to": end.isoformat()},
    ).json()
    [item] = report["items"]
    assert (item["observed_s"], item["online_s"], item["transitions"]) == (3600.0, 3240.0, 2)
    assert item["uptime"] == 0.9


async def test_a_cabinet_trace_orders_its_custody_changes_alerts_and_work_order_steps(
    api: TestClient, db: Database, ops_sh: dict[str, str]
) -> None:
    now = utcnow()
    async with db.transaction() as session:
        order = await new_work_order(
            session,
            cabinet_id=SH_CABINET,
            slot_no=3,
            kind="door_fault",
            severity="warning",
            source="alert",
            description="jammed",
        )
        session.add(
            Alert(
                kind="door_fault",
                severity="warning",
                dedupe_key=f"door_fault:{SH_CABINET}:3:-",
                cabinet_id=SH_CABINET,
                slot_no=3,
                message="jammed",
                created_at=now - timedelta(minutes=2),
            )
        )
        session.add(WorkOrderEvent(work_order_id=order.id, seq=1, kind="opened", detail="", at=now))
        session.add(
            CustodyEvent(
                key="t1",
                battery_serial="BAT0000001",
                from_kind="slot",
                from_ref=f"{SH_CABINET}/1",
                to_kind="rider",
                to_ref="rider-sh-0001",
                reason="swap",
                at=now - timedelta(minutes=1),
            )
        )
    trace = api.get(f"/v1/ops/trace/cabinets/{SH_CABINET}", headers=ops_sh).json()
    entries = trace["entries"]
    mine = [e["kind"] for e in entries if e["kind"] in ("alert", "work_order") or e["data"].get("key") == "t1"]
    assert mine == ["alert", "custody", "work_order"]
    assert [e["at"] for e in entries] == sorted(e["at"] for e in entries)


async def dead_letters_at(db: Database, settings: Settings) -> None:
    """A dead letter from each of a Shanghai and a Shenzhen cabinet (over MQTT and the tower gateway), and
    one from a device no cabinet is registered as."""
    prefix = settings.mqtt.topic_prefix
    async with db.transaction() as session:
        for topic in (
            f"{prefix}/cabinets/{SH_CABINET}/events",
            f"{prefix}/cabinets/{SZ_CABINET}/telemetry",
            f"tower/{SZ_CABINET}",
            f"{prefix}/cabinets/cab-unknown/events",
        ):
            session.add(DeadLetter(topic=topic, payload='{"secret": 1}', reason="bad payload"))


async def test_an_operator_of_one_city_reads_only_its_cabinets_dead_letters(
    api: TestClient, db: Database, settings: Settings, ops_sh: dict[str, str]
) -> None:
    await dead_letters_at(db, settings)
    letters = api.get("/v1/dead-letters", headers=ops_sh).json()
    assert [d["topic"] for d in letters] == [f"{settings.mqtt.topic_prefix}/cabinets/{SH_CABINET}/events"]
    assert api.get("/v1/dead-letters", params={"city": "SZ"}, headers=ops_sh).status_code == 403


async def test_dead_letters_of_an_unknown_device_are_for_network_wide_roles_only(
    api: TestClient, db: Database, settings: Settings
) -> None:
    await dead_letters_at(db, settings)
    admin = bearer(await operator_token(db, "admin", OperatorRole.ADMIN))
    letters = api.get("/v1/dead-letters", headers=admin).json()
    assert [(d["cabinet_id"], d["city_code"]) for d in letters] == [
        (None, None),
        (SZ_CABINET, "SZ"),
        (SZ_CABINET, "SZ"),
        (SH_CABINET, "SH"),
    ]
    ops_sz = bearer(await operator_token(db, "ops-sz", OperatorRole.OPERATOR, ["SZ"]))
    assert [d["topic"] for d in api.get("/v1/dead-letters", headers=ops_sz).json()] == [
        f"tower/{SZ_CABINET}",
        f"{settings.mqtt.topic_prefix}/cabinets/{SZ_CABINET}/telemetry",
    ]
