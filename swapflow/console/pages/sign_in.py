"""Signing in and out: an account's API token for a session cookie."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from swapflow.api.auth import admit, principal_of
from swapflow.api.deps import DatabaseDep, SettingsDep
from swapflow.api.problems import Problem
from swapflow.console.rendering import PREFIX, render
from swapflow.console.session import (
    ANONYMOUS_S,
    CONSOLE_COOKIE,
    CONSOLE_ROLES,
    SignedSession,
    read_session,
    write_session,
)
from swapflow.domain.errors import Forbidden
from swapflow.domain.ops import OperatorRole
from swapflow.ops.accounts import hash_token

router = APIRouter()

HOME = f"{PREFIX}/network"
TECHNICIAN_HOME = f"{PREFIX}/work-orders"
"""A technician's only pages are the work orders'."""


def _safe_next(target: str | None, home: str = HOME) -> str:
    """Only a console page: a sign-in link must not send the browser elsewhere."""
    if target and target.startswith(PREFIX + "/") and not target.startswith("//") and "\\" not in target:
        return target
    return home


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=303)


def _form(request: Request, next_: str | None, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    """The sign-in form; a visitor without a session gets one first, for the form's CSRF token."""
    session = read_session(request)
    fresh = session is None
    if session is None:
        session = SignedSession.new(None, ANONYMOUS_S)
        CONSOLE_COOKIE.adopt(request, session)
    # No page asked for: the account's home, known once signed in.
    context = {"next": _safe_next(next_, ""), "error": error, "section": None}
    response = render(request, "sign_in.html", context, status_code=status_code)
    if fresh:
        write_session(request, response, session)
    return response


@router.get("/sign-in")
async def sign_in_page(request: Request, next: str | None = None) -> HTMLResponse:
    return _form(request, next)


@router.post("/sign-in")
async def sign_in(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    token: Annotated[str, Form(min_length=1, max_length=400)],
    next: Annotated[str | None, Form()] = None,
) -> Response:
    token_hash = hash_token(token.strip())
    try:
        async with db.sessions() as session:
            principal = admit(await principal_of(session, token_hash), *CONSOLE_ROLES)
    except Problem:
        return _form(request, next, "That token is unknown, revoked, or its account is not active.", 401)
    except Forbidden:
        return _form(request, next, "The console is for operators, city leads, finance, admins and technicians.", 403)
    home = TECHNICIAN_HOME if principal.role == OperatorRole.TECHNICIAN else HOME
    response = RedirectResponse(_safe_next(next, home), status_code=303)
    # A fresh CSRF token with each sign-in: one learnt before it is of no use after.
    write_session(request, response, SignedSession.new(token_hash, settings.console.session_hours * 3600))
    return response


@router.post("/sign-out")
async def sign_out(request: Request) -> RedirectResponse:
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    write_session(request, response, SignedSession.new(None, ANONYMOUS_S))
    return response
