"""A refund's vocabulary: why it was opened, where it is, and the business id of a swap's refund."""

from __future__ import annotations

from enum import StrEnum


class RefundOrigin(StrEnum):
    SWAP_COMPENSATION = "swap_compensation"  # a failed swap's saga
    OPERATOR = "operator"  # POST /v1/refunds
    COMPLAINT = "complaint"  # a rider complaint that ops approved


class RefundState(StrEnum):
    """Our status of a refund (the provider's is `Refund.provider_status`)."""

    REQUESTED = "requested"  # recorded, not yet accepted by the provider
    PROCESSING = "processing"  # accepted, money on its way
    SUCCEEDED = "succeeded"  # the money is back with the rider
    ESCALATED = "escalated"  # abnormal or failed at the provider: finance's abnormal-refund path


def swap_refund_id(order_id: str) -> str:
    """The refund id of a failed swap's compensation: one failure can only ever open this one refund."""
    return f"swap-{order_id}"


class RefundResolution(StrEnum):
    """How finance resolved a refund escalated to it: nobody's money stays owed without an owner."""

    RESUBMITTED = "resubmitted"  # a new submission through the refund workflow
    PAID_BY_TRANSFER = "paid_by_transfer"  # finance paid the rider another way (bank, another provider)
    REFUNDED_OFFLINE = "refunded_offline"  # returned outside swapflow (the provider's merchant portal)
