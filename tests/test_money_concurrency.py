"""Concurrent movements of one wallet or one plan, raced through separate sessions (separate connections
on PostgreSQL, where nothing but the database serializes them; SQLite serializes writers itself)."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.exceptions import ApplicationError

from swapflow.db.engine import Database
from swapflow.payments.ledger import provider_clearing
from swapflow.payments.provider import ChargeRequest, PaymentMethod, ProviderDeclined, ProviderPayment, RefundRequest
from swapflow.payments.wallet import credit_wallet
from swapflow.settings import Settings
from swapflow.workflows.swap_contract import ChargeInput, PaymentDeclinedError
from tests.money_harness import PRICE, RIDER, Money

ROUNDS = 10  # the race is lost in most rounds without serialization: ten make a miss very unlikely


@pytest.fixture
async def money(db: Database, settings: Settings) -> Money:
    return await Money(db, settings).ready()


async def charges(money: Money, method: PaymentMethod, *keys: str, amount: int = 600) -> list[ProviderPayment | None]:
    """Charge the rider under each key at the same moment; None for a declined charge."""
    provider = money.providers[method]

    async def charge(key: str) -> ProviderPayment | None:
        try:
            return await provider.charge(ChargeRequest(key=key, amount_minor=amount, currency="CNY", rider_id=RIDER))
        except ProviderDeclined:
            return None

    return list(await asyncio.gather(*(charge(key) for key in keys)))


async def test_two_charges_of_a_whole_wallet_at_once_take_it_once(money: Money) -> None:
    for round_no in range(ROUNDS):
        await money.wallet_rider(600, key=f"round-{round_no}")
        taken = await charges(money, PaymentMethod.WALLET, f"a{round_no}", f"b{round_no}")
        assert sum(payment is not None for payment in taken) == 1, f"round {round_no}"
        assert await money.wallet_balance() == 0


async def test_a_top_up_credited_while_a_charge_runs_leaves_the_exact_balance(money: Money) -> None:
    await money.wallet_rider(600)

    async def top_up(round_no: int) -> None:
        async with money.db.transaction() as session:
            await credit_wallet(
                session,
                rider_id=RIDER,
                key=f"race-{round_no}",
                kind="topup",
                amount_minor=1000,
                currency="CNY",
                source="test",
                debit_account=provider_clearing("sandbox"),
                memo="race",
            )

    for round_no in range(ROUNDS):
        await asyncio.gather(top_up(round_no), charges(money, PaymentMethod.WALLET, f"c{round_no}"))
        assert await money.wallet_balance() == 600 + 400 * (round_no + 1), f"round {round_no}"


async def test_a_one_swap_plan_used_twice_at_once_is_used_once(money: Money) -> None:
    await money.subscription_rider(swaps=1)
    provider = money.providers[PaymentMethod.SUBSCRIPTION]
    for round_no in range(ROUNDS):
        taken = [
            p for p in await charges(money, PaymentMethod.SUBSCRIPTION, f"a{round_no}", f"b{round_no}") if p is not None
        ]
        assert len(taken) == 1, f"round {round_no}"
        # Given back, so the next round races for the same one swap.
        await provider.refund(
            RefundRequest(
                key=f"back{round_no}", payment=taken[0], amount_minor=taken[0].amount_minor, reason="next round"
            )
        )


async def test_two_swaps_charged_at_once_through_the_charge_activity_take_a_wallet_of_one_price_once(
    money: Money,
) -> None:
    await money.wallet_rider(PRICE)
    orders = [await money.admitted() for _ in range(2)]

    async def charge(order_id: str, price: int, currency: str) -> bool:
        try:
            await money.payments.charge(ChargeInput(order_id=order_id, amount_minor=price, currency=currency))
        except ApplicationError as refused:
            assert refused.type == PaymentDeclinedError.TYPE
            return False
        return True

    taken = await asyncio.gather(*(charge(*order) for order in orders))
    assert sorted(taken) == [False, True]
    assert await money.wallet_balance() == 0
