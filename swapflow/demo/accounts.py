"""The demo network's accounts: an admin, each city's staff and technicians, a token per rider and per
partner. Their tokens go to `<data_dir>/tokens.json`, where the simulator and the benches read them."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from swapflow.db.commissions import Partner
from swapflow.db.identity import ApiToken
from swapflow.db.network import City, Rider, Station
from swapflow.domain.ops import OperatorRole
from swapflow.ops.accounts import PARTNER, RIDER, create_operator, hash_token, new_token_row

TOKENS_FILE = "tokens.json"


class DemoTokens(BaseModel):
    """The demo accounts' tokens, as `seed_demo_accounts` writes them."""

    operators: dict[str, str] = Field(default_factory=dict)
    riders: dict[str, str] = Field(default_factory=dict)
    partners: dict[str, str] = Field(default_factory=dict)


def tokens_path(data_dir: Path) -> Path:
    return data_dir / TOKENS_FILE


def load_demo_tokens(data_dir: Path) -> DemoTokens:
    """The demo tokens of a stack's data folder (none when it was never seeded)."""
    path = tokens_path(data_dir)
    return DemoTokens.model_validate_json(path.read_text()) if path.exists() else DemoTokens()


def seed_demo_accounts(engine: Engine, data_dir: Path) -> bool:
    """Demo accounts for the seeded network: an admin; per city an operator, a city lead, finance and
    three technicians near the city's stations (a day shift, a night shift, one around the clock); a
    token per rider and per partner. Tokens are written to `<data_dir>/tokens.json`. Does nothing (returns False) when
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
            token, row = new_token_row(RIDER, rider_id, "demo")
            session.add(row)
            tokens.riders[rider_id] = token
        for partner_id in session.scalars(select(Partner.id).order_by(Partner.id)):
            token, row = new_token_row(PARTNER, partner_id, "demo")
            session.add(row)
            tokens.partners[partner_id] = token
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(tokens.model_dump_json(indent=1))
    path.chmod(0o600)
    return True
