"""room for HOT updates in the live device tables (issue 5, telemetry at 80,000 cabinets)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 04:10:00

Telemetry rewrites every pack's latest reading, every cabinet's last_seen_at and changed slots every
heartbeat (at 80,000 cabinets and 30 s: ~24,000 pack rows a second). None of the updated columns is
indexed, so PostgreSQL could update each row in place on its page (a heap-only tuple: no index
entries to add, no later index cleanup), but only when the page has room for the new version; with
the default fillfactor of 100 it rarely has, and most updates went to another page and touched every
index of the table. A lower fillfactor keeps that room free; pruning on page access then reclaims the
old versions without waiting for vacuum.

PostgreSQL only (SQLite updates rows in place). It applies to pages filled from now on: a database
that already holds these tables gets the room as rows are rewritten, or at once by a VACUUM FULL
(or pg_repack) in a quiet hour.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Per table, the share of each page filled by inserts. The rest takes new row versions: batteries
# (~165 bytes a row) and slots (~100) are rewritten by every report that concerns them, cabinets only
# their last_seen_at (one row per report).
_FILLFACTOR = {"batteries": 80, "slots": 80, "cabinets": 85}


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, fillfactor in _FILLFACTOR.items():
        op.execute(f"ALTER TABLE {table} SET (fillfactor = {fillfactor})")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _FILLFACTOR:
        op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
