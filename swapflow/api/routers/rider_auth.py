"""Riders signing themselves up and in: a code by SMS or WeChat mini-program login for a token pair, the
pair's refresh, signing out, the rider's own profile, and the development SMS inbox. The sign-in
endpoints take no token; what they answer is one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials

from swapflow.api.auth import Principal, bearer_scheme, require
from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep
from swapflow.api.problems import problem_responses
from swapflow.api.rider_auth_schemas import (
    CodeRequest,
    CodeSentView,
    Phone,
    PhoneSignIn,
    ProfileView,
    RefreshRequest,
    SmsView,
    TokenView,
    WeChatSignIn,
)
from swapflow.domain.errors import Forbidden, NotFound
from swapflow.identity.sms import SmsSender, inbox_messages
from swapflow.services import rider_accounts

router = APIRouter(prefix="/v1", tags=["rider sign-in"])

_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {
        "description": "Unauthorized: the code or token does not hold (`reason` says why)",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    }
}
_TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: {
        "description": "Too many codes asked for: the phone's or the address's; try again after Retry-After",
        "headers": {"Retry-After": {"description": "Seconds", "schema": {"type": "integer"}}},
    }
}


def get_sms_sender(settings: SettingsDep, db: DatabaseDep) -> SmsSender:
    """How codes are sent: the development sender (log and dev inbox); a deployment overrides this
    dependency with its SMS provider's sender."""
    return rider_accounts.default_sms_sender(settings, db)


def client_address(request: Request) -> str:
    """The caller's address, which code requests are limited by (behind a proxy: run uvicorn with its
    proxy headers on, or every request is the proxy's)."""
    return request.client.host if request.client else "unknown"


def _tokens(response: Response, pair: rider_accounts.TokenPair) -> TokenView:
    response.headers["Cache-Control"] = "no-store"  # tokens are not for caches (RFC 6749 §5.1)
    return TokenView.of(pair)


@router.post(
    "/auth/phone/codes",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CodeSentView,
    responses={**_TOO_MANY, **problem_responses(503)},
)
async def send_code(
    body: CodeRequest,
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    sender: Annotated[SmsSender, Depends(get_sms_sender)],
) -> CodeSentView:
    """Send a sign-in code to a phone by SMS (only its latest code signs in). Limited per phone (one per
    `SWAPFLOW_RIDER_AUTH_CODE_INTERVAL_S`, `_CODES_PER_PHONE` per `_CODE_WINDOW_S`) and per client address
    (`_CODES_PER_ADDRESS`): beyond that, 429 with Retry-After."""
    sent = await rider_accounts.request_code(db, settings, body.phone, client_address(request), sender)
    return CodeSentView(phone=sent.phone, expires_in=sent.expires_in, retry_after=sent.retry_after)


@router.post("/auth/phone/sign-in", response_model=TokenView, responses=_UNAUTHORIZED)
async def sign_in_with_code(body: PhoneSignIn, response: Response, db: DatabaseDep, settings: SettingsDep) -> TokenView:
    """Sign in with the code sent to the phone; a new phone signs up (with `city_code`, and a referral code
    if the rider has one). A wrong code counts against the code's tries."""
    pair = await rider_accounts.sign_in_with_code(
        db,
        settings,
        body.phone,
        body.code,
        name=body.name,
        city_code=body.city_code,
        referral_code=body.referral_code,
    )
    return _tokens(response, pair)


@router.post("/auth/wechat/sign-in", response_model=TokenView, responses={**_UNAUTHORIZED, **problem_responses(503)})
async def sign_in_with_wechat(
    body: WeChatSignIn, response: Response, db: DatabaseDep, settings: SettingsDep
) -> TokenView:
    """Sign in with a WeChat mini-program's `wx.login()` code (exchanged at WeChat for the user's openid);
    a new WeChat user signs up (with `city_code`, and a referral code if the rider has one)."""
    pair = await rider_accounts.sign_in_with_wechat(
        db, settings, body.code, name=body.name, city_code=body.city_code, referral_code=body.referral_code
    )
    return _tokens(response, pair)


@router.post("/auth/refresh", response_model=TokenView, responses=_UNAUTHORIZED)
async def refresh(body: RefreshRequest, response: Response, db: DatabaseDep, settings: SettingsDep) -> TokenView:
    """A new token pair for a refresh token, which is used up. Presenting a used one again revokes every
    token of its sign-in (someone else holds a copy)."""
    return _tokens(response, await rider_accounts.refresh(db, settings, body.refresh_token))


@router.get("/me", response_model=ProfileView)
async def me(session: SessionDep, principal: Annotated[Principal, Depends(require(riders=True))]) -> ProfileView:
    """The signed-in rider: name, phone, city, whether WeChat signs them in, their channel agent."""
    if not principal.is_rider:
        raise Forbidden("only a rider has a profile here")
    return ProfileView.of(await rider_accounts.profile(session, principal.id))


@router.get("/dev/sms-inbox", response_model=list[SmsView], tags=["dev"], responses=problem_responses(404))
async def sms_inbox(phone: Annotated[Phone, Query()], session: SessionDep, settings: SettingsDep) -> list[SmsView]:
    """Development only: the texts the development SMS sender kept for a phone, newest first (404 unless
    SWAPFLOW_RIDER_AUTH_DEV_INBOX is on, as it is by default on the embedded stack)."""
    if not rider_accounts.dev_inbox_enabled(settings):
        raise NotFound("page", "/v1/dev/sms-inbox", detail="the dev SMS inbox is off (SWAPFLOW_RIDER_AUTH_DEV_INBOX)")
    return [SmsView.model_validate(message) for message in await inbox_messages(session, phone)]


@router.post("/auth/sign-out", status_code=status.HTTP_204_NO_CONTENT)
async def sign_out(
    db: DatabaseDep,
    principal: Annotated[Principal, Depends(require(riders=True))],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """Revoke the access token sent and every token of its sign-in (its refresh tokens included)."""
    if not principal.is_rider:
        raise Forbidden("only a rider signs out here")
    if credentials is not None:  # always, once `require` has admitted the caller
        await rider_accounts.sign_out(db, credentials.credentials)
