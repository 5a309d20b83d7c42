"""Riders on their own: signing up and in with a one-time code sent to their phone or with WeChat
mini-program login, their access and refresh tokens, and signing out.

A phone or openid seen for the first time signs the rider up (a `riders` row in the city they name, an
empty wallet in its currency, and the channel agent of their referral code, if any); after that it signs
them in. Either answers a `TokenPair`: a short-lived access token (an `api_tokens` row that expires) and a
refresh token that rotates: each refresh uses it up and issues the next pair in the same family, and a used
one presented again revokes the family (someone holds a copy). Codes and tokens are kept only hashed.

Callers pass the `Database` (each function opens its own transactions: a wrong code must be counted even
though the sign-in fails), the `Settings` and plain arguments."""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.commissions import PartnerAttribution
from swapflow.db.engine import Database
from swapflow.db.identity import ApiToken
from swapflow.db.money import Wallet
from swapflow.db.network import City, Rider
from swapflow.db.rider_auth import RefreshToken, SignInCode
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.errors import Conflict, Invalid, NotFound, RateLimited, Refused, Unauthenticated, Unavailable
from swapflow.domain.swaps import RiderStatus
from swapflow.identity.sms import LogSmsSender, SmsSender
from swapflow.identity.wechat_login import (
    BUSY,
    CODE_INVALID,
    WeChatLoginRefused,
    WeChatUnreachable,
    code_to_session,
)
from swapflow.ops.accounts import RIDER, hash_token, new_token_row
from swapflow.services.partners import attribute_by_referral
from swapflow.settings import RiderAuthSettings, Settings

log = logging.getLogger(__name__)

PHONE_PATTERN = r"^\+[1-9][0-9]{6,14}$"
"""E.164: a plus, a country code and the number, 7 to 15 digits in all."""
CODE_PATTERN = r"^[0-9]{4,10}$"
REFRESH_PREFIX = "sfr_"
_INVALID_TOKEN = 'Bearer error="invalid_token"'
_PHONE_PUNCTUATION = re.compile(r"[\s().-]")


@dataclass(frozen=True)
class TokenPair:
    """What a sign-in or a refresh answers; the tokens are seen only here (the database keeps hashes)."""

    access_token: str
    refresh_token: str
    expires_in: int
    """Seconds the access token lasts."""
    rider_id: str
    new_rider: bool
    """The sign-in signed the rider up."""
    token_type: str = "bearer"


@dataclass(frozen=True)
class CodeSent:
    phone: str
    expires_in: int
    """Seconds the code is good for."""
    retry_after: int
    """Seconds before another code may be sent to this phone."""


@dataclass(frozen=True)
class RiderProfile:
    rider: Rider
    agent_id: str | None
    """The channel agent the rider is attributed to, if any."""


def e164(raw: str) -> str:
    """`raw` as an E.164 number (spaces, dots, dashes and parentheses dropped), or Invalid."""
    phone = _PHONE_PUNCTUATION.sub("", raw)
    if not re.fullmatch(PHONE_PATTERN, phone):
        raise Invalid(f"{raw!r} is not a phone number in E.164 form, such as +8613800138000")
    return phone


def dev_inbox_enabled(settings: Settings) -> bool:
    """Whether the development SMS sender keeps its messages for GET /v1/dev/sms-inbox: as set, else on
    for the embedded stack only (no database configured)."""
    configured = settings.rider_auth.dev_inbox
    return configured if configured is not None else settings.database_url is None


def default_sms_sender(settings: Settings, db: Database) -> SmsSender:
    """The development sender: the log, and the dev inbox when it is on."""
    return LogSmsSender(db if dev_inbox_enabled(settings) else None)


# ------------------------------------------------------------------------------------------- codes


