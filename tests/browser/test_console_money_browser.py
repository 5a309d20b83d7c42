"""Ops and finance in chromium against the whole stack: an operator acknowledges and resolves an alert and
cancels a work order through its page; the technician a work order is dispatched to accepts and resolves
it; finance approves a settlement run and downloads its statement. Screenshots go to docs/screenshots/."""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path

import httpx
from playwright.async_api import Page, expect
from temporalio.client import Client

from swapflow.db.commissions import SettlementRun
from swapflow.db.engine import Database
from swapflow.db.ops import Alert
from swapflow.demo.accounts import DemoTokens
from swapflow.infra.temporal import connect_temporal
from swapflow.services import settlements
from swapflow.settings import Settings
from swapflow.workflows.settlement_contract import RunStatus, settlement_run_id, settlement_workflow_id
from tests.browser.conftest import screenshot_path
from tests.browser.test_console_browser import sign_in
from tests.test_settlement_api import LAST, PREPARER, host_with_last_months_swaps

SH_CABINET = "cab-sh-001-1"


async def test_an_operator_acknowledges_and_resolves_an_alert(
    page: Page, tokens: DemoTokens, stack_db: Database
) -> None:
    async with stack_db.transaction() as session:
        alert = Alert(
            kind="console_ops_test",
            severity="warning",
            dedupe_key=f"console-ops-test/{SH_CABINET}",
            cabinet_id=SH_CABINET,
            message="raised by the ops browser test",
        )
        session.add(alert)
        await session.flush()
        alert_id = alert.id
    await sign_in(page, tokens.operators["ops-sh"], "/console/alerts?kind=console_ops_test")
    row = page.locator(f"#alert-row-{alert_id}")
    await expect(row).to_contain_text("not acknowledged")

    await row.get_by_role("button", name=f"Acknowledge alert {alert_id}").click()
    await expect(row).to_contain_text(re.compile(r"acknowledged\s+by ops-sh"))
    await page.screenshot(path=screenshot_path("alerts"), full_page=True)
    await row.get_by_label("Note").fill("checked on site")
    await row.get_by_role("button", name=f"Resolve alert {alert_id}").click()
    await expect(row).to_contain_text(f"Alert {alert_id} resolved.")

    async with stack_db.sessions() as session:
        found = await session.get(Alert, alert_id)
    assert found is not None and (found.acknowledged_by, found.resolved_by) == ("ops-sh", "ops-sh")


async def test_an_operator_cancels_a_work_order_from_its_page(
    page: Page, tokens: DemoTokens, console_stack: Settings
) -> None:
    async with httpx.AsyncClient(base_url=console_stack.api.effective_url) as api:
        opened = await api.post(
            "/v1/ops/work-orders",
            json={"cabinet_id": SH_CABINET, "slot_no": 6, "severity": "warning", "description": "browser test"},
            headers={"Authorization": f"Bearer {tokens.operators['ops-sh']}"},
        )
    assert opened.status_code in (200, 201), opened.text
    order_id = opened.json()["id"]
    await sign_in(page, tokens.operators["ops-sh"], "/console/work-orders")
    await page.get_by_role("link", name=order_id).click()
    await expect(page.get_by_role("heading", name=f"Work order {order_id}")).to_be_visible()
    await expect(page.locator("ol.timeline")).to_contain_text("opened")

    await page.get_by_label("Reason for cancelling").fill("the slot is being replaced")
    await page.get_by_role("button", name="Cancel the work order").click()
    await expect(page.get_by_role("status")).to_have_text("Work order cancelled.")
    await expect(page.locator("ol.timeline")).to_contain_text("cancelled")
    await page.screenshot(path=screenshot_path("work-order"), full_page=True)


async def test_a_technician_accepts_and_resolves_its_work_order(
    page: Page, tokens: DemoTokens, console_stack: Settings
) -> None:
    staff = {"Authorization": f"Bearer {tokens.operators['ops-sh']}"}
    async with httpx.AsyncClient(base_url=console_stack.api.effective_url) as api:
        opened = await api.post(
            "/v1/ops/work-orders",
            json={"cabinet_id": SH_CABINET, "slot_no": 5, "severity": "warning", "description": "browser test"},
            headers=staff,
        )
        assert opened.status_code in (200, 201), opened.text
        order_id = opened.json()["id"]
        for _ in range(100):  # its workflow dispatches it to the nearest technician on duty
            order = (await api.get(f"/v1/ops/work-orders/{order_id}", headers=staff)).json()
            if order["status"] == "dispatched":
                break
            await asyncio.sleep(0.1)
    technician = order["technician_id"]
    assert technician, order
    await sign_in(page, tokens.operators[technician], f"/console/work-orders/{order_id}")
    await expect(page.get_by_role("button", name="Cancel the work order")).to_have_count(0)  # staff's

    await page.get_by_role("button", name="Accept the work order").click()
    await expect(page.get_by_role("status")).to_have_text("Work order accepted.")
    await page.get_by_label("What you did").fill("new latch fitted")
    await page.get_by_role("button", name="Report the fix").click()
    await expect(page.get_by_role("status")).to_contain_text("Fix reported")
    await expect(page.locator("ol.timeline")).to_contain_text("resolved")
    await expect(page.get_by_role("link", name="open in the Temporal UI")).to_be_visible()
    await page.screenshot(path=screenshot_path("work-order-technician"), full_page=True)


async def test_finance_approves_a_settlement_run_and_downloads_its_statement(
    page: Page, tokens: DemoTokens, console_stack: Settings, stack_db: Database
) -> None:
    host = f"host-{uuid.uuid4().hex[:8]}"
    await host_with_last_months_swaps(stack_db, host, "sandbox")
    client: Client = await connect_temporal(console_stack)
    await settlements.start_settlement(client, console_stack, stack_db, host, LAST.label, PREPARER)
    run_id = settlement_run_id(host, LAST.label)
    try:
        await sign_in(page, tokens.operators["finance-sh"], "/console/finance/settlements?status=awaiting_approval")
        await expect(page.get_by_role("link", name=run_id)).to_be_visible(timeout=30_000)  # once it is computed
        await page.get_by_role("link", name=run_id).click()
        await expect(page.locator("#run-status")).to_contain_text("awaiting approval")

        async with page.expect_download() as downloading:
            await page.get_by_role("link", name="Download the statement (CSV)").click()
        saved = await (await downloading.value).path()
        statement = await asyncio.to_thread(Path(saved).read_text)
        assert statement.splitlines()[-1].split(",")[4] == "total"

        await page.get_by_role("button", name="Approve").click()
        await expect(page.get_by_role("status")).to_contain_text("Approved: the run is approved")
        await page.screenshot(path=screenshot_path("settlement-run"), full_page=True)
        async with stack_db.sessions() as session:
            run = await session.get(SettlementRun, run_id)
        assert run is not None and run.status != RunStatus.AWAITING_APPROVAL and run.approved_by == "finance-sh"
    finally:
        handle = client.get_workflow_handle(settlement_workflow_id(host, LAST.label))
        if (await handle.describe()).close_time is None:
            await handle.terminate("test over")
