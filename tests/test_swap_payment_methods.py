"""Whole swaps paid by a wallet or a subscription, on the saga's scene (real worker, adapter, simulated
cabinet, broker and database): the swap completes and books the money where that method keeps it, a
refusal opens no door, and a failed swap gives the money (or the swap) back through its refund."""

from __future__ import annotations

from sqlalchemy import select

from swapflow.db.devices import DeviceCommand
from swapflow.db.money import SubscriptionUse
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.workflows.swap_contract import SwapProgress
from tests.money_harness import Money
from tests.swap_harness import swap_refund_outcome
from tests.test_swap_saga import (  # noqa: F401  (fixtures: the saga's scene and its short bounds)
    RIDER,
    Scene,
    assert_invariants,
    count,
    ledger_kinds,
    scene,
    settings,
)


def money(scene: Scene) -> Money:
    return Money(scene.db, scene.settings)


async def complete(scene: Scene) -> tuple[str, SwapProgress]:
    order_id, handle = await scene.start()
    await scene.insert(order_id, await scene.rider_pack())
    await scene.take(order_id)
    return order_id, await handle.result()


async def test_wallet_rider_swaps_and_pays_from_the_balance(scene: Scene) -> None:
    await money(scene).wallet_rider(1000)
    order_id, result = await complete(scene)
    assert result.status == SwapStatus.COMPLETED
    assert await money(scene).wallet_balance() == 400
    assert await ledger_kinds(scene.db, order_id) == ["swap_charge", "swap_revenue", "commission_accrual"]
    await assert_invariants(scene.db)


async def test_wallet_short_of_the_price_declines_the_swap_before_any_door_opens(scene: Scene) -> None:
    await money(scene).wallet_rider(100)
    order_id, handle = await scene.start()
    result = await handle.result()
    assert (result.status, result.failure_reason) == (SwapStatus.FAILED, "payment_declined")
    assert await count(scene.db, DeviceCommand) == 0
    assert await money(scene).wallet_balance() == 100
    await assert_invariants(scene.db)


async def test_failed_wallet_swap_credits_the_wallet_back_once(scene: Scene) -> None:
    await money(scene).wallet_rider(1000)
    order_id, handle = await scene.start()
    await scene.until_stage(order_id, SwapStage.RETURN_DOOR_OPEN)
    await scene.skip(scene.settings.swap.return_insert_timeout_s + 1)
    assert (await handle.result()).status == SwapStatus.FAILED
    assert (await swap_refund_outcome(scene.env.client, order_id)).state == "succeeded"
    assert await ledger_kinds(scene.db, order_id) == ["swap_charge", "swap_refund", "refund_settled"]
    assert await money(scene).wallet_balance() == 1000
    await assert_invariants(scene.db)


async def test_subscription_rider_swaps_on_the_plan_and_is_declined_beyond_it(scene: Scene) -> None:
    await money(scene).subscription_rider(swaps=1)
    order_id, result = await complete(scene)
    assert result.status == SwapStatus.COMPLETED
    async with scene.db.sessions() as session:
        use = await session.scalar(select(SubscriptionUse).where(SubscriptionUse.key == f"swap:{order_id}:charge"))
    assert use is not None and use.amount_minor == 400
    _, handle = await scene.start()
    declined = await handle.result()
    assert (declined.status, declined.failure_reason) == (SwapStatus.FAILED, "payment_declined")
    await assert_invariants(scene.db)
