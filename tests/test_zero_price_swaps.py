"""A swap priced 0 (a price rule or coupon made it free) is free whatever the rider pays with: no provider
is asked, no payment is recorded, the wallet keeps its balance, the plan keeps its swap, no revenue is
booked; and the invariant checker agrees, whether the swap completes or fails."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from swapflow.db.engine import Database
from swapflow.db.money import LedgerTransaction, Payment, SubscriptionUse, WalletEntry
from swapflow.db.swaps import SwapOrder
from swapflow.domain.swaps import SwapStatus
from swapflow.ops.invariants import check_invariants
from swapflow.payments.provider import PaymentMethod
from swapflow.payments.refunds import charge_key
from swapflow.settings import Settings
from swapflow.workflows.swap_contract import ChargeInput, SwapFinish
from tests.money_harness import RIDER, Money
from tests.payment_fakes import localstripe_url, stripe_settings_values, wechat_fake  # noqa: F401  (fixtures)
from tests.wechat_fake import WeChatPayFake

PAYERS = {PaymentMethod.SANDBOX: None, PaymentMethod.WECHAT: "o-rider-sh-0001", PaymentMethod.STRIPE: "pm_card_visa"}


@pytest.fixture
def settings(settings: Settings, wechat_fake: WeChatPayFake, localstripe_url: str) -> Settings:
    return settings.updated(wechat=wechat_fake.settings_values(), stripe=stripe_settings_values(localstripe_url))


@pytest.fixture
async def money(db: Database, settings: Settings) -> Money:
    return await Money(db, settings).ready()


async def free_swap(money: Money, method: PaymentMethod, status: SwapStatus) -> str:
    """A swap of RIDER paying by `method`, priced 0, charged and finished in `status`."""
    if method == PaymentMethod.WALLET:
        await money.wallet_rider(1000)
    elif method == PaymentMethod.SUBSCRIPTION:
        await money.subscription_rider(swaps=1)
    else:
        await money.pays_by(RIDER, method, PAYERS[method])
    order_id, _, currency = await money.admitted()
    async with money.db.transaction() as session:  # as a price rule that makes it free would have priced it
        await session.execute(update(SwapOrder).where(SwapOrder.id == order_id).values(price_minor=0))
    result = await money.payments.charge(ChargeInput(order_id=order_id, amount_minor=0, currency=currency))
    assert result.amount_minor == 0
    await money.records.finish(SwapFinish(order_id=order_id, status=status, reason="test"))
    return order_id


async def money_violations(money: Money) -> list[str]:
    report = await check_invariants(money.db)
    return [f"{v.rule}: {v.subject} {v.detail}" for v in report.violations if v.rule.startswith("money.")]


METHODS = list(PaymentMethod)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("status", [SwapStatus.COMPLETED, SwapStatus.FAILED])
async def test_a_free_swap_asks_no_provider_and_keeps_the_money_rules(
    money: Money, method: PaymentMethod, status: SwapStatus
) -> None:
    order_id = await free_swap(money, method, status)
    assert await money.providers[method].find_payment(charge_key(order_id)) is None
    assert await money.count(Payment, Payment.order_id == order_id) == 0
    assert await money.count(LedgerTransaction, LedgerTransaction.order_id == order_id) == 0
    assert await money_violations(money) == []


async def test_a_free_swap_leaves_the_wallet_untouched(money: Money) -> None:
    await free_swap(money, PaymentMethod.WALLET, SwapStatus.COMPLETED)
    assert await money.wallet_balance() == 1000
    assert await money.count(WalletEntry, WalletEntry.kind == "charge") == 0


async def test_a_free_swap_does_not_use_the_plans_allowance(money: Money) -> None:
    await free_swap(money, PaymentMethod.SUBSCRIPTION, SwapStatus.COMPLETED)
    assert await money.count(SubscriptionUse) == 0
