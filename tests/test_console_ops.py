"""Ops in the console, over HTTP with a signed-in session: alerts listed with filters, acknowledged and
resolved through their forms; work orders listed with their timeline and workflow history, cancelled
through the form as the API does it (a workflow update, on the time-skipping server with the real
worker), accepted and resolved by their technician (who sees the work orders only); MTTA, MTTR and
uptime per city and day for the charts. Another city's alert or work order does not exist (404)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from temporalio.client import WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from swapflow.api.app import create_app
from swapflow.db.engine import Database
from swapflow.db.network import Cabinet, Station
from swapflow.db.ops import Alert, WorkOrder, WorkOrderEvent
from swapflow.device_adapter.presence import record_transition
from swapflow.domain.clock import utcnow
from swapflow.domain.network import CabinetCapability, PresenceCause
from swapflow.domain.ops import AlertStatus, OperatorRole, WorkOrderStatus
from swapflow.services.console_ops import daily_presence, day_starts, uptime_series
from swapflow.services.work_orders import new_work_order, work_order_input
from swapflow.settings import Settings
from swapflow.workflows.work_order import WorkOrderWorkflow
from swapflow.workflows.work_order_contract import work_order_workflow_id
from tests.conftest import test_server_path as time_skipping_server_path
from tests.console_harness import console_client, csrf_of, sign_in
from tests.ops_harness import operator_token
from tests.swap_harness import running_worker

SH_CABINET, SZ_CABINET = "cab-sh-001-1", "cab-sz-001-1"


@pytest.fixture
def console(settings: Settings) -> Iterator[TestClient]:
    with console_client(settings) as client:
        yield client


@pytest.fixture
async def ops_sh(db: Database) -> str:
    return await operator_token(db, "ops-sh", OperatorRole.OPERATOR, ["SH"])


async def an_alert(db: Database, cabinet_id: str, kind: str = "cabinet_offline", severity: str = "warning") -> int:
    async with db.transaction() as session:
        alert = Alert(
            kind=kind,
            severity=severity,
            dedupe_key=f"{kind}:{cabinet_id}",
            cabinet_id=cabinet_id,
            message=f"{kind} at {cabinet_id}",
        )
        session.add(alert)
        await session.flush()
        return alert.id


async def alert_row(db: Database, alert_id: int) -> Alert:
    async with db.sessions() as session:
        alert = await session.get(Alert, alert_id)
    assert alert is not None
    return alert


def listed_alerts(console: TestClient, **params: str) -> list[int]:
    page = console.get("/console/alerts", params=params)
    assert page.status_code == 200
    return [int(found) for found in re.findall(r'<tr id="alert-row-(\d+)">', page.text)]


# ---------------------------------------------------------------------------------- alerts


async def test_an_operator_lists_the_alerts_of_their_cities_newest_first(
    console: TestClient, db: Database, ops_sh: str
) -> None:
    offline = await an_alert(db, SH_CABINET)
    door = await an_alert(db, SH_CABINET, kind="door_fault", severity="critical")
    await an_alert(db, SZ_CABINET)
    sign_in(console, ops_sh)

    assert listed_alerts(console) == [door, offline]
    assert listed_alerts(console, kind="door_fault") == [door]
    assert listed_alerts(console, severity="warning") == [offline]


async def test_an_operator_acknowledges_an_alert_through_its_form(
    console: TestClient, db: Database, ops_sh: str
) -> None:
    alert_id = await an_alert(db, SH_CABINET)
    csrf = sign_in(console, ops_sh)
    answer = console.post(
        f"/console/alerts/{alert_id}/acknowledge",
        data={"csrf_token": csrf},
        headers={"HX-Request": "true", "HX-Target": f"alert-row-{alert_id}"},
    )

    assert answer.status_code == 200
    assert answer.text.lstrip().startswith(f'<tr id="alert-row-{alert_id}">')  # the row, in place
    assert re.search(r"acknowledged</span>\s*by ops-sh", answer.text) and ">Acknowledge<" not in answer.text
    assert (await alert_row(db, alert_id)).acknowledged_by == "ops-sh"
    assert listed_alerts(console, status="unacknowledged") == []
    assert listed_alerts(console, status="acknowledged") == [alert_id]


async def test_acknowledging_an_alert_twice_shows_who_did_first(console: TestClient, db: Database, ops_sh: str) -> None:
    alert_id = await an_alert(db, SH_CABINET)
    csrf = sign_in(console, ops_sh)
    console.post(f"/console/alerts/{alert_id}/acknowledge", data={"csrf_token": csrf})
    again = console.post(f"/console/alerts/{alert_id}/acknowledge", data={"csrf_token": csrf})
    assert again.status_code == 409 and "acknowledged by ops-sh" in again.text


async def test_an_operator_resolves_an_alert_with_a_note(console: TestClient, db: Database, ops_sh: str) -> None:
    alert_id = await an_alert(db, SH_CABINET)
    csrf = sign_in(console, ops_sh)
    answer = console.post(f"/console/alerts/{alert_id}/resolve", data={"csrf_token": csrf, "note": "power back"})

    assert answer.status_code == 200 and f"Alert {alert_id} resolved." in answer.text
    assert "power back" in answer.text  # its audit trail
    alert = await alert_row(db, alert_id)
    assert (alert.status, alert.resolved_by) == (AlertStatus.RESOLVED, "ops-sh")
    assert listed_alerts(console) == [] and listed_alerts(console, status="resolved") == [alert_id]


async def test_another_citys_alert_does_not_exist_for_an_operator(
    console: TestClient, db: Database, ops_sh: str
) -> None:
    alert_id = await an_alert(db, SZ_CABINET)
    csrf = sign_in(console, ops_sh)
    assert console.get(f"/console/alerts/{alert_id}").status_code == 404
    assert console.post(f"/console/alerts/{alert_id}/acknowledge", data={"csrf_token": csrf}).status_code == 404
    assert (await alert_row(db, alert_id)).acknowledged_at is None


async def test_an_acknowledgement_posted_without_its_csrf_token_is_refused(
    console: TestClient, db: Database, ops_sh: str
) -> None:
    alert_id = await an_alert(db, SH_CABINET)
    sign_in(console, ops_sh)
    answer = console.post(f"/console/alerts/{alert_id}/acknowledge")
    assert answer.status_code == 403 and "CSRF" in answer.text
    assert (await alert_row(db, alert_id)).acknowledged_at is None


async def test_finance_may_not_open_ops_pages(console: TestClient, db: Database) -> None:
    sign_in(console, await operator_token(db, "finance-sh", OperatorRole.FINANCE, ["SH"]))
    for path in ("/console/alerts", "/console/work-orders", "/console/figures"):
        assert console.get(path).status_code == 403, path


# ---------------------------------------------------------------------------------- work orders


async def a_work_order(db: Database, cabinet_id: str, steps: Sequence[tuple[str, str | None, str]] = ()) -> str:
    """A work order with its recorded steps (kind, actor, detail)."""
    async with db.transaction() as session:
        order = await new_work_order(
            session,
            cabinet_id=cabinet_id,
            slot_no=3,
            kind="door_fault",
            severity="warning",
            source="operator",
            description="door jams",
        )
        for seq, (kind, actor, detail) in enumerate(steps, start=1):
            session.add(WorkOrderEvent(work_order_id=order.id, seq=seq, kind=kind, actor=actor, detail=detail))
        return order.id


async def test_a_work_orders_page_shows_its_timeline(console: TestClient, db: Database, ops_sh: str) -> None:
    order_id = await a_work_order(
        db, SH_CABINET, [("opened", None, "door jams"), ("dispatched", None, "to tech-near, 1.1 km away")]
    )
    sign_in(console, ops_sh)
    listing = console.get("/console/work-orders").text
    page = console.get(f"/console/work-orders/{order_id}").text

    assert f'href="/console/work-orders/{order_id}"' in listing
    assert re.findall(r"<li><strong>([a-z ]+)</strong>", page) == ["opened", "dispatched"]
    assert "to tech-near, 1.1 km away" in page and work_order_workflow_id(order_id) in page
    assert "Cancel the work order" in page


async def test_a_work_orders_page_renders_without_its_workflow_history(
    console: TestClient, db: Database, ops_sh: str
) -> None:
    order_id = await a_work_order(db, SH_CABINET, [("opened", None, "door jams")])
    sign_in(console, ops_sh)
    page = console.get(f"/console/work-orders/{order_id}")

    # No workflow runs for it here (no Temporal, or none under its id): the rest of the page stands.
    assert page.status_code == 200 and "Workflow history unavailable" in page.text
    assert re.findall(r"<li><strong>([a-z ]+)</strong>", page.text) == ["opened"]


async def test_work_orders_are_listed_by_status(console: TestClient, db: Database, ops_sh: str) -> None:
    open_order = await a_work_order(db, SH_CABINET)
    async with db.transaction() as session:
        closed = await new_work_order(
            session,
            cabinet_id=SH_CABINET,
            slot_no=4,
            kind="door_fault",
            severity="info",
            source="alert",
            description="",
        )
        closed.status = WorkOrderStatus.CLOSED
        closed_id = closed.id
    sign_in(console, ops_sh)

    def listed(**params: str) -> set[str]:
        return set(
            re.findall(r'href="/console/work-orders/([^"]+)"', console.get("/console/work-orders", params=params).text)
        )

    assert listed() == {open_order}
    assert listed(status="closed") == {closed_id}
    assert listed(status="all", severity="info") == {closed_id}


async def test_another_citys_work_order_does_not_exist_for_an_operator(
    console: TestClient, db: Database, ops_sh: str
) -> None:
    order_id = await a_work_order(db, SZ_CABINET)
    csrf = sign_in(console, ops_sh)
    assert console.get(f"/console/work-orders/{order_id}").status_code == 404
    cancel = console.post(f"/console/work-orders/{order_id}/cancel", data={"csrf_token": csrf, "reason": "x"})
    assert cancel.status_code == 404
    assert order_id not in console.get("/console/work-orders", params={"status": "all"}).text


@pytest.fixture
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of the test's own, as tests/test_work_orders.py has."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=time_skipping_server_path(), data_converter=pydantic_data_converter
    )
    yield env
    await env.shutdown()


async def test_an_operator_cancels_a_work_order_through_its_form(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, ops_sh: str
) -> None:
    await operator_token(db, "tech-sh", OperatorRole.TECHNICIAN, ["SH"], location=(31.23, 121.47))
    order_id = await a_work_order(db, SH_CABINET)
    async with db.sessions() as session:
        order = await session.get(WorkOrder, order_id)
        assert order is not None
        request = work_order_input(settings, order, CabinetCapability.REPORTING)
    app = create_app(settings.updated(temporal={"address": temporal_env.client.service_client.config.target_host}))
    async with (
        running_worker(temporal_env.client, settings, db),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://console") as console,
    ):
        with temporal_env.auto_time_skipping_disabled():
            handle = await temporal_env.client.start_workflow(
                WorkOrderWorkflow.run,
                request,
                id=work_order_workflow_id(order_id),
                task_queue=settings.temporal.task_queue,
            )
            for _ in range(200):
                async with db.sessions() as session:
                    row = await session.get(WorkOrder, order_id)
                if row is not None and row.status != WorkOrderStatus.NEW:
                    break
                await asyncio.sleep(0.05)
            form = await console.get("/console/sign-in")
            signed_in = await console.post("/console/sign-in", data={"token": ops_sh, "csrf_token": csrf_of(form.text)})
            assert signed_in.status_code == 303
            csrf = csrf_of((await console.get(f"/console/work-orders/{order_id}")).text)
            answer = await console.post(
                f"/console/work-orders/{order_id}/cancel",
                data={"csrf_token": csrf, "reason": "cabinet replaced"},
                headers={"HX-Request": "true"},
            )
            state = await handle.result()

    assert answer.status_code == 200 and "Work order cancelled." in answer.text
    assert state.status == WorkOrderStatus.CANCELLED
    async with db.sessions() as session:
        steps = list(
            await session.scalars(
                select(WorkOrderEvent.kind).where(WorkOrderEvent.work_order_id == order_id).order_by(WorkOrderEvent.seq)
            )
        )
    assert steps[-1] == "cancelled"


class Field:
    """A work order dispatched by its running workflow (real worker, time-skipping server) to tech-near,
    and the console over HTTP in the same loop."""

    def __init__(self, order_id: str, handle: WorkflowHandle[WorkOrderWorkflow, object], client: httpx.AsyncClient):
        self.order_id, self.handle, self.client = order_id, handle, client

    async def sign_in(self, token: str) -> str:
        """Signs in; the CSRF token of the work order's page."""
        self.client.cookies.clear()
        form = await self.client.get("/console/sign-in")
        answer = await self.client.post("/console/sign-in", data={"token": token, "csrf_token": csrf_of(form.text)})
        assert answer.status_code == 303, answer.text
        return csrf_of((await self.client.get(f"/console/work-orders/{self.order_id}")).text)

    async def act(self, action: str, csrf: str, **form: str) -> httpx.Response:
        return await self.client.post(
            f"/console/work-orders/{self.order_id}/{action}",
            data={"csrf_token": csrf, **form},
            headers={"HX-Request": "true"},
        )

    async def status(self) -> str:
        state = await self.handle.query(WorkOrderWorkflow.state)
        return state.status


