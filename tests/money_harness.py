"""Helpers shared by the money tests: swaps admitted and charged through the real activities (no
cabinet needed), riders put on a payment method, and the rows money leaves behind."""

from __future__ import annotations

from sqlalchemy import func, select

from swapflow.activities.payments import PaymentActivities
from swapflow.activities.refund import RefundActivities
from swapflow.activities.swap import SwapRecords
from swapflow.db.engine import Database
from swapflow.db.money import LedgerTransaction, Refund, SubscriptionPlan, Wallet
from swapflow.domain.swaps import SwapStatus
from swapflow.payments.methods import add_method, lock_rider
from swapflow.payments.provider import PaymentMethod
from swapflow.payments.registry import providers_from_settings
from swapflow.payments.sandbox import SandboxProvider
from swapflow.payments.subscription import subscribe
from swapflow.payments.topups import grant_goodwill
from swapflow.settings import Settings
from swapflow.workflows.swap_contract import ChargeInput, SwapFinish, SwapRequest
from tests.swap_harness import new_order, set_online

CABINET = "cab-sh-001-1"
RIDER, OTHER_RIDER, THIRD_RIDER = "rider-sh-0001", "rider-sh-0002", "rider-sh-0003"
PRICE = 600  # of a swap in Shanghai, CNY minor units


async def pays_by(db: Database, rider_id: str, method: PaymentMethod, payer: str | None = None) -> None:
    """`rider_id`'s default payment method from now on (a Stripe payer: `pm_…` or `cus_…/pm_…`)."""
    provider_ref = None
    if method == PaymentMethod.STRIPE and payer:
        customer, _, provider_ref = payer.rpartition("/")
        payer = customer or None
    async with db.transaction() as session:
        await lock_rider(session, rider_id)
        await add_method(
            session,
            rider_id=rider_id,
            method=method,
            label=str(method),
            payer=payer,
            provider_ref=provider_ref,
            default=True,
        )


class Money:
    """Swaps at CABINET driven through the real activities, and the providers they pay with."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.providers = providers_from_settings(settings, db)
        sandbox = self.providers[PaymentMethod.SANDBOX]
        assert isinstance(sandbox, SandboxProvider)
        self.sandbox = sandbox
        self.records = SwapRecords(db, settings)
        self.payments = PaymentActivities(db, self.providers, settings)
        self.refunds = RefundActivities(db, self.providers)

    async def ready(self) -> Money:
        await set_online(self.db, CABINET, True)  # seeded offline; admission refuses offline cabinets
        return self

    async def pays_by(self, rider_id: str, method: PaymentMethod, payer: str | None = None) -> None:
        """`rider_id`'s default payment method from now on."""
        await pays_by(self.db, rider_id, method, payer)

    async def wallet_rider(self, balance: int, rider_id: str = RIDER, key: str = "first") -> None:
        """`rider_id` pays by wallet, credited with `balance` (CNY minor units) by finance."""
        await self.pays_by(rider_id, PaymentMethod.WALLET)
        async with self.db.transaction() as session:
            await grant_goodwill(
                session,
                rider_id=rider_id,
                idempotency_key=key,
                amount_minor=balance,
                currency="CNY",
                reason="test balance",
                approved_by="finance-test",
            )

    async def subscription_rider(self, swaps: int, rider_id: str = RIDER) -> None:
        """`rider_id` pays by a subscription of `swaps` swaps a period (400 minor units each)."""
        await self.pays_by(rider_id, PaymentMethod.SUBSCRIPTION)
        async with self.db.transaction() as session:
            plan = SubscriptionPlan(
                id="plan-test",
                name="test",
                swaps_per_period=swaps,
                period_days=30,
                price_minor=swaps * 400,
                currency="CNY",
            )
            session.add(plan)
            await session.flush()
            await subscribe(session, rider_id=rider_id, plan=plan)

    async def wallet_balance(self, rider_id: str = RIDER) -> int:
        async with self.db.sessions() as session:
            wallet = await session.get(Wallet, rider_id)
        assert wallet is not None
        return wallet.balance_minor

    async def admitted(self, rider_id: str = RIDER) -> tuple[str, int, str]:
        """A new swap with its packs and slots reserved: (order id, price, currency)."""
        order_id = await new_order(self.db, rider_id, CABINET)
        admission = await self.records.admit(SwapRequest(order_id=order_id, rider_id=rider_id, cabinet_id=CABINET))
        return order_id, admission.price_minor, admission.currency

    async def charged(self, rider_id: str = RIDER) -> str:
        """A new swap, admitted and charged."""
        order_id, price, currency = await self.admitted(rider_id)
        await self.payments.charge(ChargeInput(order_id=order_id, amount_minor=price, currency=currency))
        return order_id

    async def failed_after_charge(self, rider_id: str = RIDER) -> str:
        """A swap that took money and then failed (its refund not yet started)."""
        order_id = await self.charged(rider_id)
        await self.records.finish(SwapFinish(order_id=order_id, status=SwapStatus.FAILED, reason="test failure"))
        return order_id

    async def refund(self, refund_id: str) -> Refund:
        async with self.db.sessions() as session:
            row = await session.get(Refund, refund_id)
        assert row is not None
        return row

    async def ledger_kinds(self, order_id: str) -> list[str]:
        async with self.db.sessions() as session:
            return list(
                (
                    await session.scalars(
                        select(LedgerTransaction.kind)
                        .where(LedgerTransaction.order_id == order_id)
                        .order_by(LedgerTransaction.id)
                    )
                ).all()
            )

    async def count(self, model: type, *where: object) -> int:
        async with self.db.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)
