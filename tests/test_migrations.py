"""The schema comes from the migrations alone, up from empty and back down, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from swapflow.db.engine import create_sync_engine
from swapflow.db.migrate import downgrade, upgrade
from swapflow.db.schema import metadata
from tests.conftest import uses_postgres


def assert_schema_matches_models(url: str) -> None:
    engine = create_sync_engine(url)
    try:
        tables = set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
    assert tables == set(metadata.tables)


def assert_round_trip(url: str) -> None:
    upgrade(url)
    assert_schema_matches_models(url)
    downgrade(url)
    engine = create_sync_engine(url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    upgrade(url)
    assert_schema_matches_models(url)


def test_migrations_run_up_and_down_on_sqlite(tmp_path: Path) -> None:
    assert_round_trip(f"sqlite:///{tmp_path / 'fresh.db'}")


@pytest.mark.skipif(not uses_postgres(), reason="SWAPFLOW_DATABASE_URL does not name a PostgreSQL server")
def test_migrations_run_up_and_down_on_postgresql(empty_database_url: str) -> None:
    assert_round_trip(empty_database_url)


@pytest.mark.skipif(not uses_postgres(), reason="SWAPFLOW_DATABASE_URL does not name a PostgreSQL server")
def test_the_live_device_tables_keep_room_on_their_pages_for_in_place_updates_on_postgresql(
    empty_database_url: str,
) -> None:
    upgrade(empty_database_url)
    engine = create_sync_engine(empty_database_url)
    try:
        with engine.connect() as conn:
            options = dict(
                conn.exec_driver_sql(
                    "SELECT relname, reloptions FROM pg_class WHERE relname IN ('batteries', 'slots', 'cabinets')"
                ).all()
            )
    finally:
        engine.dispose()
    assert options == {"batteries": ["fillfactor=80"], "slots": ["fillfactor=80"], "cabinets": ["fillfactor=85"]}
