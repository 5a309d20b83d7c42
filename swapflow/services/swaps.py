"""Swaps: the swap workflow's input, with the bounds of its waits from the settings."""

from __future__ import annotations

from swapflow.settings import Settings
from swapflow.workflows.swap_contract import SwapRequest


def swap_request(
    settings: Settings, *, order_id: str, rider_id: str, cabinet_id: str, coupon_code: str | None = None
) -> SwapRequest:
    """The swap workflow's input for an order, with the bounds of its waits from the settings."""
    return SwapRequest(
        order_id=order_id,
        rider_id=rider_id,
        cabinet_id=cabinet_id,
        coupon_code=coupon_code,
        command_ack_timeout_s=settings.swap.command_ack_timeout_s,
        command_attempts=settings.swap.command_attempts,
        return_insert_timeout_s=settings.swap.return_insert_timeout_s,
        charged_take_timeout_s=settings.swap.charged_take_timeout_s,
        offline_grace_s=settings.swap.offline_grace_s,
        payment_pending_timeout_s=settings.payments.payment_pending_timeout_s,
        refund_poll_schedule_s=tuple(settings.payments.refund_poll_schedule_s),
        refund_expected_days=settings.payments.refund_expected_days,
    )
