"""Signing in and out. Today a rider signs in with their API token; any other way that ends with an
access token (a code sent to their phone) signs the browser in through `start_session` the same way,
and its form goes in the sign-in page's `other_ways` block."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from swapflow.api.auth import principal_of
from swapflow.api.deps import DatabaseDep, SettingsDep
from swapflow.api.problems import Problem
from swapflow.console.session import ANONYMOUS_S, SignedSession
from swapflow.ops.accounts import hash_token
from swapflow.rider_app.rendering import PREFIX, render
from swapflow.rider_app.session import RIDER_COOKIE, start_session
from swapflow.settings import Settings

router = APIRouter()


def safe_next(target: str | None) -> str:
    """Only a page of the phone page: a sign-in link must not send the browser elsewhere."""
    if target and (target == PREFIX or target.startswith(PREFIX + "/")) and "\\" not in target:
        return target
    return PREFIX


def sign_in_form(request: Request, next_: str | None, error: str | None = None, status_code: int = 200) -> HTMLResponse:
    """The sign-in page; a visitor without a session gets one first, for the forms' CSRF token."""
    session = RIDER_COOKIE.read(request)
    fresh = session is None
    if session is None:
        session = SignedSession.new(None, ANONYMOUS_S)
        RIDER_COOKIE.adopt(request, session)
    response = render(request, "sign_in.html", {"next": safe_next(next_), "error": error}, status_code=status_code)
    if fresh:
        RIDER_COOKIE.write(request, response, session)
    return response


def signed_in_response(request: Request, settings: Settings, token_hash: str, next_: str | None) -> Response:
    """The answer to a successful sign-in: the session set, the browser on to the page it wanted."""
    response = RedirectResponse(safe_next(next_), status_code=303)
    start_session(request, response, settings, token_hash)
    return response


@router.get("/sign-in", response_class=HTMLResponse)
async def sign_in_page(request: Request, next: str | None = None) -> HTMLResponse:
    return sign_in_form(request, next)


@router.post("/sign-in")
async def sign_in_with_token(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    token: Annotated[str, Form(min_length=1, max_length=400)],
    next: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    token_hash = hash_token(token.strip())
    try:
        async with db.sessions() as session:
            principal = await principal_of(session, token_hash)
    except Problem:
        return sign_in_form(request, next, "That token is unknown or revoked, or the account is not active.", 401)
    if not principal.is_rider:
        return sign_in_form(request, next, "This page is for riders: staff sign in to the console.", 403)
    return signed_in_response(request, settings, token_hash, next)


@router.post("/sign-out")
async def sign_out(request: Request) -> RedirectResponse:
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    RIDER_COOKIE.write(request, response, SignedSession.new(None, ANONYMOUS_S))
    return response