@pytest.fixture
async def technicians(db: Database) -> dict[str, str]:
    """Shanghai's technicians on duty: one near the cabinet (who gets its orders), one far away; and
    one of Shenzhen."""
    async with db.sessions() as session:
        station = await session.scalar(select(Station).join(Cabinet).where(Cabinet.id == SH_CABINET))
    assert station is not None
    near, far = (station.lat + 0.01, station.lon), (station.lat + 0.3, station.lon)
    return {
        "tech-near": await operator_token(db, "tech-near", OperatorRole.TECHNICIAN, ["SH"], location=near),
        "tech-far": await operator_token(db, "tech-far", OperatorRole.TECHNICIAN, ["SH"], location=far),
        "tech-sz": await operator_token(db, "tech-sz", OperatorRole.TECHNICIAN, ["SZ"], location=near),
    }


@asynccontextmanager
async def in_the_field(temporal_env: WorkflowEnvironment, settings: Settings, db: Database) -> AsyncIterator[Field]:
    """A door fault's work order at a cabinet that only obeys commands: a fix is verified by its
    recorded state alone (no test command to answer)."""
    async with db.transaction() as session:
        await session.execute(
            update(Cabinet).where(Cabinet.id == SH_CABINET).values(capability=CabinetCapability.COMMAND_ONLY)
        )
    order_id = await a_work_order(db, SH_CABINET)
    async with db.sessions() as session:
        order = await session.get(WorkOrder, order_id)
        assert order is not None
        request = work_order_input(settings, order, CabinetCapability.COMMAND_ONLY)
    app = create_app(settings.updated(temporal={"address": temporal_env.client.service_client.config.target_host}))
    async with (
        running_worker(temporal_env.client, settings, db),
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://console") as client,
    ):
        with temporal_env.auto_time_skipping_disabled():
            handle = await temporal_env.client.start_workflow(
                WorkOrderWorkflow.run,
                request,
                id=work_order_workflow_id(order_id),
                task_queue=settings.temporal.task_queue,
            )
            for _ in range(200):
                async with db.sessions() as session:
                    row = await session.get(WorkOrder, order_id)
                if row is not None and row.status != WorkOrderStatus.NEW:
                    break
                await asyncio.sleep(0.05)
            try:
                yield Field(order_id, handle, client)
            finally:
                if (await handle.describe()).close_time is None:
                    await handle.terminate("test over")


