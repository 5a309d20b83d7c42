"""A rider's session on the phone page: the console's signed cookie (`swapflow.console.session`) under
another name and path, its key derived for the riders' page, holding the hash of the rider's access
token. Any way of signing in that ends with an access token (the API token today, a phone code's token)
calls `start_session` with its hash. Only riders may sign in; every change carries the CSRF token."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Response

from swapflow.api.auth import Principal
from swapflow.api.deps import DatabaseDep
from swapflow.console.session import SessionCookie, SignedSession, csrf_check, session_principal
from swapflow.domain.errors import Forbidden
from swapflow.settings import Settings

RIDER_COOKIE = SessionCookie("swapflow_rider", "/app", key_label="rider-app")
check_csrf = csrf_check(RIDER_COOKIE)


def start_session(request: Request, response: Response, settings: Settings, token_hash: str) -> None:
    """Sign the browser in as the rider whose access token has `token_hash` (a fresh CSRF token with it:
    one learnt before signing in is of no use after)."""
    RIDER_COOKIE.write(request, response, SignedSession.new(token_hash, settings.rider_app.session_days * 86400))


async def signed_in_rider(request: Request, db: DatabaseDep) -> Principal:
    """The signed-in rider, or 401 (which sends the browser to the sign-in page); 403 for another account."""
    principal = await session_principal(request, db, RIDER_COOKIE, "swapflow")
    if not principal.is_rider:
        raise Forbidden("this page is for riders")
    return principal


RiderUser = Annotated[Principal, Depends(signed_in_rider)]
"""A page's parameter: the signed-in rider (`id` is the rider's id)."""
