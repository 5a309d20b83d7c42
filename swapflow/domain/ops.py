"""Operations' vocabulary: alerts, work orders and the roles of the people who act on them."""

from __future__ import annotations

from enum import StrEnum


class AlertStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class OperatorRole(StrEnum):
    """What an account may do; `cities` on the account says where."""

    OPERATOR = "operator"
    TECHNICIAN = "technician"
    CITY_LEAD = "city_lead"
    FINANCE = "finance"
    ADMIN = "admin"


class WorkOrderStatus(StrEnum):
    NEW = "new"  # recorded, its workflow not started yet
    DISPATCHED = "dispatched"  # assigned, not accepted
    UNASSIGNED = "unassigned"  # nobody on duty: waits for a reassign (and escalates)
    ACCEPTED = "accepted"
    VERIFYING = "verifying"
    CLOSED = "closed"
    CANCELLED = "cancelled"


OPEN_WORK_ORDER_STATUSES = (
    WorkOrderStatus.NEW,
    WorkOrderStatus.DISPATCHED,
    WorkOrderStatus.UNASSIGNED,
    WorkOrderStatus.ACCEPTED,
    WorkOrderStatus.VERIFYING,
)
