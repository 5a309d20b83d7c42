"""Helpers shared by the commission tests: swaps completed and refunded through the real activities on
the demo network's partners (swapflow.demo.partners), settlement runs written as a run writes them, and
what the ledger owes the partners."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from swapflow.db.commissions import CommissionAccrual, CommissionClawback
from swapflow.db.commissions import SettlementRun as SettlementRunRow
from swapflow.db.money import LedgerPosting
from swapflow.db.swaps import SwapOrder
from swapflow.domain.clock import utcnow
from swapflow.domain.swaps import SwapStatus
from swapflow.payments.ledger import partner_payable
from swapflow.payments.refunds import RefundOrigin
from swapflow.protocol.v1 import BatteryReading
from swapflow.services.refunds import open_order_refund
from swapflow.workflows.refund_contract import RefundRef
from swapflow.workflows.settlement_contract import RunStatus
from swapflow.workflows.swap_contract import ReturnCheck, SwapFinish
from tests.money_harness import CABINET, Money
from tests.swap_harness import battery_of

RIDER = "rider-sh-0001"  # brought by sub-agent agent-sh-1, whose parent is agent-sh
UNATTRIBUTED_RIDER = "rider-sh-0003"
HOST, FRANCHISEE, AGENT, PARENT = "host-st-sh-001", "franchisee-sh", "agent-sh-1", "agent-sh"


class Swaps(Money):
    """Swaps at CABINET through the real activities, completed or refunded as a worker would."""

    async def completed(self, rider_id: str = RIDER) -> str:
        order_id = await self.charged(rider_id)
        async with self.db.sessions() as session:
            order = await session.get(SwapOrder, order_id)
        held = await battery_of(self.db, rider_id)
        assert order is not None and order.return_slot_no is not None and held is not None
        reading = BatteryReading(
            serial=held.serial, soc=15.0, soh=90.0, voltage_v=56.0, temperature_c=25.0, cycle_count=100
        )
        await self.records.accept_return(
            ReturnCheck(
                order_id=order_id,
                rider_id=rider_id,
                cabinet_id=CABINET,
                slot_no=order.return_slot_no,
                expected_serial=held.serial,
                reading=reading,
            )
        )
        await self.finish(order_id, SwapStatus.COMPLETED)
        return order_id

    async def finish(self, order_id: str, status: SwapStatus) -> None:
        await self.records.finish(SwapFinish(order_id=order_id, status=status, reason="test"))

    async def operator_refund(self, order_id: str, key: str = "first", amount_minor: int | None = None) -> str:
        """An operator's refund of the swap, opened and accepted by the provider as its workflow does it."""
        refund, _ = await open_order_refund(
            self.db,
            refund_id=f"op-{key}-{order_id[:8]}",
            order_id=order_id,
            amount_minor=amount_minor,
            reason="test refund",
            origin=RefundOrigin.OPERATOR,
        )
        await self.refunds.submit(RefundRef(refund_id=refund.id))
        return refund.id

    async def accruals(self, order_id: str) -> list[CommissionAccrual]:
        async with self.db.sessions() as session:
            rows = await session.scalars(
                select(CommissionAccrual).where(CommissionAccrual.order_id == order_id).order_by(CommissionAccrual.id)
            )
            return list(rows)

    async def accrued(self, order_id: str) -> dict[tuple[str, str, int | None], int]:
        return {(row.partner_id, row.kind, row.level): row.amount_minor for row in await self.accruals(order_id)}

    async def balance(self, account: str) -> int:
        async with self.db.sessions() as session:
            total = await session.scalar(
                select(func.sum(LedgerPosting.amount_minor)).where(LedgerPosting.account == account)
            )
        return int(total or 0)

    async def clawbacks(self) -> list[CommissionClawback]:
        async with self.db.sessions() as session:
            return list(await session.scalars(select(CommissionClawback).order_by(CommissionClawback.id)))

    async def freeze(self, partner_id: str, label: str = "test") -> str:
        """A settlement run of the partner over the last hour freezes its accruals not yet reversed or in
        a run, as a run's first step does; the run awaits approval. Returns its id."""
        run_id = f"{partner_id}-{label}"
        async with self.db.transaction() as session:
            session.add(
                SettlementRunRow(
                    id=run_id,
                    partner_id=partner_id,
                    city_code="SH",
                    period_label=label,
                    period_start=utcnow() - timedelta(hours=1),
                    period_end=utcnow() + timedelta(seconds=1),
                    currency="CNY",
                    status=RunStatus.AWAITING_APPROVAL,
                    workflow_id=f"settlement/{partner_id}/{label}",
                    prepared_by="schedule",
                )
            )
            await session.flush()
            await session.execute(
                update(CommissionAccrual)
                .where(
                    CommissionAccrual.partner_id == partner_id,
                    CommissionAccrual.run_id.is_(None),
                    CommissionAccrual.reversed_by_refund_id.is_(None),
                )
                .values(run_id=run_id)
            )
        return run_id

    async def payables(self, *partners: str) -> dict[str, int]:
        """What the ledger says is owed to each partner (a payable is a credit)."""
        return {partner: -await self.balance(partner_payable(partner)) for partner in partners}