async def request_code(
    db: Database, settings: Settings, phone: str, client_address: str, sender: SmsSender | None = None
) -> CodeSent:
    """Send a new sign-in code to `phone` (which makes its earlier codes useless). RateLimited when the phone
    had one within `code_interval_s`, or the phone or `client_address` has had their fill within
    `code_window_s`; Unavailable when the sender fails."""
    phone, config, now = e164(phone), settings.rider_auth, utcnow()
    code = "".join(secrets.choice("0123456789") for _ in range(config.code_length))
    async with db.transaction() as session:
        await _one_request_at_a_time(session, phone, client_address)
        await _check_rate(session, config, phone, client_address, now)
        salt = secrets.token_hex(16)
        session.add(
            SignInCode(
                phone=phone,
                salt=salt,
                code_hash=_code_hash(salt, phone, code),
                client_address=client_address[:64],
                created_at=now,
                expires_at=now + timedelta(seconds=config.code_ttl_s),
                attempts=0,
            )
        )
    message = f"{code} is your swapflow sign-in code. It expires in {_spoken(config.code_ttl_s)}."
    try:
        await (sender or default_sms_sender(settings, db)).send(phone, message)
    except Exception:
        log.exception("the sign-in code for %s could not be sent", phone)
        raise Unavailable("SMS unavailable", "the code could not be sent; ask for another later") from None
    return CodeSent(phone, math.ceil(config.code_ttl_s), math.ceil(config.code_interval_s))


async def sign_in_with_code(
    db: Database,
    settings: Settings,
    phone: str,
    code: str,
    *,
    name: str | None = None,
    city_code: str | None = None,
    referral_code: str | None = None,
    access_ttl_s: float | None = None,
) -> TokenPair:
    """Sign in with the latest code sent to `phone`; a phone seen for the first time signs up (it needs
    `city_code`; `referral_code` attributes the new rider to a channel agent). Unauthenticated for a wrong,
    expired, used or exhausted code (a wrong one counts against the code's attempts); Refused, with the code
    still good, for a sign-up without a city or with a city or referral code that does not hold.
    `access_ttl_s` (default `rider_auth.access_ttl_s`): the phone page's session lasts as long as its token."""
    phone, now = e164(phone), utcnow()
    config = settings.rider_auth
    if access_ttl_s is not None:
        config = config.model_copy(update={"access_ttl_s": access_ttl_s})
    async with db.transaction() as session:
        outcome = await _sign_in_by_code(session, config, phone, code, now, name, city_code, referral_code)
    if isinstance(outcome, Unauthenticated):
        raise outcome  # after the commit: a wrong code's attempt stays counted
    return outcome


async def _sign_in_by_code(
    session: AsyncSession,
    config: RiderAuthSettings,
    phone: str,
    code: str,
    now: datetime,
    name: str | None,
    city_code: str | None,
    referral_code: str | None,
) -> TokenPair | Unauthenticated:
    row = await session.scalar(
        select(SignInCode)
        .where(SignInCode.phone == phone)
        .order_by(SignInCode.created_at.desc(), SignInCode.id.desc())
        .limit(1)
        .with_for_update()
    )
    if row is None:
        return Unauthenticated("no code was sent to this phone; ask for one", reason="code_invalid")
    failure = _code_failure(row, config, phone, code, now)
    if failure is not None:
        return failure
    rider = await session.scalar(select(Rider).where(Rider.phone == phone))
    new_rider = rider is None
    if rider is None:
        rider = await _sign_up(session, name or f"Rider {phone[-4:]}", city_code, referral_code, now, phone=phone)
    _check_active(rider)
    row.used_at = now
    return await _issue_pair(session, config, rider.id, new_rider, now, label="phone sign-in")


