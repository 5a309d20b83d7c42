"""Reserving a charged pack, over HTTP against the real database, worker and time-skipping server: the pack
is held for its rider by workflow `reservation/<id>` until their swap at the cabinet takes it, they cancel,
or the hold runs out (a no-show, counted; too many block new reservations for a while). Nobody else is
issued a held pack, and of two riders asking for a cabinet's last pack exactly one gets it. The full swap
that uses a reservation runs with a simulated cabinet at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from swapflow.activities.swap import SwapRecords
from swapflow.db.engine import Database
from swapflow.db.network import Battery, Slot
from swapflow.db.reservations import Reservation
from swapflow.db.swaps import SwapOrder
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.ops import OperatorRole
from swapflow.domain.reservations import ReservationStatus
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.ops.invariants import check_invariants
from swapflow.services import reservations
from swapflow.services.swaps import swap_request
from swapflow.settings import Settings
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.fleet import sim_battery
from swapflow.workflows.reservation_contract import ReservationOutcome
from swapflow.workflows.swap import SwapWorkflow
from swapflow.workflows.swap_contract import SwapRejectedError, SwapRequest, swap_workflow_id
from tests.api_harness import app_sharing
from tests.conftest import test_server_path as time_skipping_server_path
from tests.history_recording import RecordHistory
from tests.ops_harness import bearer, operator_token, rider_token
from tests.swap_harness import battery_of, new_order, running_cabinet, running_worker, set_online

CABINET = "cab-sh-001-1"  # slots 1-9 hold packs, 10-12 are empty
OTHER_CABINET = "cab-sh-002-1"
RIDER, OTHER_RIDER = "rider-sh-0001", "rider-sh-0002"
RESERVATIONS = "/v1/reservations"


@pytest.fixture(scope="module")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of this module's own: its holds' timers are skipped to, which a workflow
    another module left running on a shared server would hold back."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server_path(), data_converter=pydantic_data_converter
    )
    yield env
    await env.shutdown()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.updated(reservation={"no_show_limit": 2, "no_show_fee_minor": 200})


async def ready_packs(db: Database, count: int, cabinet_id: str = CABINET) -> list[str]:
    """Leave exactly the cabinet's first `count` packs ready (full), the others flat; returns the ready
    ones' serials, best first (the fuller the better), and puts the cabinet online."""
    await set_online(db, cabinet_id, True)
    async with db.transaction() as session:
        serials = (
            await session.scalars(
                select(Slot.battery_serial)
                .where(Slot.cabinet_id == cabinet_id, Slot.battery_serial.is_not(None))
                .order_by(Slot.slot_no)
            )
        ).all()
        ready = [serial for serial in serials[:count] if serial is not None]
        await session.execute(update(Battery).where(Battery.serial.in_(serials[count:])).values(soc=20.0))
        for rank, serial in enumerate(ready):
            await session.execute(update(Battery).where(Battery.serial == serial).values(soc=100.0 - rank))
    return ready


async def reservation(db: Database, reservation_id: str) -> Reservation:
    async with db.sessions() as session:
        found = await session.get(Reservation, reservation_id)
    assert found is not None
    return found


async def holder(db: Database, serial: str) -> str | None:
    """The reservation holding the slot of pack `serial`."""
    async with db.sessions() as session:
        return await session.scalar(select(Slot.reservation_id).where(Slot.battery_serial == serial))


async def hold_ends(env: WorkflowEnvironment, reservation_id: str) -> ReservationOutcome:
    """How the reservation's workflow ended (something ended it, or will, before its timer)."""
    return await env.client.get_workflow_handle(
        f"reservation/{reservation_id}", result_type=ReservationOutcome
    ).result()


async def hold_runs_out(env: WorkflowEnvironment, settings: Settings, reservation_id: str) -> ReservationOutcome:
    """How the reservation's workflow ended once its hold's time has passed."""
    await env.sleep(timedelta(seconds=settings.reservation.hold_s + 1))
    return await hold_ends(env, reservation_id)