async def test_a_technician_accepts_and_resolves_its_work_order_through_the_forms(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, technicians: dict[str, str]
) -> None:
    async with in_the_field(temporal_env, settings, db) as field:
        csrf = await field.sign_in(technicians["tech-near"])
        page = (await field.client.get(f"/console/work-orders/{field.order_id}")).text
        assert "Accept the work order" in page and "Cancel the work order" not in page  # staff's own

        accepted = await field.act("accept", csrf)
        assert accepted.status_code == 200 and "Work order accepted." in accepted.text
        assert "<html" not in accepted.text and "Report the fix" in accepted.text
        resolved = await field.act("resolve", csrf, note="new latch")
        assert resolved.status_code == 200 and "Fix reported" in resolved.text
        state = await field.handle.result()
        page = (await field.client.get(f"/console/work-orders/{field.order_id}")).text

    assert state.status == WorkOrderStatus.CLOSED
    async with db.sessions() as session:
        steps = list(
            await session.scalars(
                select(WorkOrderEvent.kind)
                .where(WorkOrderEvent.work_order_id == field.order_id)
                .order_by(WorkOrderEvent.seq)
            )
        )
    assert steps == ["opened", "dispatched", "accepted", "resolved", "closed"]
    # Its workflow's history, read from Temporal, with the way to it in the Temporal UI.
    assert f'aria-label="Workflow history of {work_order_workflow_id(field.order_id)}"' in page
    assert "open in the Temporal UI" in page and "close_work_order" in page


