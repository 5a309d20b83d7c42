"""Engines and sessions for SQLite (embedded default) and PostgreSQL, from one URL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


def _normalise(url: str, *, asynchronous: bool) -> str:
    """Pick the driver: psycopg 3 for PostgreSQL, aiosqlite (async) or sqlite3 (sync) for SQLite."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite" if asynchronous else "sqlite")
    else:
        raise ValueError(f"unsupported database {backend!r}: use sqlite:/// or postgresql://")
    return parsed.render_as_string(hide_password=False)


def _sqlite_pragmas(engine: Engine, *, writes: bool = True) -> None:
    """WAL lets readers run beside the writer. Writing transactions begin IMMEDIATE, so concurrent
    writers in several processes queue on busy_timeout instead of failing on a lock upgrade; reading
    transactions begin DEFERRED and never wait for a writer."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writes else "BEGIN")


def is_sqlite(url: str) -> bool:
    """Whether the URL names a SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite file, so a fresh machine needs no set-up."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
        from pathlib import Path

        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def create_sync_engine(url: str) -> Engine:
    """A blocking engine, for migrations, seeding and scripts."""
    ensure_sqlite_folder(url)
    engine = create_engine(_normalise(url, asynchronous=False), pool_pre_ping=True)
    if is_sqlite(url):
        _sqlite_pragmas(engine)
    return engine


def create_async_db_engine(url: str, *, pool_size: int = 10, writes: bool = True, pre_ping: bool = True) -> AsyncEngine:
    """The engine the API, worker and device adapter use. `pre_ping` tests each connection as it leaves
    the pool (a round trip per transaction), for callers that would otherwise fail on a dropped one."""
    ensure_sqlite_folder(url)
    kwargs: dict[str, Any] = {"pool_pre_ping": pre_ping}
    if not is_sqlite(url):
        kwargs |= {"pool_size": pool_size, "max_overflow": pool_size}
    engine = create_async_engine(_normalise(url, asynchronous=True), **kwargs)
    if is_sqlite(url):
        _sqlite_pragmas(engine.sync_engine, writes=writes)
    return engine


class Database:
    """Async engines and session factories; one per process. `transaction()` is for work that writes;
    `sessions()` for reads (on SQLite they never queue behind writers; on PostgreSQL both are one pool)."""

    def __init__(self, url: str, *, pool_size: int = 10, pre_ping: bool = True) -> None:
        """`pre_ping=False` for a process that retries a transaction on a connection error itself (the
        device adapter): a dropped connection then costs one retry instead of a ping per transaction."""
        self.url = url
        self.engine = create_async_db_engine(url, pool_size=pool_size, pre_ping=pre_ping)
        self._read_engine = (
            create_async_db_engine(url, pool_size=pool_size, writes=False, pre_ping=pre_ping)
            if is_sqlite(url)
            else None
        )
        self._write_sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time, and a blocked writer polls with sleeps of up to 100 ms.
        # Queuing this process's writers here instead hands the lock over at once.
        self._write_lock = asyncio.Lock() if is_sqlite(url) else None
        self.sessions = async_sessionmaker(self._read_engine or self.engine, expire_on_commit=False)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        if self._write_lock is None:
            async with self._write_sessions() as session, session.begin():
                yield session
            return
        async with self._write_lock, self._write_sessions() as session, session.begin():
            yield session

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()
        if self._read_engine is not None:
            await self._read_engine.dispose()