def _code_failure(
    row: SignInCode, config: RiderAuthSettings, phone: str, code: str, now: datetime
) -> Unauthenticated | None:
    """Why `code` does not sign in with `row` (the phone's latest code), counting a wrong one; None if it does."""
    if row.used_at is not None:
        return Unauthenticated("this code was used already; ask for another", reason="code_used")
    if as_utc(row.expires_at) <= now:
        return Unauthenticated("this code has expired; ask for another", reason="code_expired")
    if row.attempts >= config.code_attempts:
        return Unauthenticated("too many wrong tries of this code; ask for another", reason="code_attempts_exhausted")
    if not hmac.compare_digest(row.code_hash, _code_hash(row.salt, phone, code)):
        row.attempts += 1
        return Unauthenticated(
            "wrong code", reason="code_invalid", attempts_left=max(config.code_attempts - row.attempts, 0)
        )
    return None


def _code_hash(salt: str, phone: str, code: str) -> str:
    return hashlib.sha256(f"{salt}:{phone}:{code}".encode()).hexdigest()


async def _one_request_at_a_time(session: AsyncSession, phone: str, client_address: str) -> None:
    """On PostgreSQL, hold this phone's and this address's locks to the commit, so concurrent requests are
    counted one after the other (a SQLite writer is alone already). Phone before address, each in its own
    key space: two requests never wait for each other in a circle."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for space, key in ((1, phone), (2, client_address)):
        await session.execute(
            text("SELECT pg_advisory_xact_lock(:space, hashtext(:key))"), {"space": space, "key": key}
        )


async def _check_rate(
    session: AsyncSession, config: RiderAuthSettings, phone: str, client_address: str, now: datetime
) -> None:
    """RateLimited, saying when the next request would be taken, unless one more code may be sent."""
    since = now - timedelta(seconds=config.code_window_s)
    by_phone = await _recent(session, SignInCode.phone == phone, since)
    by_address = await _recent(session, SignInCode.client_address == client_address[:64], since)
    waits: list[float] = []
    if by_phone and config.code_interval_s > 0:
        waits.append((by_phone[-1] + timedelta(seconds=config.code_interval_s) - now).total_seconds())
    for sent, limit in ((by_phone, config.codes_per_phone), (by_address, config.codes_per_address)):
        if len(sent) >= limit:  # the one that must leave the window for the count to drop below the limit
            waits.append((sent[len(sent) - limit] + timedelta(seconds=config.code_window_s) - now).total_seconds())
    wait = max(waits, default=0.0)
    if wait > 0:
        raise RateLimited(f"too many codes asked for; try again in {math.ceil(wait)} s", retry_after_s=math.ceil(wait))


async def _recent(session: AsyncSession, where: ColumnElement[bool], since: datetime) -> list[datetime]:
    """When the codes matching `where` were sent since `since`, oldest first."""
    rows = await session.scalars(
        select(SignInCode.created_at).where(where, SignInCode.created_at > since).order_by(SignInCode.created_at)
    )
    return [as_utc(at) for at in rows]


def _spoken(seconds: float) -> str:
    return f"{round(seconds / 60)} minutes" if seconds >= 120 else f"{math.ceil(seconds)} seconds"


# ------------------------------------------------------------------------------------------ WeChat


async def sign_in_with_wechat(
    db: Database,
    settings: Settings,
    code: str,
    *,
    name: str | None = None,
    city_code: str | None = None,
    referral_code: str | None = None,
) -> TokenPair:
    """Sign in with a mini-program's `wx.login()` code: WeChat's code2session names the user's openid; an
    openid seen for the first time signs up (as `sign_in_with_code`; WeChat's codes are single use, so a
    sign-up refused for its city asks a new one). Unavailable while WeChat sign-in is not configured or
    WeChat cannot answer; Unauthenticated for a code WeChat does not take; Refused for other refusals."""
    config = settings.rider_auth
    appid, secret = settings.wechat.appid, config.wechat_secret
    if not appid or not secret:
        raise Unavailable("WeChat sign-in unavailable", "WeChat sign-in is not configured on this platform")
    try:
        session_ = await code_to_session(config.wechat_api_base, appid, secret, code, timeout_s=config.wechat_timeout_s)
    except WeChatUnreachable as error:
        log.warning("WeChat sign-in: %s", error)
        raise Unavailable("WeChat sign-in unavailable", "WeChat did not answer; try again") from None
    except WeChatLoginRefused as error:
        if error.errcode in CODE_INVALID:
            raise Unauthenticated(
                "WeChat does not take this login code (it is invalid or used); call wx.login() again",
                reason="wechat_code_invalid",
                code=error.errcode,
                message=error.errmsg,
            ) from None
        if error.errcode in BUSY:
            raise Unavailable(
                "WeChat sign-in unavailable", "WeChat is busy; try again", code=error.errcode, message=error.errmsg
            ) from None
        log.warning("WeChat sign-in refused: %s", error)
        raise Refused(
            "WeChat refused the sign-in", f"WeChat errcode {error.errcode}: {error.errmsg}", reason="wechat_refused"
        ) from None
    try:
        return await _wechat_pair(db, config, session_.openid, name, city_code, referral_code)
    except IntegrityError:
        # The same user's other sign-in signed them up meanwhile: now they are found.
        return await _wechat_pair(db, config, session_.openid, name, city_code, referral_code)


async def _wechat_pair(
    db: Database,
    config: RiderAuthSettings,
    openid: str,
    name: str | None,
    city_code: str | None,
    referral_code: str | None,
) -> TokenPair:
    async with db.transaction() as session:
        now = utcnow()
        rider = await session.scalar(select(Rider).where(Rider.wechat_openid == openid))
        new_rider = rider is None
        if rider is None:
            rider = await _sign_up(session, name or "WeChat rider", city_code, referral_code, now, wechat_openid=openid)
        _check_active(rider)
        return await _issue_pair(session, config, rider.id, new_rider, now, label="wechat sign-in")


# ------------------------------------------------------------------------------------ sign-up, tokens


async def _sign_up(
    session: AsyncSession,
    name: str,
    city_code: str | None,
    referral_code: str | None,
    now: datetime,
    *,
    phone: str | None = None,
    wechat_openid: str | None = None,
) -> Rider:
    """A new rider in `city_code`, with an empty wallet in its currency and, by `referral_code`, their
    channel agent. Refused (nothing kept: the caller's transaction rolls back) when the city or the code
    does not hold."""
    if city_code is None:
        raise Refused("City needed", "a new rider names the city they ride in (city_code)", reason="city_required")
    city = await session.get(City, city_code)
    if city is None:
        raise Refused("Unknown city", f"no city {city_code!r}", reason="unknown_city")
    rider = Rider(
        id=f"rider-{city.code.lower()}-{uuid.uuid4().hex[:12]}",
        name=name,
        city_code=city.code,
        status=RiderStatus.ACTIVE,
        phone=phone,
        wechat_openid=wechat_openid,
        created_at=now,
    )
    session.add(rider)
    await session.flush()
    session.add(Wallet(rider_id=rider.id, currency=city.currency, balance_minor=0))
    if referral_code:
        try:
            await attribute_by_referral(session, rider.id, referral_code)
        except NotFound:
            raise Refused(
                "Unknown referral code", f"no agent has referral code {referral_code!r}", reason="unknown_referral_code"
            ) from None
        except Conflict as conflict:
            raise Refused("Referral code not usable", conflict.detail, reason="referral_not_applicable") from None
    return rider


def _check_active(rider: Rider) -> None:
    if rider.status != RiderStatus.ACTIVE:
        raise Unauthenticated("this rider account is not active", reason="rider_not_active")


async def _issue_pair(
    session: AsyncSession,
    config: RiderAuthSettings,
    rider_id: str,
    new_rider: bool,
    now: datetime,
    *,
    label: str,
    family_id: str | None = None,
) -> TokenPair:
    """A new access token and refresh token for the rider, the refresh token in `family_id` (a new family
    if None)."""
    access, row = new_token_row(RIDER, rider_id, label)
    row.created_at, row.expires_at = now, now + timedelta(seconds=config.access_ttl_s)
    session.add(row)
    refresh_token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    session.add(
        RefreshToken(
            token_hash=hash_token(refresh_token),
            family_id=family_id or uuid.uuid4().hex,
            rider_id=rider_id,
            access_token_hash=row.token_hash,
            created_at=now,
            expires_at=now + timedelta(seconds=config.refresh_ttl_s),
        )
    )
    return TokenPair(access, refresh_token, math.ceil(config.access_ttl_s), rider_id, new_rider)


async def refresh(db: Database, settings: Settings, refresh_token: str) -> TokenPair:
    """A new pair for a refresh token, which is used up. Unauthenticated for an unknown, expired or revoked
    one, or a used one, whose whole family (refresh and access tokens) is then revoked."""
    now = utcnow()
    async with db.transaction() as session:
        outcome = await _rotate(session, settings.rider_auth, hash_token(refresh_token.strip()), now)
    if isinstance(outcome, Unauthenticated):
        raise outcome  # after the commit: a reuse's revocation stays
    return outcome


async def _rotate(
    session: AsyncSession, config: RiderAuthSettings, token_hash: str, now: datetime
) -> TokenPair | Unauthenticated:
    row = await session.get(RefreshToken, token_hash, with_for_update=True)
    if row is None or row.revoked_at is not None:
        return Unauthenticated(
            "unknown or revoked refresh token", reason="refresh_token_invalid", challenge=_INVALID_TOKEN
        )
    if row.used_at is not None:
        await _revoke_family(session, row.family_id, now)
        return Unauthenticated(
            "this refresh token was used already: every token of its sign-in is revoked; sign in again",
            reason="refresh_token_reused",
            challenge=_INVALID_TOKEN,
        )
    if as_utc(row.expires_at) <= now:
        return Unauthenticated(
            "this refresh token has expired; sign in again", reason="refresh_token_expired", challenge=_INVALID_TOKEN
        )
    rider = await session.get(Rider, row.rider_id)
    if rider is None or rider.status != RiderStatus.ACTIVE:
        return Unauthenticated("this rider account is not active", reason="rider_not_active", challenge=_INVALID_TOKEN)
    row.used_at = now
    return await _issue_pair(session, config, row.rider_id, False, now, label="refresh", family_id=row.family_id)


async def sign_out(db: Database, access_token: str) -> None:
    """Revoke the access token and, when it came from a sign-in, every token of that sign-in's family."""
    await sign_out_token(db, hash_token(access_token.strip()))


async def sign_out_token(db: Database, token_hash: str) -> None:
    """`sign_out` for a token known by its hash (the phone page's session keeps only that)."""
    now = utcnow()
    async with db.transaction() as session:
        await session.execute(
            update(ApiToken)
            .where(ApiToken.token_hash == token_hash, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        families = await session.scalars(
            select(RefreshToken.family_id).where(RefreshToken.access_token_hash == token_hash).distinct()
        )
        for family_id in list(families):
            await _revoke_family(session, family_id, now)


async def _revoke_family(session: AsyncSession, family_id: str, now: datetime) -> None:
    """Revoke every refresh token of the family and every access token issued with one."""
    await session.execute(
        update(ApiToken)
        .where(
            ApiToken.token_hash.in_(select(RefreshToken.access_token_hash).where(RefreshToken.family_id == family_id)),
            ApiToken.revoked_at.is_(None),
        )
        .values(revoked_at=now)
    )
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


# ----------------------------------------------------------------------------------------- profile


async def profile(session: AsyncSession, rider_id: str) -> RiderProfile:
    """The rider and the channel agent they are attributed to (NotFound: no such rider)."""
    rider = await session.get(Rider, rider_id)
    if rider is None:
        raise NotFound("rider", rider_id)
    agent_id = await session.scalar(
        select(PartnerAttribution.partner_id).where(PartnerAttribution.rider_id == rider_id)
    )
    return RiderProfile(rider, agent_id)