async def test_another_technician_is_refused_with_a_message(
    temporal_env: WorkflowEnvironment, settings: Settings, db: Database, technicians: dict[str, str]
) -> None:
    async with in_the_field(temporal_env, settings, db) as field:
        csrf = await field.sign_in(technicians["tech-far"])
        page = (await field.client.get(f"/console/work-orders/{field.order_id}")).text
        answer = await field.act("accept", csrf)
        status = await field.status()

    assert "Accept the work order" not in page and "Assigned to tech-near" in page
    assert answer.status_code == 200 and 'role="alert"' in answer.text
    assert "assigned to tech-near, not tech-far" in answer.text
    assert status == WorkOrderStatus.DISPATCHED


def sign_in_technician(client: TestClient, token: str) -> str:
    """Signs in a technician, who lands on the work orders; the session's CSRF token."""
    form = client.get("/console/sign-in")
    answer = client.post("/console/sign-in", data={"token": token, "csrf_token": csrf_of(form.text), "next": ""})
    assert answer.status_code == 303 and answer.headers["location"] == "/console/work-orders", answer.text
    return csrf_of(client.get("/console/work-orders").text)


async def test_another_citys_technician_does_not_find_the_work_order(
    console: TestClient, db: Database, technicians: dict[str, str]
) -> None:
    order_id = await a_work_order(db, SH_CABINET)
    csrf = sign_in_technician(console, technicians["tech-sz"])
    assert console.get(f"/console/work-orders/{order_id}").status_code == 404
    assert console.post(f"/console/work-orders/{order_id}/accept", data={"csrf_token": csrf}).status_code == 404
    assert order_id not in console.get("/console/work-orders", params={"status": "all"}).text


