"""The console's routes under /console and its static files (vendored front-end libraries, its CSS)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from swapflow.console import live
from swapflow.console.pages import cabinets, finance, network, ops, sign_in
from swapflow.console.rendering import HERE, PREFIX
from swapflow.console.session import check_csrf

console_router = APIRouter(prefix=PREFIX, include_in_schema=False, dependencies=[Depends(check_csrf)])
for _area in (sign_in, network, cabinets, live, ops, finance):
    console_router.include_router(_area.router)


def install_console(app: FastAPI) -> None:
    """Serve the console from `app`."""
    app.include_router(console_router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
