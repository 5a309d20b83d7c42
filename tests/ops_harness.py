"""Helpers shared by the ops tests: accounts with tokens, and an API client that sends one."""

from __future__ import annotations

from collections.abc import Sequence

from swapflow.db.engine import Database
from swapflow.domain.ops import OperatorRole
from swapflow.ops.accounts import OPERATOR, RIDER, create_operator, issue_token


async def rider_token(db: Database, rider_id: str) -> str:
    """A bearer token for a rider."""
    async with db.transaction() as session:
        return await issue_token(session, RIDER, rider_id, "test")


async def operator_token(
    db: Database,
    operator_id: str,
    role: OperatorRole,
    cities: Sequence[str] = (),
    *,
    location: tuple[float, float] | None = None,
    shift: tuple[int, int] = (0, 24 * 60),
) -> str:
    """An operator account (created or updated) and a bearer token for it."""
    async with db.transaction() as session:
        return await session.run_sync(
            lambda s: create_operator(s, operator_id, operator_id, role, list(cities), location=location, shift=shift)
        )


async def another_token(db: Database, operator_id: str) -> str:
    """One more bearer token for an existing operator account."""
    async with db.transaction() as session:
        return await issue_token(session, OPERATOR, operator_id, "test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def admin_headers(db: Database) -> dict[str, str]:
    """Headers of an admin account, for tests about what an endpoint does rather than who may call it."""
    return bearer(await operator_token(db, "test-admin", OperatorRole.ADMIN))
