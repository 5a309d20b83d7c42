"""Signing in and out: with a code sent to the rider's phone (a new phone signs up, naming its city and
perhaps a referral code), or with an API token. Either ends with an access token whose hash the session
keeps (`start_session`); the phone code's token lasts as long as the page's session, and signing out
revokes it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from swapflow.api.auth import principal_of
from swapflow.api.deps import DatabaseDep, SettingsDep
from swapflow.api.problems import Problem
from swapflow.api.routers.rider_auth import client_address, get_sms_sender
from swapflow.console.session import ANONYMOUS_S, SignedSession
from swapflow.db.engine import Database
from swapflow.db.network import City
from swapflow.domain.errors import DomainError
from swapflow.identity.sms import SmsSender
from swapflow.ops.accounts import hash_token
from swapflow.rider_app.rendering import PREFIX, render
from swapflow.rider_app.session import RIDER_COOKIE, start_session
from swapflow.services import rider_accounts
from swapflow.settings import Settings

router = APIRouter()


def safe_next(target: str | None) -> str:
    """Only a page of the phone page: a sign-in link must not send the browser elsewhere."""
    if target and (target == PREFIX or target.startswith(PREFIX + "/")) and "\\" not in target:
        return target
    return PREFIX


def sign_in_form(
    request: Request,
    next_: str | None,
    error: str | None = None,
    status_code: int = 200,
    *,
    template: str = "sign_in.html",
    context: Mapping[str, object] | None = None,
) -> HTMLResponse:
    """The sign-in page (or its second step, the code's); a visitor without a session gets one first, for
    the forms' CSRF token."""
    session = RIDER_COOKIE.read(request)
    fresh = session is None
    if session is None:
        session = SignedSession.new(None, ANONYMOUS_S)
        RIDER_COOKIE.adopt(request, session)
    page = {"next": safe_next(next_), "error": error, **(context or {})}
    response = render(request, template, page, status_code=status_code)
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


async def _code_step(
    request: Request,
    db: Database,
    settings: Settings,
    phone: str,
    next_: str | None,
    error: str | None = None,
    kept: Mapping[str, str | None] | None = None,
) -> HTMLResponse:
    """The code's form for `phone`, with the fields a new rider fills in (their city's choices), those
    already filled in `kept`."""
    async with db.sessions() as session:
        cities = list(await session.scalars(select(City).order_by(City.code)))
    dev_inbox = rider_accounts.dev_inbox_enabled(settings)
    context = {"phone": phone, "cities": cities, "dev_inbox": dev_inbox, **(kept or {})}
    status = 200 if error is None else 422
    return sign_in_form(request, next_, error, status, template="sign_in_code.html", context=context)


@router.post("/sign-in/code", response_class=HTMLResponse)
async def send_code(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    sender: Annotated[SmsSender, Depends(get_sms_sender)],
    phone: Annotated[str, Form(min_length=1, max_length=32)],
    next: Annotated[str | None, Form(max_length=2000)] = None,
) -> HTMLResponse:
    """Send a code to the phone, then ask for it."""
    try:
        sent = await rider_accounts.request_code(db, settings, phone, client_address(request), sender)
    except DomainError as exc:
        return sign_in_form(request, next, exc.detail, 429 if "retry_after_s" in exc.members else 422)
    return await _code_step(request, db, settings, sent.phone, next)


@router.post("/sign-in/phone")
async def sign_in_with_phone(
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    phone: Annotated[str, Form(min_length=1, max_length=32)],
    code: Annotated[str, Form(min_length=1, max_length=16)],
    name: Annotated[str | None, Form(max_length=100)] = None,
    city_code: Annotated[str | None, Form(max_length=16)] = None,
    referral_code: Annotated[str | None, Form(max_length=40)] = None,
    next: Annotated[str | None, Form(max_length=2000)] = None,
) -> Response:
    """Sign in (or up) with the code; the token it gives lasts as long as the page's session."""
    try:
        pair = await rider_accounts.sign_in_with_code(
            db,
            settings,
            phone,
            code.strip(),
            name=name or None,
            city_code=city_code or None,
            referral_code=referral_code or None,
            access_ttl_s=settings.rider_app.session_days * 86400,
        )
    except DomainError as exc:
        kept = {"name": name, "city_code": city_code, "referral_code": referral_code}
        return await _code_step(request, db, settings, phone, next, exc.detail, kept)
    return signed_in_response(request, settings, hash_token(pair.access_token), next)


@router.post("/sign-out")
async def sign_out(request: Request, db: DatabaseDep) -> RedirectResponse:
    """Sign the browser out and revoke the token its session held."""
    session = RIDER_COOKIE.read(request)
    if session is not None and session.token_hash is not None:
        await rider_accounts.sign_out_token(db, session.token_hash)
    response = RedirectResponse(f"{PREFIX}/sign-in", status_code=303)
    RIDER_COOKIE.write(request, response, SignedSession.new(None, ANONYMOUS_S))
    return response
