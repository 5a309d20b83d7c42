"""Rendering the phone page: its templates, the layout's context (the rider, the CSRF token, the
navigation), money in major units, and the error pages every failure under /app shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from swapflow.api.auth import Principal
from swapflow.console.rendering import sign_in_redirect
from swapflow.payments.bank_payouts import major_units
from swapflow.rider_app.session import RIDER_COOKIE

PREFIX = "/app"
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")


def money(amount_minor: int | None, currency: str | None) -> str:
    """An amount as a rider reads it: `12.50 CNY`."""
    if amount_minor is None or currency is None:
        return "—"
    return f"{major_units(amount_minor, currency)} {currency}"


templates.env.filters["money"] = money

NAV = (
    ("cabinets", "Cabinets", PREFIX),
    ("swaps", "Swaps", f"{PREFIX}/swaps"),
    ("wallet", "Wallet", f"{PREFIX}/wallet"),
)
"""The layout's navigation: (area, label, address); a page names its area as `section`."""


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    rider: Principal | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """A page (or an htmx fragment) with the layout's context."""
    session = RIDER_COOKIE.read(request)
    full = {
        "rider": rider,
        "csrf_token": session.csrf if session else "",
        "nav": NAV,
        "prefix": PREFIX,
        **(context or {}),
    }
    return templates.TemplateResponse(request, template, full, status_code=status_code)


def fragment(template: str, context: dict[str, Any]) -> str:
    """A template rendered to text, outside a request (a live page's update)."""
    return templates.get_template(template).render({"prefix": PREFIX, **context})


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    """What a page under /app answers on an error: the sign-in page for a 401, else an error page."""
    if status == 401:
        return sign_in_redirect(request, PREFIX)
    return render(request, "error.html", {"status": status, "title": title, "detail": detail}, status_code=status)


def covers(request: Request) -> bool:
    """Whether a request is the phone page's (errors answer pages, not problem documents)."""
    path = request.url.path
    return path == PREFIX or path.startswith(PREFIX + "/")
