"""Operator and rider accounts and their bearer tokens. A token is shown once, when issued; only its
SHA-256 is stored."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from swapflow.db.identity import ApiToken, Operator
from swapflow.db.ops import Technician
from swapflow.domain.ops import OperatorRole

TOKEN_PREFIX = "sf_"
RIDER = "rider"
OPERATOR = "operator"
PARTNER = "partner"


def new_token() -> str:
    """A fresh random bearer token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token_row(kind: str, principal_id: str, label: str) -> tuple[str, ApiToken]:
    """A new token, and the row keeping its hash for the caller to add."""
    token = new_token()
    return token, ApiToken(token_hash=hash_token(token), principal_kind=kind, principal_id=principal_id, label=label)


async def issue_token(session: AsyncSession, kind: str, principal_id: str, label: str = "") -> str:
    """A new token for a rider or an operator; returns it (the only time it is seen)."""
    token, row = new_token_row(kind, principal_id, label)
    session.add(row)
    return token


def create_operator(
    session: Session,
    operator_id: str,
    name: str,
    role: OperatorRole,
    cities: Sequence[str],
    *,
    location: tuple[float, float] | None = None,
    shift: tuple[int, int] = (0, 24 * 60),
) -> str:
    """Create (or update) an operator account and return a new token for it. A technician needs a
    `location` in its (single) city and a shift in minutes after local midnight."""
    operator = session.get(Operator, operator_id)
    if operator is None:
        operator = Operator(id=operator_id)
        session.add(operator)
    operator.name, operator.role, operator.cities, operator.active = name, role, list(cities), True
    if role == OperatorRole.TECHNICIAN:
        if location is None or len(cities) != 1:
            raise ValueError("a technician needs one city and a location")
        profile = session.get(Technician, operator_id) or Technician(operator_id=operator_id)
        profile.city_code, (profile.lat, profile.lon) = cities[0], location
        profile.shift_start_minute, profile.shift_end_minute = shift
        session.add(profile)
    session.flush()
    token, row = new_token_row(OPERATOR, operator_id, "cli")
    session.add(row)
    return token
