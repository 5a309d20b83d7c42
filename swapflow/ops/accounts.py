"""Operator and rider accounts and their bearer tokens. A token is shown once, when issued; only its
SHA-256 is stored. The demo accounts' tokens go to `<data_dir>/tokens.json` for the simulator."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from swapflow.db.identity import ApiToken, Operator
from swapflow.db.network import City, Rider, Station
from swapflow.db.ops import Technician
from swapflow.domain.ops import OperatorRole

TOKEN_PREFIX = "sf_"
RIDER = "rider"
OPERATOR = "operator"
TOKENS_FILE = "tokens.json"


def new_token() -> str:
    """A fresh random bearer token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def _token_row(kind: str, principal_id: str, label: str) -> tuple[str, ApiToken]:
    token = new_token()
    return token, ApiToken(token_hash=hash_token(token), principal_kind=kind, principal_id=principal_id, label=label)


async def issue_token(session: AsyncSession, kind: str, principal_id: str, label: str = "") -> str:
    """A new token for a rider or an operator; returns it (the only time it is seen)."""
    token, row = _token_row(kind, principal_id, label)
    session.add(row)
    return token


class DemoTokens(BaseModel):
    """The demo accounts' tokens, as `seed_demo_accounts` writes them."""

    operators: dict[str, str] = Field(default_factory=dict)
    riders: dict[str, str] = Field(default_factory=dict)


def tokens_path(data_dir: Path) -> Path:
    return data_dir / TOKENS_FILE


def load_demo_tokens(data_dir: Path) -> DemoTokens:
    """The demo tokens of a stack's data folder (none when it was never seeded)."""
    path = tokens_path(data_dir)
    return DemoTokens.model_validate_json(path.read_text()) if path.exists() else DemoTokens()


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
    token, row = _token_row(OPERATOR, operator_id, "cli")
    session.add(row)
    return token


def seed_demo_accounts(engine: Engine, data_dir: Path) -> bool:
    """Demo accounts for the seeded network: an admin; per city an operator, a city lead, finance and
    three technicians near the city's stations (a day shift, a night shift, one around the clock); a
    token per rider. Tokens are written to `<data_dir>/tokens.json`. Does nothing (returns False) when
    that file's tokens are still valid."""
    path = tokens_path(data_dir)
    with Session(engine) as session, session.begin():
        existing = load_demo_tokens(data_dir)
        sample = next(iter(existing.operators.values()), None)
        if sample is not None and session.get(ApiToken, hash_token(sample)) is not None:
            return False
        tokens = DemoTokens()
        tokens.operators["admin"] = create_operator(session, "admin", "Admin", OperatorRole.ADMIN, [])
        for city in session.scalars(select(City).order_by(City.code)):
            code = city.code.lower()
            for role, prefix in (
                (OperatorRole.OPERATOR, "ops"),
                (OperatorRole.CITY_LEAD, "lead"),
                (OperatorRole.FINANCE, "finance"),
            ):
                operator_id = f"{prefix}-{code}"
                tokens.operators[operator_id] = create_operator(
                    session, operator_id, f"{city.name} {role.value}", role, [city.code]
                )
            stations = session.scalars(select(Station).where(Station.city_code == city.code).order_by(Station.id)).all()
            shifts = ((6 * 60, 18 * 60), (18 * 60, 6 * 60), (0, 24 * 60))
            for n, shift in enumerate(shifts, start=1):
                if not stations:
                    break
                home = stations[(n - 1) * len(stations) // len(shifts)]
                operator_id = f"tech-{code}-{n}"
                tokens.operators[operator_id] = create_operator(
                    session,
                    operator_id,
                    f"{city.name} technician {n}",
                    OperatorRole.TECHNICIAN,
                    [city.code],
                    location=(home.lat, home.lon),
                    shift=shift,
                )
        for rider_id in session.scalars(select(Rider.id).order_by(Rider.id)):
            token, row = _token_row(RIDER, rider_id, "demo")
            session.add(row)
            tokens.riders[rider_id] = token
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(tokens.model_dump_json(indent=1))
    path.chmod(0o600)
    return True