async def test_a_technician_opens_the_work_orders_only(
    console: TestClient, db: Database, technicians: dict[str, str]
) -> None:
    order_id = await a_work_order(db, SH_CABINET)
    csrf = sign_in_technician(console, technicians["tech-near"])
    listing = console.get("/console/work-orders").text

    assert f'href="/console/work-orders/{order_id}"' in listing
    assert 'href="/console/finance"' not in listing and 'href="/console/alerts"' not in listing
    for path in ("/console/finance", "/console/finance/settlements", "/console/alerts", "/console/network"):
        assert console.get(path).status_code == 403, path
    cancel = console.post(f"/console/work-orders/{order_id}/cancel", data={"csrf_token": csrf, "reason": "x"})
    assert cancel.status_code == 403


async def test_staff_may_not_accept_a_work_order(console: TestClient, db: Database, ops_sh: str) -> None:
    order_id = await a_work_order(db, SH_CABINET)
    csrf = sign_in(console, ops_sh)
    assert console.post(f"/console/work-orders/{order_id}/accept", data={"csrf_token": csrf}).status_code == 403


# ---------------------------------------------------------------------------------- figures


DAY0 = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_cabinets_presence_is_split_by_day_from_its_first_transition() -> None:
    days = [DAY0, DAY0 + timedelta(days=1), DAY0 + timedelta(days=2)]
    transitions = [
        (DAY0 + timedelta(hours=12), True),  # unknown before: half a day observed
        (DAY0 + timedelta(days=1, hours=6), False),
        (DAY0 + timedelta(days=1, hours=12), True),
    ]
    end = DAY0 + timedelta(days=2, hours=6)  # the last day cut short

    assert daily_presence(transitions, days, end) == [
        (12 * 3600.0, 12 * 3600.0),
        (24 * 3600.0, 18 * 3600.0),
        (6 * 3600.0, 6 * 3600.0),
    ]


