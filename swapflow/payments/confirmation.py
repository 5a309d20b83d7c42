"""What a rider's app confirms a pending payment with (WeChat Pay's JSAPI parameters for
`wx.requestPayment`): the charge's first answer carries them, our `payments` record keeps them, and a
swap's, a top-up's or a plan purchase's GET shows them while the payment waits for the rider."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.money import Payment
from swapflow.payments.provider import PaymentStatus


async def payment_record(session: AsyncSession, key: str) -> Payment | None:
    """Our record of the payment under `key`, if it was made."""
    return await session.scalar(select(Payment).where(Payment.key == key))


def params_while_pending(payment: Payment | None) -> dict[str, Any] | None:
    """The parameters the rider confirms `payment` with, while it waits for them; None otherwise."""
    if payment is None or payment.status != PaymentStatus.PENDING:
        return None
    return payment.client_params


async def confirmation_params(session: AsyncSession, key: str) -> dict[str, Any] | None:
    """What the rider confirms the payment under `key` with, while it waits for them; None otherwise."""
    return params_while_pending(await payment_record(session, key))
