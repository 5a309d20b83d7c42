"""The whole schema: every area's tables on the one metadata. The Alembic migrations beside it own the
schema (on SQLite and PostgreSQL alike) and are generated from and checked against this."""

from __future__ import annotations

from sqlalchemy import MetaData

from swapflow.db import (
    audit,
    commissions,
    devices,
    identity,
    money,
    network,
    ops,
    pricing,
    reservations,
    rider_auth,
    swaps,
)
from swapflow.db.base import Base

AREAS = (network, swaps, money, pricing, devices, identity, ops, commissions, audit, rider_auth, reservations)
"""Each module of tables; importing them all is what puts every table on the metadata."""

metadata: MetaData = Base.metadata
