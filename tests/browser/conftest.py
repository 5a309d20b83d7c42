"""The console in a real browser: Playwright driving Debian's chromium against the whole stack (its own
processes, as `swapflow up` runs them) with every cabinet simulated. One stack per test module; each test
gets a fresh browser context (no cookies)."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import pytest
from sqlalchemy import func, select

from swapflow.db.engine import Database
from swapflow.db.network import Cabinet
from swapflow.demo.accounts import DemoTokens, load_demo_tokens
from swapflow.settings import Settings
from swapflow.simulator.cabinet import SimulatedCabinet
from swapflow.simulator.fleet import build_cabinets
from tests.conftest import CONFIGURED_DATABASE_URL, create_postgres_database, drop_postgres_database, uses_postgres
from tests.test_end_to_end import whole_stack

CHROMIUM = os.environ.get("SWAPFLOW_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(
    os.environ.get("SWAPFLOW_SCREENSHOTS") or Path(__file__).resolve().parents[2] / ".swapflow" / "screenshots"
)
"""Where the browser tests save their screenshots; `SWAPFLOW_SCREENSHOTS=docs/screenshots` renews the
README's (a test run leaves the committed ones alone)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Without chromium (or Playwright) the browser tests are skipped, saying how to run them."""
    reason = None
    if not Path(CHROMIUM).exists():
        reason = (
            f"no chromium at {CHROMIUM}: `apt-get install -y chromium` (CI's .ci/run does) to run the browser tests"
        )
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (it is in the test extra)"
    if reason:
        for item in items:
            if Path(__file__).parent in Path(str(item.fspath)).parents:
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def stack_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database for the module's stack, which migrates and seeds it as `swapflow up` does."""
    if uses_postgres():
        assert CONFIGURED_DATABASE_URL is not None
        url = create_postgres_database(CONFIGURED_DATABASE_URL)
        yield url
        drop_postgres_database(CONFIGURED_DATABASE_URL, url)
    else:
        yield f"sqlite:///{tmp_path_factory.mktemp('console-db') / 'swapflow.db'}"


def stack_settings(
    tmp_path_factory: pytest.TempPathFactory, database_url: str, mqtt_url: str, **groups: dict[str, object]
) -> Settings:
    """Settings for a module's stack: its own data folder, topic prefix and task queue; `groups` on top."""
    run = uuid.uuid4().hex[:10]
    return Settings().updated(
        data_dir=tmp_path_factory.mktemp("stack-data"),
        database_url=database_url,
        mqtt={"url": mqtt_url, "topic_prefix": f"swapflow-test-{run}/v1"},
        temporal={"task_queue": f"swapflow-test-{run}"},
        adapter={"client_id": f"swapflow-test-adapter-{run}"},
        **groups,
    )


@asynccontextmanager
async def simulated_stack(
    settings: Settings, cabinet_ids: list[str] | None = None, telemetry_interval_s: float = 2.0
) -> AsyncIterator[tuple[Settings, dict[str, SimulatedCabinet]]]:
    """The whole stack on the demo network with the cabinets of `cabinet_ids` (None: all) simulated, each
    ready and marked online by the adapter; its settings and the simulated cabinets."""
    async with whole_stack(settings) as running:
        db = Database(running.settings.effective_database_url)
        cabinets = await build_cabinets(
            running.settings, db, cabinet_ids=cabinet_ids, telemetry_interval_s=telemetry_interval_s
        )
        tasks = [asyncio.create_task(cabinet.run()) for cabinet in cabinets.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in cabinets.values())), 60)
            for _ in range(100):  # the adapter marks a cabinet online from its birth message
                async with db.sessions() as session:
                    online = await session.scalar(
                        select(func.count()).where(Cabinet.id.in_(list(cabinets)), Cabinet.online.is_(True))
                    )
                if online == len(cabinets):
                    break
                await asyncio.sleep(0.1)
            yield running.settings, cabinets
        finally:
            for task in tasks:
                task.cancel()
            with suppress(Exception):
                await asyncio.gather(*tasks, return_exceptions=True)
            await db.dispose()


@pytest.fixture(scope="module")
async def console_stack(
    stack_database_url: str, mqtt_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Settings]:
    """The whole stack on the demo network, every cabinet simulated and online."""
    settings = stack_settings(tmp_path_factory, stack_database_url, mqtt_url, console={"live_poll_s": 0.5})
    async with simulated_stack(settings) as (running, _):
        yield running


@pytest.fixture(scope="module")
def tokens(console_stack: Settings) -> DemoTokens:
    return load_demo_tokens(console_stack.data_dir)


@pytest.fixture(scope="module")
async def stack_db(console_stack: Settings) -> AsyncIterator[Database]:
    database = Database(console_stack.effective_database_url)
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[object]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: object, console_stack: Settings) -> AsyncIterator[object]:
    """A new page in a new context (no cookies), based at the stack's API."""
    context = await browser.new_context(  # type: ignore[attr-defined]
        base_url=console_stack.api.effective_url, viewport={"width": 1280, "height": 860}
    )
    page = await context.new_page()
    page.set_default_timeout(15_000)
    yield page
    await context.close()


def screenshot_path(name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"
