"""The swap's vocabulary: where a swap is, how it ended, whether its rider may swap."""

from __future__ import annotations

from enum import StrEnum


class SwapStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"


class SwapStage(StrEnum):
    """Where a swap is; the order a rider sees them in."""

    CREATED = "created"
    RESERVED = "reserved"
    PAID = "paid"
    RETURN_DOOR_OPEN = "return_door_open"
    RETURN_INSERTED = "return_inserted"
    RETURN_VERIFIED = "return_verified"
    CHARGED_DOOR_OPEN = "charged_door_open"
    CHARGED_TAKEN = "charged_taken"
    COMPLETED = "completed"
    COMPENSATING = "compensating"
    FAILED = "failed"


class RiderStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
