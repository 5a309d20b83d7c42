"""The phone page's routes under /app, its static files, and the console's vendored libraries (htmx, its
SSE extension, Leaflet) served again under /app/vendor, so the page loads nothing from elsewhere.

An area adds its router (`pages/<area>.py`, a module with `router`) to the tuple below; every route
gets the CSRF check, and a page takes `RiderUser` for its rider."""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from swapflow.console.rendering import HERE as CONSOLE_HERE
from swapflow.rider_app.pages import cabinets, sign_in, swaps, wallet
from swapflow.rider_app.rendering import HERE, PREFIX
from swapflow.rider_app.session import check_csrf

rider_app_router = APIRouter(include_in_schema=False, dependencies=[Depends(check_csrf)])
for _area in (sign_in, cabinets, swaps, wallet):
    # The prefix here, not on `rider_app_router`: the home page's path is the prefix itself.
    rider_app_router.include_router(_area.router, prefix=PREFIX)


def install_rider_app(app: FastAPI) -> None:
    """Serve the phone page from `app`."""
    app.include_router(rider_app_router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="rider-app-static")
    app.mount(f"{PREFIX}/vendor", StaticFiles(directory=CONSOLE_HERE / "static" / "vendor"), name="rider-app-vendor")
