"""Dependencies shared by the routers: the database, the Temporal client, the settings, and the
Idempotency-Key of a create."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.services.temporal import TemporalConnector
from swapflow.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_session(db: Annotated[Database, Depends(get_db)]) -> AsyncIterator[AsyncSession]:
    """A read session; routers that write open their own transaction on the Database."""
    async with db.sessions() as session:
        yield session


def get_temporal(request: Request) -> TemporalConnector:
    """The Temporal client, connected on first use: requests that fail validation never wait for it."""
    return request.app.state.temporal


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_db)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
TemporalDep = Annotated[TemporalConnector, Depends(get_temporal)]
IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=100)]
"""The key a create is made once under: the same request with it again answers the same resource."""


def answer_created(response: Response, created: bool) -> None:
    """A create answered again under its Idempotency-Key is 200, whatever status a new one answers."""
    if not created:
        response.status_code = status.HTTP_200_OK