def test_a_state_known_before_the_first_day_counts_from_its_start() -> None:
    days = [DAY0]
    assert daily_presence([(DAY0 - timedelta(days=3), False)], days, DAY0 + timedelta(days=1)) == [(86_400.0, 0.0)]


async def test_uptime_per_day_is_per_city_of_the_callers_cities(db: Database) -> None:
    today = day_starts(1)[0]
    async with db.transaction() as session:
        record_transition(session, SH_CABINET, True, PresenceCause.BIRTH, today - timedelta(days=2))
        record_transition(session, SZ_CABINET, False, PresenceCause.LAST_WILL, today - timedelta(days=2))
    async with db.sessions() as session:
        series = await uptime_series(session, day_starts(2), ["SH"])
    assert [(s.city_code, s.values) for s in series] == [("SH", [1.0, 1.0])]


async def test_the_figures_page_charts_mtta_mttr_and_uptime_per_city(
    console: TestClient, db: Database, ops_sh: str
) -> None:
    order_id = await a_work_order(db, SH_CABINET)
    opened = utcnow() - timedelta(minutes=40)
    async with db.transaction() as session:
        order = await session.get(WorkOrder, order_id)
        assert order is not None
        order.opened_at = opened
        session.add(WorkOrderEvent(work_order_id=order_id, seq=1, kind="accepted", at=opened + timedelta(minutes=6)))
        session.add(WorkOrderEvent(work_order_id=order_id, seq=2, kind="closed", at=opened + timedelta(minutes=30)))
        record_transition(session, SH_CABINET, True, PresenceCause.BIRTH, utcnow() - timedelta(days=3))
    day = [start.date() for start in day_starts(3)].index(opened.date())
    sign_in(console, ops_sh)
    page = console.get("/console/figures", params={"days": 3}).text

    def chart(chart_id: str) -> dict[str, list[dict[str, object]]]:
        found = re.search(rf'<script type="application/json" id="{chart_id}-data">(.*?)</script>', page, re.S)
        assert found is not None, chart_id
        return dict(json.loads(found.group(1)))

    expected = [None, None, None]
    assert chart("mtta")["series"] == [{"label": "SH", "values": expected[:day] + [6.0] + expected[day + 1 :]}]
    assert chart("mttr")["series"] == [{"label": "SH", "values": expected[:day] + [30.0] + expected[day + 1 :]}]
    assert chart("uptime")["series"] == [{"label": "SH", "values": [100.0, 100.0, 100.0]}]
    assert "uPlot.iife.min.js" in page
