"""Request and response models of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from swapflow.api.payment_schemas import RefundView
from swapflow.db.money import Payment
from swapflow.db.swaps import SwapOrder
from swapflow.domain.network import CabinetCapability
from swapflow.domain.pricing import Quote
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.payments.confirmation import params_while_pending
from swapflow.workflows.swap_contract import swap_workflow_id


class SwapCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rider_id: str = Field(min_length=1, max_length=40)
    cabinet_id: str = Field(min_length=1, max_length=40)
    coupon_code: str | None = Field(None, min_length=1, max_length=40, description="Checked before the swap starts")


class SwapPaymentView(BaseModel):
    """The swap's charge as our record has it."""

    method: str
    status: str = Field(
        description="initiated | pending (waits for the rider) | authorized | captured | declined | closed"
    )
    amount_minor: int
    currency: str
    client_params: dict[str, str] | None = Field(
        None,
        description="While pending: what the app confirms the payment with (WeChat Pay: wx.requestPayment's "
        "appId, timeStamp, nonceStr, package, signType, paySign).",
    )

    @classmethod
    def of(cls, payment: Payment) -> SwapPaymentView:
        return cls(
            method=payment.method,
            status=payment.status,
            amount_minor=payment.amount_minor,
            currency=payment.currency,
            client_params=params_while_pending(payment),
        )


class SwapView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    rider_id: str
    cabinet_id: str
    status: SwapStatus
    stage: SwapStage
    failure_reason: str | None
    return_slot_no: int | None
    charged_slot_no: int | None
    returned_battery_serial: str | None
    issued_battery_serial: str | None
    price_minor: int | None
    currency: str | None
    coupon_code: str | None
    price_breakdown: Quote | None = Field(description="How the price came about: each rule and the coupon")
    payment_ref: str | None
    refund_ref: str | None
    steps: list[dict[str, Any]]
    workflow_id: str
    source: Literal["workflow", "database"] = Field(
        "database", description="workflow: live from the running workflow; database: as it recorded it"
    )
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    refund: RefundView | None = Field(None, description="The refund of a failed swap: status, expected arrival.")
    payment: SwapPaymentView | None = Field(None, description="The swap's charge, once it was made.")

    @classmethod
    def of(cls, order: SwapOrder, payment: Payment | None = None) -> SwapView:
        """An order as its row records it, with our record of its charge."""
        own = ("workflow_id", "source", "refund", "payment")
        fields = {name: getattr(order, name) for name in cls.model_fields if name not in own}
        return cls(
            **fields,
            workflow_id=swap_workflow_id(order.id),
            source="database",
            payment=SwapPaymentView.of(payment) if payment is not None else None,
        )


class CabinetSummary(BaseModel):
    id: str
    station_id: str
    station_name: str
    city_code: str
    lat: float
    lon: float
    distance_km: float | None
    online: bool | None = Field(description="null for a command-only cabinet, which cannot report it")
    capability: CabinetCapability
    ready_batteries: int = Field(description="Charged packs any rider may swap for now (none held for a reservation)")
    reserved_batteries: int = Field(0, description="Charged packs held for riders' reservations, apart from the above")
    free_slots: int
    slot_count: int
    last_seen_at: datetime | None


class BatteryView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    serial: str
    model: str
    chemistry: str
    soc: float
    soh: float
    voltage_v: float
    temperature_c: float
    cycle_count: int
    status: str
    custodian_kind: str
    custodian_ref: str


class SlotView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    slot_no: int
    door: str
    battery_serial: str | None
    charging: bool
    locked: bool
    fault: str | None
    out_of_service: str | None
    reserved: bool
    held_for_reservation: bool = Field(False, description="Its pack is held for a rider's reservation")


class CabinetDetail(CabinetSummary):
    slots: list[SlotView]


class RiderView(BaseModel):
    id: str
    name: str
    city_code: str
    status: str
    battery: BatteryView | None


class NetworkStats(BaseModel):
    swaps_completed: int
    swaps_failed: int
    swaps_in_flight: int
    cabinets_online: int
    cabinets_total: int
    dead_letters: int


class DeadLetterView(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    topic: str
    cabinet_id: str | None = Field(None, description="The registered cabinet the topic names, if any")
    city_code: str | None = None
    payload: str
    reason: str
    received_at: datetime
    occurrences: int = Field(1, description="How often this fault (topic and reason) came within its hour.")
    last_seen_at: datetime | None = None
