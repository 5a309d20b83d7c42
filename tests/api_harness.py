"""The API app as a test runs it: in the test's event loop, sharing the test's database and Temporal client
(the time-skipping server's), so the test and the app see the same workflows and rows."""

from __future__ import annotations

from fastapi import FastAPI
from temporalio.client import Client

from swapflow.api.app import create_app
from swapflow.db.engine import Database
from swapflow.settings import Settings


def app_sharing(settings: Settings, db: Database, temporal: Client) -> FastAPI:
    app = create_app(settings)
    app.state.settings, app.state.db = settings, db

    async def connect() -> Client:
        return temporal

    app.state.temporal = connect
    return app
