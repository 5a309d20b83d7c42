"""Dependencies shared by the routers: the database, the Temporal client, the settings."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from swapflow.db.engine import Database
from swapflow.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_session(db: Annotated[Database, Depends(get_db)]) -> AsyncIterator[AsyncSession]:
    """A read session; routers that write open their own transaction on the Database."""
    async with db.sessions() as session:
        yield session


TemporalConnector = Callable[[], Awaitable[Client]]


def get_temporal(request: Request) -> TemporalConnector:
    """The Temporal client, connected on first use: requests that fail validation never wait for it."""
    return request.app.state.temporal


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_db)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
TemporalDep = Annotated[TemporalConnector, Depends(get_temporal)]
