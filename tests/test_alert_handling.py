"""A person acknowledges an alert (they are on it) and resolves it by hand: who and when are kept on the
alert and in the audit trail; a resolved alert is not acted on again."""

from __future__ import annotations

import pytest

from swapflow.db.engine import Database
from swapflow.db.ops import Alert
from swapflow.domain.errors import Conflict, NotFound
from swapflow.domain.ops import AlertStatus
from swapflow.services.alerts import acknowledge_alert, resolve_alert
from swapflow.services.audit import audit_trail

CABINET = "cab-sh-001-1"


async def an_alert(db: Database) -> int:
    async with db.transaction() as session:
        alert = Alert(
            kind="cabinet_offline",
            severity="warning",
            dedupe_key=f"cabinet_offline:{CABINET}",
            cabinet_id=CABINET,
            message="offline",
        )
        session.add(alert)
        await session.flush()
        return alert.id


async def test_acknowledging_an_alert_records_who_and_when_and_leaves_it_open(db: Database) -> None:
    alert_id = await an_alert(db)
    async with db.transaction() as session:
        await acknowledge_alert(session, alert_id, actor="ops-sh")
    async with db.sessions() as session:
        alert = await session.get(Alert, alert_id)
        trail = await audit_trail(session, "alert", str(alert_id))

    assert alert is not None and alert.status == AlertStatus.OPEN
    assert alert.acknowledged_by == "ops-sh" and alert.acknowledged_at is not None
    assert [(event.actor, event.action) for event in trail] == [("ops-sh", "acknowledge")]
    assert trail[0].before is not None and trail[0].before["acknowledged_by"] is None


async def test_the_first_acknowledgement_stands(db: Database) -> None:
    alert_id = await an_alert(db)
    async with db.transaction() as session:
        await acknowledge_alert(session, alert_id, actor="ops-sh")
    with pytest.raises(Conflict, match="acknowledged by ops-sh"):
        async with db.transaction() as session:
            await acknowledge_alert(session, alert_id, actor="lead-sh")


async def test_resolving_an_alert_by_hand_records_who_and_why_and_counts_as_its_acknowledgement(db: Database) -> None:
    alert_id = await an_alert(db)
    async with db.transaction() as session:
        await resolve_alert(session, alert_id, actor="lead-sh", note="power restored")
    async with db.sessions() as session:
        alert = await session.get(Alert, alert_id)
        trail = await audit_trail(session, "alert", str(alert_id))

    assert alert is not None and alert.status == AlertStatus.RESOLVED
    assert (alert.resolved_by, alert.acknowledged_by) == ("lead-sh", "lead-sh")
    assert alert.resolved_at is not None and alert.resolved_at == alert.acknowledged_at
    assert [(event.action, event.reason) for event in trail] == [("resolve", "power restored")]


async def test_a_resolved_alert_is_neither_acknowledged_nor_resolved_again(db: Database) -> None:
    alert_id = await an_alert(db)
    async with db.transaction() as session:
        await resolve_alert(session, alert_id, actor="lead-sh")
    with pytest.raises(Conflict, match="resolved by lead-sh"):
        async with db.transaction() as session:
            await acknowledge_alert(session, alert_id, actor="ops-sh")
    with pytest.raises(Conflict, match="resolved by lead-sh"):
        async with db.transaction() as session:
            await resolve_alert(session, alert_id, actor="ops-sh")


async def test_an_unknown_alert_is_not_found(db: Database) -> None:
    with pytest.raises(NotFound):
        async with db.transaction() as session:
            await acknowledge_alert(session, 10_000, actor="ops-sh")