@pytest.fixture
async def api(temporal_env: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The API in this test's event loop, with a worker, called with the rider's own token."""
    app = app_sharing(settings, db, temporal_env.client)
    async with (
        running_worker(temporal_env.client, settings, db),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://api",
            headers=bearer(await rider_token(db, RIDER)),
        ) as client,
    ):
        yield client
        await let_go_of_every_hold(temporal_env, settings, db)


async def let_go_of_every_hold(env: WorkflowEnvironment, settings: Settings, db: Database) -> None:
    """End the holds a test left, while its worker runs: a timer left behind on the shared test server
    would fire later, for a task queue nobody polls any more, and stop its time from moving."""

    async def temporal() -> Client:
        return env.client

    async with db.sessions() as session:
        held = (
            await session.scalars(select(Reservation.id).where(Reservation.status == ReservationStatus.ACTIVE))
        ).all()
    for reservation_id in held:
        await reservations.cancel(db, settings, temporal, reservation_id=reservation_id, by="test")
        await hold_ends(env, reservation_id)


async def as_rider(db: Database, rider_id: str) -> dict[str, str]:
    return bearer(await rider_token(db, rider_id))


async def reserve(
    api: httpx.AsyncClient, key: str, cabinet_id: str = CABINET, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await api.post(
        RESERVATIONS, json={"cabinet_id": cabinet_id}, headers={"Idempotency-Key": key, **(headers or {})}
    )


async def reserved(api: httpx.AsyncClient, key: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    made = await reserve(api, key, headers=headers)
    assert made.status_code == 201, made.json()
    body: dict[str, Any] = made.json()
    return body


# ------------------------------------------------------------------------------------------ reserving


async def test_a_reservation_holds_the_best_ready_pack_for_the_hold(
    api: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    ready = await ready_packs(db, 3)
    made = await reserved(api, "r1")
    assert (made["status"], made["cabinet_id"], made["battery_serial"], made["slot_no"]) == (
        "active",
        CABINET,
        ready[0],
        1,
    )
    assert made["workflow_id"] == f"reservation/{made['id']}"
    row = await reservation(db, made["id"])
    assert as_utc(row.expires_at) - as_utc(row.created_at) == timedelta(seconds=settings.reservation.hold_s)
    assert await holder(db, ready[0]) == made["id"]


async def test_the_cabinet_counts_a_reserved_pack_apart_from_the_ready_ones(
    api: httpx.AsyncClient, db: Database
) -> None:
    await ready_packs(db, 3)
    made = await reserved(api, "r1")
    cabinet = (await api.get(f"/v1/cabinets/{CABINET}")).json()
    assert (cabinet["ready_batteries"], cabinet["reserved_batteries"]) == (2, 1)
    assert [s["slot_no"] for s in cabinet["slots"] if s["held_for_reservation"]] == [made["slot_no"]]
    nearby = (await api.get("/v1/cabinets", params={"city": "SH"})).json()
    listed = next(c for c in nearby if c["id"] == CABINET)
    assert (listed["ready_batteries"], listed["reserved_batteries"]) == (2, 1)


async def test_the_same_idempotency_key_answers_the_same_reservation(api: httpx.AsyncClient, db: Database) -> None:
    await ready_packs(db, 3)
    made = await reserved(api, "r1")
    again = await reserve(api, "r1")
    assert (again.status_code, again.json()["id"]) == (200, made["id"])
    elsewhere = await reserve(api, "r1", OTHER_CABINET)
    assert (elsewhere.status_code, elsewhere.json()["title"]) == (409, "Reservation refused")


async def test_a_rider_holds_one_reservation_at_a_time(api: httpx.AsyncClient, db: Database) -> None:
    await ready_packs(db, 3)
    made = await reserved(api, "r1")
    second = await reserve(api, "r2")
    assert (second.status_code, second.json()["reason"], second.json()["reservation_id"]) == (
        409,
        "already_reserved",
        made["id"],
    )


async def test_a_cabinet_without_a_ready_pack_cannot_be_reserved(api: httpx.AsyncClient, db: Database) -> None:
    await ready_packs(db, 0)
    refused = await reserve(api, "r1")
    assert (refused.status_code, refused.json()["reason"]) == (409, "no_ready_battery")


async def test_an_offline_cabinet_cannot_be_reserved(api: httpx.AsyncClient, db: Database) -> None:
    await ready_packs(db, 3)
    await set_online(db, CABINET, False)
    refused = await reserve(api, "r1")
    assert (refused.status_code, refused.json()["reason"]) == (409, "cabinet_offline")


async def test_an_unknown_cabinet_is_a_404(api: httpx.AsyncClient) -> None:
    assert (await reserve(api, "r1", "cab-nowhere")).status_code == 404


async def test_only_a_rider_reserves(api: httpx.AsyncClient, db: Database) -> None:
    await ready_packs(db, 3)
    admin = bearer(await operator_token(db, "test-admin", OperatorRole.ADMIN))
    assert (await reserve(api, "r1", headers=admin)).status_code == 403


async def test_of_two_riders_asking_for_the_last_pack_exactly_one_gets_it(api: httpx.AsyncClient, db: Database) -> None:
    riders = {RIDER: await as_rider(db, RIDER), OTHER_RIDER: await as_rider(db, OTHER_RIDER)}
    for round_no in range(5):
        (last,) = await ready_packs(db, 1)
        answers = await asyncio.gather(
            *(reserve(api, f"race-{round_no}", headers=headers) for headers in riders.values())
        )
        assert sorted(a.status_code for a in answers) == [201, 409], [a.json() for a in answers]
        won = next(a.json() for a in answers if a.status_code == 201)
        lost = next(a.json() for a in answers if a.status_code == 409)
        assert (won["battery_serial"], lost["reason"]) == (last, "no_ready_battery")
        assert await holder(db, last) == won["id"]
        cancelled = await api.post(f"{RESERVATIONS}/{won['id']}/cancel", headers=riders[won["rider_id"]])
        assert cancelled.json()["status"] == "cancelled"


async def test_two_requests_of_one_rider_at_once_make_one_reservation(api: httpx.AsyncClient, db: Database) -> None:
    await ready_packs(db, 4)
    answers = await asyncio.gather(reserve(api, "a"), reserve(api, "b"))
    assert sorted(a.status_code for a in answers) == [201, 409], [a.json() for a in answers]
    assert next(a.json() for a in answers if a.status_code == 409)["reason"] == "already_reserved"
    async with db.sessions() as session:
        held = (await session.scalars(select(Slot.reservation_id).where(Slot.reservation_id.is_not(None)))).all()
    assert len(held) == 1


# ------------------------------------------------------------------------------------------ reading


async def test_another_riders_reservation_does_not_exist_for_a_rider(api: httpx.AsyncClient, db: Database) -> None:
    await ready_packs(db, 3)
    made = await reserved(api, "r1")
    other = await as_rider(db, OTHER_RIDER)
    assert (await api.get(f"{RESERVATIONS}/{made['id']}", headers=other)).status_code == 404
    assert (await api.post(f"{RESERVATIONS}/{made['id']}/cancel", headers=other)).status_code == 404
    assert (await api.get(f"/v1/riders/{RIDER}/reservations", headers=other)).status_code == 404
    assert (await reservation(db, made["id"])).status == ReservationStatus.ACTIVE


async def test_operators_of_the_city_read_reservations_and_others_do_not(api: httpx.AsyncClient, db: Database) -> None:
    await ready_packs(db, 3)
    made = await reserved(api, "r1")
    shanghai = bearer(await operator_token(db, "ops-sh-test", OperatorRole.OPERATOR, ["SH"]))
    berlin = bearer(await operator_token(db, "ops-ber-test", OperatorRole.OPERATOR, ["BER"]))
    assert (await api.get(f"{RESERVATIONS}/{made['id']}", headers=shanghai)).json()["id"] == made["id"]
    assert [r["id"] for r in (await api.get(f"/v1/riders/{RIDER}/reservations", headers=shanghai)).json()] == [
        made["id"]
    ]
    assert (await api.get(f"{RESERVATIONS}/{made['id']}", headers=berlin)).status_code == 404
    assert (await api.get(f"/v1/riders/{RIDER}/reservations", headers=berlin)).status_code == 404


async def test_a_riders_reservations_list_the_active_one_first(
    api: httpx.AsyncClient, db: Database, temporal_env: WorkflowEnvironment
) -> None:
    await ready_packs(db, 3)
    first = await reserved(api, "r1")
    await api.post(f"{RESERVATIONS}/{first['id']}/cancel")
    second = await reserved(api, "r2")
    listed = (await api.get(f"/v1/riders/{RIDER}/reservations")).json()
    assert [(r["id"], r["status"]) for r in listed] == [(second["id"], "active"), (first["id"], "cancelled")]


# ------------------------------------------------------------------------------------------ ending


@pytest.mark.records_history
async def test_a_cancelled_reservation_lets_the_pack_go_and_ends_its_workflow(
    api: httpx.AsyncClient, db: Database, temporal_env: WorkflowEnvironment, record_history: RecordHistory
) -> None:
    (pack, *_) = await ready_packs(db, 3)
    made = await reserved(api, "r1")
    cancelled = await api.post(f"{RESERVATIONS}/{made['id']}/cancel")
    assert (cancelled.status_code, cancelled.json()["status"], cancelled.json()["ended_by"]) == (
        200,
        "cancelled",
        RIDER,
    )
    outcome = await hold_ends(temporal_env, made["id"])
    await record_history(made["workflow_id"], "reservation_cancelled")
    assert outcome.status == ReservationStatus.CANCELLED
    assert await holder(db, pack) is None
    again = await api.post(f"{RESERVATIONS}/{made['id']}/cancel")
    assert (again.status_code, again.json()["status"]) == (200, "cancelled")


@pytest.mark.records_history
async def test_a_hold_that_runs_out_with_the_pack_waiting_is_a_no_show_with_its_fee_recorded(
    api: httpx.AsyncClient,
    db: Database,
    temporal_env: WorkflowEnvironment,
    settings: Settings,
    record_history: RecordHistory,
) -> None:
    (pack, *_) = await ready_packs(db, 3)
    made = await reserved(api, "r1")
    outcome = await hold_runs_out(temporal_env, settings, made["id"])
    await record_history(made["workflow_id"], "reservation_no_show")
    assert (outcome.status, outcome.no_show_fee_minor) == (ReservationStatus.NO_SHOW, 200)
    shown = (await api.get(f"{RESERVATIONS}/{made['id']}")).json()
    assert (shown["status"], shown["no_show_fee_minor"], shown["currency"]) == ("no_show", 200, "CNY")
    assert await holder(db, pack) is None
    assert (await api.get(f"/v1/cabinets/{CABINET}")).json()["ready_batteries"] == 3
    cancelled = await api.post(f"{RESERVATIONS}/{made['id']}/cancel")
    assert (cancelled.status_code, cancelled.json()["reason"]) == (409, "reservation_ended")


async def test_a_hold_that_runs_out_while_its_slot_is_out_of_service_expires_without_a_no_show(
    api: httpx.AsyncClient, db: Database, temporal_env: WorkflowEnvironment, settings: Settings
) -> None:
    await ready_packs(db, 3)
    made = await reserved(api, "r1")
    async with db.transaction() as session:
        await session.execute(
            update(Slot)
            .where(Slot.cabinet_id == CABINET, Slot.slot_no == made["slot_no"])
            .values(out_of_service="door_fault")
        )
    outcome = await hold_runs_out(temporal_env, settings, made["id"])
    assert (outcome.status, outcome.no_show_fee_minor) == (ReservationStatus.EXPIRED, None)


async def test_a_rider_with_too_many_no_shows_may_not_reserve_for_a_while(
    api: httpx.AsyncClient, db: Database, temporal_env: WorkflowEnvironment, settings: Settings
) -> None:
    await ready_packs(db, 3)
    for key in ("n1", "n2"):  # the limit is 2
        made = await reserved(api, key)
        assert (await hold_runs_out(temporal_env, settings, made["id"])).status == ReservationStatus.NO_SHOW
    refused = await reserve(api, "n3")
    assert (refused.status_code, refused.json()["reason"]) == (409, "no_show_blocked")
    until = as_utc((await reservation(db, made["id"])).ended_at or utcnow())
    assert (
        refused.json()["blocked_until"] == (until + timedelta(seconds=settings.reservation.no_show_block_s)).isoformat()
    )
    other = await reserve(api, "n3", headers=await as_rider(db, OTHER_RIDER))
    assert other.status_code == 201


async def test_the_block_lifts_once_its_time_has_passed(
    api: httpx.AsyncClient, db: Database, temporal_env: WorkflowEnvironment, settings: Settings
) -> None:
    await ready_packs(db, 3)
    for key in ("n1", "n2"):
        made = await reserved(api, key)
        await hold_runs_out(temporal_env, settings, made["id"])
    async with db.transaction() as session:  # the no-shows were more than the block ago
        await session.execute(
            update(Reservation).values(ended_at=utcnow() - timedelta(days=8), created_at=utcnow() - timedelta(days=8))
        )
    assert (await reserve(api, "n3")).status_code == 201


# ------------------------------------------------------------------------------------------ swapping


async def test_the_riders_swap_at_the_cabinet_takes_the_reserved_pack(
    api: httpx.AsyncClient, db: Database, settings: Settings, temporal_env: WorkflowEnvironment
) -> None:
    ready = await ready_packs(db, 3)
    async with db.transaction() as session:  # the best pack is another's: the rider's hold takes the second
        await session.execute(update(Battery).where(Battery.serial == ready[1]).values(soc=99.5))
    other = await reserved(api, "o1", headers=await as_rider(db, OTHER_RIDER))
    made = await reserved(api, "r1")
    assert (other["battery_serial"], made["battery_serial"]) == (ready[0], ready[1])
    async with db.transaction() as session:  # a fuller pack comes in: the rider still gets the one held
        await session.execute(update(Battery).where(Battery.serial == ready[2]).values(soc=100.0))
    order_id = await new_order(db, RIDER, CABINET)
    admission = await SwapRecords(db, settings).admit(
        SwapRequest(order_id=order_id, rider_id=RIDER, cabinet_id=CABINET)
    )
    assert (admission.charged_battery_serial, admission.reservation_id) == (made["battery_serial"], made["id"])
    used = await reservation(db, made["id"])
    assert (used.status, used.used_by_order_id) == (ReservationStatus.USED, order_id)
    assert await holder(db, made["battery_serial"]) is None
    assert (await reservation(db, other["id"])).status == ReservationStatus.ACTIVE


async def test_another_riders_swap_never_gets_a_reserved_pack(
    api: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    (last,) = await ready_packs(db, 1)
    made = await reserved(api, "r1")
    order_id = await new_order(db, OTHER_RIDER, CABINET)
    with pytest.raises(SwapRejectedError, match="no_charged_battery"):
        await SwapRecords(db, settings).admit(SwapRequest(order_id=order_id, rider_id=OTHER_RIDER, cabinet_id=CABINET))
    assert await holder(db, last) == made["id"]
    assert (await reservation(db, made["id"])).status == ReservationStatus.ACTIVE


async def test_a_swap_at_another_cabinet_leaves_the_reservation_held(
    api: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await ready_packs(db, 3)
    await ready_packs(db, 3, OTHER_CABINET)
    made = await reserved(api, "r1")
    order_id = await new_order(db, RIDER, OTHER_CABINET)
    admission = await SwapRecords(db, settings).admit(
        SwapRequest(order_id=order_id, rider_id=RIDER, cabinet_id=OTHER_CABINET)
    )
    assert admission.reservation_id is None
    assert (await reservation(db, made["id"])).status == ReservationStatus.ACTIVE


async def test_a_rejected_swap_leaves_the_reservation_held(
    api: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    await ready_packs(db, 3)
    made = await reserved(api, "r1")
    async with db.transaction() as session:  # no empty slot for the flat pack
        await session.execute(update(Slot).where(Slot.battery_serial.is_(None)).values(out_of_service="full"))
    order_id = await new_order(db, RIDER, CABINET)
    with pytest.raises(SwapRejectedError, match="no_free_slot"):
        await SwapRecords(db, settings).admit(SwapRequest(order_id=order_id, rider_id=RIDER, cabinet_id=CABINET))
    assert (await reservation(db, made["id"])).status == ReservationStatus.ACTIVE
    assert await holder(db, made["battery_serial"]) == made["id"]


# ------------------------------------------------------------------------------------------ a whole swap


@pytest.mark.records_history
async def test_a_swap_with_a_reservation_issues_its_pack_and_ends_the_hold(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, record_history: RecordHistory
) -> None:
    settings = settings.updated(swap={"command_ack_timeout_s": 1.5})

    async def temporal() -> Client:
        return temporal_env.client

    async with (
        running_worker(temporal_env.client, settings, db),
        running_cabinet(temporal_env.client, settings, db, CABINET) as cabinet,
    ):
        with temporal_env.auto_time_skipping_disabled():  # the cabinet lives in real time
            ready = await ready_packs(db, 3)
            async with db.transaction() as session:  # the rider's hold is not the pack a swap would pick
                await session.execute(update(Battery).where(Battery.serial == ready[0]).values(soc=90.0))
            held, _ = await reservations.reserve(
                db, settings, temporal, rider_id=RIDER, cabinet_id=CABINET, idempotency_key="r1"
            )
            order_id = await new_order(db, RIDER, CABINET)
            handle = await temporal_env.client.start_workflow(
                SwapWorkflow.run,
                swap_request(settings, order_id=order_id, rider_id=RIDER, cabinet_id=CABINET),
                id=swap_workflow_id(order_id),
                task_queue=settings.temporal.task_queue,
            )
            outcome = await hold_ends(temporal_env, held.id)
            assert (outcome.status, outcome.used_by_order_id) == (ReservationStatus.USED, order_id)
            flat = await battery_of(db, RIDER)
            assert flat is not None
            order = await _until(db, order_id, SwapStage.RETURN_DOOR_OPEN)
            assert order.charged_slot_no == held.slot_no and order.return_slot_no is not None
            await _door_open(cabinet, order.return_slot_no)
            await cabinet.insert_battery(order.return_slot_no, sim_battery(flat))
            await _until(db, order_id, SwapStage.CHARGED_DOOR_OPEN)
            await _door_open(cabinet, held.slot_no)
            taken = await cabinet.take_battery(held.slot_no)
            result = await handle.result()
    await record_history(handle.id, "swap_with_reservation")
    await record_history(f"reservation/{held.id}", "reservation_used")
    assert result.status == SwapStatus.COMPLETED, result
    assert taken.serial == held.battery_serial
    assert ("reservation_used", "ok") in [(step.step, step.outcome) for step in result.steps]
    report = await check_invariants(db)
    assert report.ok, report.violations


async def _until(db: Database, order_id: str, stage: SwapStage, timeout_s: float = 15) -> SwapOrder:
    """The order once it reaches `stage` (failing the test if it fails first)."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        async with db.sessions() as session:
            order = await session.get(SwapOrder, order_id)
        assert order is not None
        if order.stage == stage or order.status == SwapStatus.FAILED:
            assert order.status != SwapStatus.FAILED, order.failure_reason
            return order
        assert asyncio.get_running_loop().time() < deadline, f"stuck at {order.stage}"
        await asyncio.sleep(0.05)


async def _door_open(cabinet: SimulatedCabinet, slot_no: int, timeout_s: float = 15) -> None:
    """Wait, as a rider would, until the door really swings open."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cabinet.door_open(slot_no):
        assert asyncio.get_running_loop().time() < deadline, f"door {slot_no} never opened"
        await asyncio.sleep(0.02)
