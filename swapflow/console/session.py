"""Signing in to the console: an account's API token becomes a signed session cookie.

The cookie (HttpOnly, SameSite=Lax, Secure over https) carries the token's hash, a CSRF token and an
expiry, signed with HMAC-SHA256 under `console.session_secret` (or a key kept in the data folder). Each
request names its caller through `swapflow.api.auth.principal_of`, as the API does for a bearer token,
so a revoked token or a deactivated account ends its console sessions too, and role and city scoping
are the API's. Every request that changes something carries the session's CSRF token (a form's
hidden `csrf_token`, or htmx's `X-CSRF-Token` header) or is refused with 403. The rider's phone page
(`swapflow.rider_app`) keeps its session the same way, in a `SessionCookie` of its own.
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
from swapflow.db.engine import Database
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
class SignedSession:
    """What the cookie says: the CSRF token, the signed-in token's hash (None: not signed in), expiry."""

    csrf: str
    token_hash: str | None
    expires: int

    @classmethod
    def new(cls, token_hash: str | None, lifetime_s: float) -> SignedSession:
        return cls(secrets.token_urlsafe(24), token_hash, int(time.time() + lifetime_s))


def session_key(settings: Settings) -> bytes:
    """The key signing session cookies."""
    if settings.console.session_secret:
        return hashlib.sha256(settings.console.session_secret.encode()).digest()
    return kept_secret(settings, SECRET_FILE)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode_session(key: bytes, session: SignedSession) -> str:
    payload = _b64(json.dumps({"x": session.csrf, "t": session.token_hash, "e": session.expires}).encode())
    return f"{payload}.{_b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())}"


def decode_session(key: bytes, value: str) -> SignedSession | None:
    """The session a cookie holds, or None when it is forged, malformed or expired."""
    payload, _, signature = value.partition(".")
    expected = _b64(hmac.new(key, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(signature, expected):
        return None
    try:
        data = json.loads(_unb64(payload))
        session = SignedSession(str(data["x"]), data["t"], int(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires > time.time() else None


@dataclass(frozen=True)
class SessionCookie:
    """One site's session cookie: its name, the path it is sent on, and the label its signing key is derived
    under from `session_key` (None: that key itself, the console's), so one site's cookie is worthless to
    another."""

    name: str
    path: str
    key_label: str | None = None

    @property
    def _scope_key(self) -> str:
        return f"session:{self.name}"

    def key(self, request: Request) -> bytes:
        state = request.app.state
        keys: dict[str, bytes] = getattr(state, "session_keys", None) or {}
        state.session_keys = keys
        if self.name not in keys:
            base = session_key(state.settings)
            label = self.key_label
            keys[self.name] = base if label is None else hmac.new(base, label.encode(), hashlib.sha256).digest()
        return keys[self.name]

    def read(self, request: Request) -> SignedSession | None:
        """This request's session (read once per request)."""
        if self._scope_key not in request.scope:
            value = request.cookies.get(self.name)
            request.scope[self._scope_key] = decode_session(self.key(request), value) if value else None
        session: SignedSession | None = request.scope[self._scope_key]
        return session

    def adopt(self, request: Request, session: SignedSession) -> None:
        """Make `session` this request's, for the page rendered (its CSRF token in the forms)."""
        request.scope[self._scope_key] = session

    def write(self, request: Request, response: Response, session: SignedSession) -> None:
        """Set `session` as the cookie on `response` (and as this request's session)."""
        self.adopt(request, session)
        response.set_cookie(
            self.name,
            encode_session(self.key(request), session),
            max_age=max(0, session.expires - int(time.time())),
            path=self.path,
            httponly=True,
            samesite="lax",
            secure=request.url.scheme == "https",
        )


CONSOLE_COOKIE = SessionCookie(COOKIE, "/console")


def read_session(request: Request) -> SignedSession | None:
    """This request's console session."""
    return CONSOLE_COOKIE.read(request)


def write_session(request: Request, response: Response, session: SignedSession) -> None:
    """Set `session` as the console's cookie on `response`."""
    CONSOLE_COOKIE.write(request, response, session)


def csrf_check(cookie: SessionCookie) -> Callable[[Request], Awaitable[None]]:
    """A dependency refusing (403) a request that changes something without its `cookie` session's CSRF token."""

    async def check(request: Request) -> None:
        if request.method in SAFE_METHODS:
            return
        session = cookie.read(request)
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            value = (await request.form()).get(CSRF_FIELD)
            sent = value if isinstance(value, str) else None
        if session is None or not sent or not hmac.compare_digest(sent, session.csrf):
            raise Forbidden("missing or wrong CSRF token: reload the page and try again")

    return check


check_csrf = csrf_check(CONSOLE_COOKIE)


async def session_principal(request: Request, db: Database, cookie: SessionCookie, sign_in_to: str) -> Principal:
    """The account the `cookie` session is signed in as (the API's Principal), or 401 (which sends a
    browser to the sign-in page of `sign_in_to`)."""
    session = cookie.read(request)
    if session is None or session.token_hash is None:
        raise unauthorized(f"sign in to {sign_in_to}")
    async with db.sessions() as db_session:
        return await principal_of(db_session, session.token_hash)


async def signed_in(request: Request, db: DatabaseDep) -> Principal:
    """The signed-in account, if it may use the console, or 401 (which sends a browser to the sign-in page)."""
    return admit(await session_principal(request, db, CONSOLE_COOKIE, "the console"), *CONSOLE_ROLES)


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
