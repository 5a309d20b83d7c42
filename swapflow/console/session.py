"""Signing in to the console: an account's API token becomes a signed session cookie.

The cookie (HttpOnly, SameSite=Lax, Secure over https) carries the token's hash, a CSRF token and an
expiry, signed with HMAC-SHA256 under `console.session_secret` (or a key kept in the data folder). Each
request names its caller through `swapflow.api.auth.principal_of`, as the API does for a bearer token,
so a revoked token or a deactivated account ends its console sessions too, and role and city scoping
are the API's. Every request that changes something carries the session's CSRF token (a form's
hidden `csrf_token`, or htmx's `X-CSRF-Token` header) or is refused with 403.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response

from swapflow.api.auth import MONEY_STAFF, Principal, admit, principal_of, unauthorized
from swapflow.api.deps import DatabaseDep
from swapflow.domain.errors import Forbidden
from swapflow.domain.ops import OperatorRole
from swapflow.identity.credentials import kept_secret
from swapflow.settings import Settings

COOKIE = "swapflow_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SECRET_FILE = "console-session-secret"
ANONYMOUS_S = 3600
"""How long the session of a visitor not yet signed in (just its CSRF token) lasts."""

CONSOLE_ROLES = (*MONEY_STAFF, OperatorRole.TECHNICIAN)
"""Who may sign in: operators, city leads, finance, admins and technicians (not riders or partners)."""

PAGE_ROLES = MONEY_STAFF
"""Who may open a page taking `ConsoleUser`: a technician's pages name it with `console_require`."""

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class ConsoleSession:
    """What the cookie says: the CSRF token, the signed-in token's hash (None: not signed in), expiry."""

    csrf: str
    token_hash: str | None
    expires: int

    @classmethod
    def new(cls, token_hash: str | None, lifetime_s: float) -> ConsoleSession:
        return cls(secrets.token_urlsafe(24), token_hash, int(time.time() + lifetime_s))


def session_key(settings: Settings) -> bytes:
    """The key signing session cookies."""
    if settings.console.session_secret:
        return hashlib.sha256(settings.console.session_secret.encode()).digest()
    return kept_secret(settings, SECRET_FILE)


def _key(request: Request) -> bytes:
    state = request.app.state
    key: bytes | None = getattr(state, "console_key", None)
    if key is None:
        key = state.console_key = session_key(state.settings)
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_session(key: bytes, session: ConsoleSession) -> str:
    payload = _b64(json.dumps({"x": session.csrf, "t": session.token_hash, "e": session.expires}).encode())
    return f"{payload}.{_b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())}"


def decode_session(key: bytes, value: str) -> ConsoleSession | None:
    """The session a cookie holds, or None when it is forged, malformed or expired."""
    payload, _, signature = value.partition(".")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(signature, expected):
        return None
    try:
        data = json.loads(_unb64(payload))
        session = ConsoleSession(str(data["x"]), data["t"], int(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires > time.time() else None


def read_session(request: Request) -> ConsoleSession | None:
    """This request's session (read once per request)."""
    if "console_session" not in request.scope:
        value = request.cookies.get(COOKIE)
        request.scope["console_session"] = decode_session(_key(request), value) if value else None
    session: ConsoleSession | None = request.scope["console_session"]
    return session


def write_session(request: Request, response: Response, session: ConsoleSession) -> None:
    """Set `session` as the cookie on `response` (and as this request's session, for the page rendered)."""
    request.scope["console_session"] = session
    response.set_cookie(
        COOKIE,
        encode_session(_key(request), session),
        max_age=max(0, session.expires - int(time.time())),
        path="/console",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


async def check_csrf(request: Request) -> None:
    """403 for a request that changes something without its session's CSRF token."""
    if request.method in SAFE_METHODS:
        return
    session = read_session(request)
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if session is None or not sent or not hmac.compare_digest(sent, session.csrf):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")


async def signed_in(request: Request, db: DatabaseDep) -> Principal:
    """The signed-in account (the API's Principal), or 401 (which sends a browser to the sign-in page)."""
    session = read_session(request)
    if session is None or session.token_hash is None:
        raise unauthorized("sign in to the console")
    async with db.sessions() as db_session:
        principal = await principal_of(db_session, session.token_hash)
    return admit(principal, *CONSOLE_ROLES)


async def console_user(principal: Annotated[Principal, Depends(signed_in)]) -> Principal:
    """The signed-in account, if it may open the console's staff pages (a technician may not: 403)."""
    return admit(principal, *PAGE_ROLES)


def console_require(*roles: OperatorRole) -> Callable[..., Awaitable[Principal]]:
    """A page dependency admitting signed-in operators of `roles` (an admin always); others get 403."""

    async def dependency(principal: Annotated[Principal, Depends(signed_in)]) -> Principal:
        return admit(principal, *roles)

    return dependency


ConsoleUser = Annotated[Principal, Depends(console_user)]
"""A page's parameter: the signed-in account, whose `check_city` / `visible_cities` scope the page."""
