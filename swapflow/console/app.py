"""The console's routes under /console and its static files (vendored front-end libraries, its CSS).

An area adds its router (`pages/<area>.py`, a module with `router`) to the tuple below; every route
gets the CSRF check, and a page takes `ConsoleUser` (or `console_require(...)`) for its account."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from swapflow.console import live
from swapflow.console.pages import batteries, cabinets, finance, network, ops, sign_in, swaps
from swapflow.console.rendering import HERE, PREFIX
from swapflow.console.session import check_csrf

console_router = APIRouter(prefix=PREFIX, include_in_schema=False, dependencies=[Depends(check_csrf)])
for _area in (sign_in, network, cabinets, swaps, batteries, live, ops, finance):
    console_router.include_router(_area.router)


def install_console(app: FastAPI) -> None:
    """Serve the console from `app`."""
    app.include_router(console_router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="console-static")
