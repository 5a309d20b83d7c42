"""Rendering console pages: the templates, the layout's context (the account, the CSRF token, the
navigation), and the error pages every console failure shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from swapflow.api.auth import Principal
from swapflow.console.session import read_session
from swapflow.domain.ops import OperatorRole

PREFIX = "/console"
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")

NAV = (
    ("network", "Network", f"{PREFIX}/network"),
    ("swaps", "Swaps", f"{PREFIX}/swaps"),
    ("alerts", "Alerts", f"{PREFIX}/alerts"),
    ("work-orders", "Work orders", f"{PREFIX}/work-orders"),
    ("figures", "Incidents", f"{PREFIX}/figures"),
    ("finance", "Finance", f"{PREFIX}/finance"),
)
"""The layout's navigation: (area, label, address); a page names its area as `section`."""

TECHNICIAN_AREAS = frozenset({"work-orders"})
"""The areas a technician may open (and sees in the navigation)."""


def _nav(user: Principal | None) -> tuple[tuple[str, str, str], ...]:
    if user is not None and user.role == OperatorRole.TECHNICIAN:
        return tuple(entry for entry in NAV if entry[0] in TECHNICIAN_AREAS)
    return NAV


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    user: Principal | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """A page (or an htmx fragment) with the layout's context."""
    session = read_session(request)
    full = {
        "user": user,
        "csrf_token": session.csrf if session else "",
        "nav": _nav(user),
        "prefix": PREFIX,
        **(context or {}),
    }
    return templates.TemplateResponse(request, template, full, status_code=status_code)


def fragment(template: str, context: dict[str, Any]) -> str:
    """A template rendered to text, outside a request (a live page's update)."""
    return templates.get_template(template).render({"prefix": PREFIX, **context})


def sign_in_address(request: Request, prefix: str = PREFIX) -> str:
    """The sign-in page of the site under `prefix`, coming back to this page after (an htmx request: the
    page it was made from)."""
    back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if request.headers.get("HX-Request"):
        back = request.headers.get("HX-Current-URL", back)
    return f"{prefix}/sign-in?next={quote(back, safe='')}"


def sign_in_redirect(request: Request, prefix: str = PREFIX) -> Response:
    """Where a 401 sends the browser: to the sign-in page (an htmx request: told so by `HX-Redirect`)."""
    target = sign_in_address(request, prefix)
    if request.headers.get("HX-Request"):
        return Response(status_code=401, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def error_page(request: Request, status: int, title: str, detail: str) -> Response:
    """What a console page answers on an error: the sign-in page for a 401, else an error page."""
    if status == 401:
        return sign_in_redirect(request)
    return render(request, "error.html", {"status": status, "title": title, "detail": detail}, status_code=status)


def covers(request: Request) -> bool:
    """Whether a request is the console's (errors answer pages, not problem documents)."""
    path = request.url.path
    return path == PREFIX or path.startswith(PREFIX + "/")
