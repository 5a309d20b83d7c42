"""Who is calling: bearer tokens for riders and operators, roles, and city scopes.

Every non-public endpoint takes one dependency: `Depends(require(...))` names the roles allowed (and
whether riders are), and returns the `Principal`, whose `check_city` / `visible_cities` keep an
operator inside the cities granted. A resource in a city the caller may not see answers 404, as if it
did not exist; a role that may not act answers 403; no, an unknown, a revoked or an expired token
answers 401.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.api.deps import DatabaseDep
from swapflow.api.problems import Problem
from swapflow.db.cities import rider_city
from swapflow.db.commissions import Partner
from swapflow.db.identity import ApiToken, Operator
from swapflow.db.network import Rider
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.errors import Forbidden, NotFound
from swapflow.domain.ops import OperatorRole
from swapflow.domain.swaps import RiderStatus
from swapflow.ops.accounts import OPERATOR, PARTNER, RIDER, hash_token

STAFF = (OperatorRole.OPERATOR, OperatorRole.CITY_LEAD, OperatorRole.ADMIN)
"""Who watches and acts on the network."""

MONEY_STAFF = (*STAFF, OperatorRole.FINANCE)
"""Who may look at a rider's money (wallet, refunds, complaints) and refund a swap."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a rider or a partner (`role` None), or an operator account."""

    kind: str
    id: str
    role: OperatorRole | None
    cities: frozenset[str] | None
    """The cities an operator may see; None: all (an admin). A rider's is their own city, a partner's its own."""

    @property
    def is_rider(self) -> bool:
        return self.kind == RIDER

    @property
    def is_partner(self) -> bool:
        return self.kind == PARTNER

    def sees_city(self, city_code: str) -> bool:
        return self.cities is None or city_code in self.cities

    def check_city(self, city_code: str, what: str = "resource", ident: str = "") -> None:
        """404 when the caller may not see `city_code`: another city's resources do not exist for them."""
        if not self.sees_city(city_code):
            raise NotFound(what, ident)

    def visible_cities(self, asked: str | None = None) -> list[str] | None:
        """The cities a listing covers: `asked` (403 if not granted) or all the caller may see (None: all)."""
        if asked is not None:
            if not self.sees_city(asked):
                raise Forbidden(f"no access to city {asked!r}")
            return [asked]
        return None if self.cities is None else sorted(self.cities)


async def check_rider_access(session: AsyncSession, principal: Principal, rider_id: str, what: str, ident: str) -> None:
    """404 unless the caller may see `rider_id`'s `what`: a rider their own only, an operator the riders
    of their cities."""
    if principal.is_rider:
        if principal.id != rider_id:
            raise NotFound(what, ident)
        return
    if principal.cities is not None:
        principal.check_city(await rider_city(session, rider_id) or "", what, ident)


_INVALID_TOKEN = 'Bearer error="invalid_token"'
"""RFC 6750's challenge for a token that was sent but is not (or no longer) valid."""


def unauthorized(detail: str, challenge: str = "Bearer") -> Problem:
    return Problem(401, "Unauthorized", detail, headers={"WWW-Authenticate": challenge})


bearer_scheme = HTTPBearer(auto_error=False, description="A rider's or an operator account's API token.")
"""Declares the scheme in the OpenAPI document (Swagger's Authorize button); the 401 is ours."""


async def authenticate(
    db: DatabaseDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> Principal:
    """The caller named by `Authorization: Bearer <token>`, or 401."""
    if credentials is None:
        raise unauthorized("send Authorization: Bearer <token>")
    # Its own short session, not the request's: a request that then waits (a swap's first stage) must
    # not hold a pooled connection for it.
    async with db.sessions() as session:
        return await principal_of(session, hash_token(credentials.credentials.strip()))


async def principal_of(session: AsyncSession, token_hash: str) -> Principal:
    """The account a token (by its hash) stands for, or 401: the API's bearer token and the console's
    session both name their caller through this."""
    row = await session.get(ApiToken, token_hash)
    if row is None or row.revoked_at is not None:
        raise unauthorized("unknown or revoked token", _INVALID_TOKEN)
    if row.expires_at is not None and as_utc(row.expires_at) <= utcnow():
        raise unauthorized("expired token; refresh it (POST /v1/auth/refresh) or sign in again", _INVALID_TOKEN)
    if row.principal_kind == RIDER:
        rider = await session.get(Rider, row.principal_id)
        if rider is None or rider.status != RiderStatus.ACTIVE:
            raise unauthorized("rider account not active", _INVALID_TOKEN)
        return Principal(RIDER, rider.id, None, frozenset({rider.city_code}))
    if row.principal_kind == PARTNER:
        partner = await session.get(Partner, row.principal_id)
        if partner is None or not partner.active:
            raise unauthorized("partner account not active", _INVALID_TOKEN)
        return Principal(PARTNER, partner.id, None, frozenset(partner.cities))
    operator = await session.get(Operator, row.principal_id)
    if row.principal_kind != OPERATOR or operator is None or not operator.active:
        raise unauthorized("account not active", _INVALID_TOKEN)
    role = OperatorRole(operator.role)
    return Principal(OPERATOR, operator.id, role, None if role == OperatorRole.ADMIN else frozenset(operator.cities))


def require(*roles: OperatorRole, riders: bool = False, partners: bool = False) -> Callable[..., Awaitable[Principal]]:
    """A dependency admitting operators of `roles` (an admin always) and, with `riders` / `partners`,
    riders / partners (who see only their own)."""

    async def dependency(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        return admit(principal, *roles, riders=riders, partners=partners)

    return dependency


def admit(principal: Principal, *roles: OperatorRole, riders: bool = False, partners: bool = False) -> Principal:
    """`principal` if it is an operator of `roles` (an admin always), or a rider / partner when those
    are admitted; otherwise 403."""
    if principal.is_rider:
        if riders:
            return principal
    elif principal.is_partner:
        if partners:
            return principal
    elif principal.role in (*roles, OperatorRole.ADMIN):
        return principal
    raise Forbidden(f"{principal.role or principal.kind} accounts may not do this")


MoneyStaff = Annotated[Principal, Depends(require(*MONEY_STAFF))]
RiderOrMoneyStaff = Annotated[Principal, Depends(require(*MONEY_STAFF, riders=True))]
Finance = Annotated[Principal, Depends(require(OperatorRole.FINANCE))]
Admin = Annotated[Principal, Depends(require())]
"""Endpoint parameters for the money routers: who may call them."""


async def _rider_only(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    if not principal.is_rider:
        raise Forbidden("only the rider does this, for themselves")
    return principal


RiderOnly = Annotated[Principal, Depends(_rider_only)]
"""A rider acting on their own account (their payment methods, buying a plan); no operator does it for them."""


def check_own(principal: Principal, rider_id: str) -> None:
    """404 unless `rider_id` is the calling rider: another rider does not exist for them."""
    if principal.id != rider_id:
        raise NotFound("rider", rider_id)
