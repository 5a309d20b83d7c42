"""The FastAPI application: routers, problem details, and the per-process database and Temporal client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from temporalio.client import Client

from swapflow.api.openapi import install_contract, text_without_nul
from swapflow.api.problems import ErrorPages, install_problem_handlers
from swapflow.api.routers import (
    batteries,
    cabinets,
    complaints,
    finance,
    network,
    ops,
    partners,
    payment_methods,
    payments,
    plans,
    pricing,
    refunds,
    reservations,
    rider_auth,
    riders,
    settlements,
    swaps,
    wallets,
)
from swapflow.console import rendering
from swapflow.console.app import install_console
from swapflow.db.engine import Database
from swapflow.infra.temporal import connect_temporal
from swapflow.rider_app import rendering as rider_rendering
from swapflow.rider_app.app import install_rider_app
from swapflow.settings import Settings, get_settings


def _lazy_temporal(settings: Settings) -> Callable[[], Awaitable[Client]]:
    """Connect on first use, so the read endpoints serve even while Temporal is still starting."""
    client: Client | None = None
    lock = asyncio.Lock()

    async def get() -> Client:
        nonlocal client
        async with lock:
            if client is None:
                client = await connect_temporal(settings, wait_s=5.0)
        return client

    return get


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API for the given settings (default: from the environment)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.settings = settings
        app.state.db = Database(settings.effective_database_url, pool_size=20)
        app.state.temporal = _lazy_temporal(settings)
        yield
        await app.state.db.dispose()

    app = FastAPI(
        title="swapflow",
        summary="Battery-swap network: riders, cabinets, swaps.",
        version="0.1.0",
        lifespan=lifespan,
        dependencies=[Depends(text_without_nul)],
    )
    install_problem_handlers(
        app,
        ErrorPages(rendering.covers, rendering.error_page),
        ErrorPages(rider_rendering.covers, rider_rendering.error_page),
    )
    install_contract(app)
    for module in (
        swaps,
        cabinets,
        riders,
        network,
        batteries,
        ops,
        pricing,
        wallets,
        refunds,
        complaints,
        finance,
        settlements,
        payments,
        partners,
        rider_auth,
        reservations,
        payment_methods,
        plans,
    ):
        app.include_router(module.router)
    install_console(app)
    install_rider_app(app)
    return app
