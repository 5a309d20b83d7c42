"""The database: the network (cities, stations, cabinets, slots, batteries), riders, swaps, custody,
money and the device trail. SQLAlchemy 2 typed ORM; the schema is owned by the Alembic migrations
beside this file, which run on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    Time,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# The tables are typed by the domain's vocabulary; code that reads them may import it from here too.
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.network import (
    BatteryStatus,
    CabinetCapability,
    CabinetProtocol,
    CredentialRole,
    CustodianKind,
    DoorState,
    PresenceCause,
)
from swapflow.domain.ops import AlertStatus, OperatorRole, WorkOrderStatus
from swapflow.domain.swaps import RiderStatus, SwapStage, SwapStatus


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and read back aware, on SQLite too (which keeps no offset and would hand
    it back naive, or keep another zone's wall clock as if it were UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UtcDateTime(), dict[str, Any]: JSON}


def table_of(model: type[Base]) -> Table:
    """A mapped class's table, typed as one (SQLAlchemy types `__table__` as any FromClause)."""
    return cast(Table, model.__table__)


class City(Base):
    __tablename__ = "cities"

    code: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    timezone: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    swap_price_minor: Mapped[int] = mapped_column(Integer, doc="Base price of one swap, in minor units.")

    stations: Mapped[list[Station]] = relationship(back_populates="city")


class Station(Base):
    __tablename__ = "stations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    city_code: Mapped[str] = mapped_column(ForeignKey("cities.code"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)

    city: Mapped[City] = relationship(back_populates="stations")
    cabinets: Mapped[list[Cabinet]] = relationship(back_populates="station")


class Cabinet(Base):
    __tablename__ = "cabinets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True, doc="The device id it speaks MQTT as.")
    station_id: Mapped[str] = mapped_column(ForeignKey("stations.id"), index=True)
    model: Mapped[str] = mapped_column(String(40))
    slot_count: Mapped[int] = mapped_column(Integer)
    capability: Mapped[CabinetCapability] = mapped_column(String(16), default=CabinetCapability.REPORTING)
    online: Mapped[bool] = mapped_column(Boolean, default=False)
    last_seen_at: Mapped[datetime | None] = mapped_column(nullable=True)
    firmware: Mapped[str | None] = mapped_column(String(40), nullable=True)
    protocol: Mapped[CabinetProtocol] = mapped_column(
        String(8), default="v1", server_default="v1", doc="MQTT v1, or tower protocol via the gateway."
    )

    station: Mapped[Station] = relationship(back_populates="cabinets")
    slots: Mapped[list[Slot]] = relationship(back_populates="cabinet", order_by="Slot.slot_no")


class Slot(Base):
    __tablename__ = "slots"
    __table_args__ = (UniqueConstraint("cabinet_id", "slot_no"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cabinet_id: Mapped[str] = mapped_column(ForeignKey("cabinets.id"))
    slot_no: Mapped[int] = mapped_column(Integer)
    door: Mapped[DoorState] = mapped_column(String(8), default=DoorState.CLOSED)
    battery_serial: Mapped[str | None] = mapped_column(ForeignKey("batteries.serial"), nullable=True, unique=True)
    charging: Mapped[bool] = mapped_column(Boolean, default=False)
    locked: Mapped[bool] = mapped_column(Boolean, default=False, doc="Locked slots take no part in swaps.")
    fault: Mapped[str | None] = mapped_column(String(100), nullable=True, doc="As the cabinet reports it.")
    out_of_service: Mapped[str | None] = mapped_column(
        String(100), nullable=True, doc="Why the platform took the slot out of swaps (door fault, quarantined pack)."
    )
    reserved_order_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    reported_serial: Mapped[str | None] = mapped_column(
        String(40), nullable=True, doc="The pack the cabinet last reported in the slot (an event or a birth)."
    )
    reported_at: Mapped[datetime | None] = mapped_column(nullable=True, doc="When; null: never reported.")

    cabinet: Mapped[Cabinet] = relationship(back_populates="slots")


class Battery(Base):
    __tablename__ = "batteries"

    serial: Mapped[str] = mapped_column(String(40), primary_key=True)
    model: Mapped[str] = mapped_column(String(40))
    chemistry: Mapped[str] = mapped_column(String(16))
    rated_capacity_mah: Mapped[int] = mapped_column(Integer)
    soc: Mapped[float] = mapped_column(Float, doc="State of charge, percent.")
    soh: Mapped[float] = mapped_column(Float, doc="State of health, percent.")
    voltage_v: Mapped[float] = mapped_column(Float)
    temperature_c: Mapped[float] = mapped_column(Float)
    cycle_count: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[BatteryStatus] = mapped_column(String(16), default=BatteryStatus.IN_SERVICE)
    custodian_kind: Mapped[CustodianKind] = mapped_column(String(16))
    custodian_ref: Mapped[str] = mapped_column(String(60), doc="slot: '<cabinet>/<slot>'; rider: rider id.")
    reading_at: Mapped[datetime | None] = mapped_column(nullable=True)
    current_a: Mapped[float | None] = mapped_column(Float, nullable=True, doc="Latest current; positive: charging.")
    charge_state: Mapped[str | None] = mapped_column(
        String(12), nullable=True, doc="charging | discharging | idle (battery_state.py)."
    )

    __table_args__ = (Index("ix_batteries_custodian", "custodian_kind", "custodian_ref"),)


class Rider(Base):
    __tablename__ = "riders"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    city_code: Mapped[str] = mapped_column(ForeignKey("cities.code"))
    status: Mapped[RiderStatus] = mapped_column(String(16), default=RiderStatus.ACTIVE)


class SwapOrder(Base):
    __tablename__ = "swap_orders"
    __table_args__ = (
        UniqueConstraint("rider_id", "idempotency_key"),
        Index("ix_swap_orders_status", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    cabinet_id: Mapped[str] = mapped_column(ForeignKey("cabinets.id"))
    idempotency_key: Mapped[str] = mapped_column(String(100))
    status: Mapped[SwapStatus] = mapped_column(String(16), default=SwapStatus.IN_PROGRESS)
    stage: Mapped[SwapStage] = mapped_column(String(24), default=SwapStage.CREATED)
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    return_slot_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    charged_slot_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    returned_battery_serial: Mapped[str | None] = mapped_column(String(40), nullable=True)
    issued_battery_serial: Mapped[str | None] = mapped_column(String(40), nullable=True)
    price_minor: Mapped[int | None] = mapped_column(Integer, nullable=True)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    payment_ref: Mapped[str | None] = mapped_column(String(80), nullable=True)
    refund_ref: Mapped[str | None] = mapped_column(String(80), nullable=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, doc="Outcome of each step.")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    return_door_opened_at: Mapped[datetime | None] = mapped_column(nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # pricing: the coupon the rider gave, and how the price came about (swapflow.domain.pricing.Quote)
    coupon_code: Mapped[str | None] = mapped_column(String(40), nullable=True)
    price_breakdown: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class CustodyEvent(Base):
    """One change of a battery's custodian. Append-only."""

    __tablename__ = "custody_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True, doc="Business key; makes retries no-ops.")
    battery_serial: Mapped[str] = mapped_column(ForeignKey("batteries.serial"), index=True)
    from_kind: Mapped[CustodianKind] = mapped_column(String(16))
    from_ref: Mapped[str] = mapped_column(String(60))
    to_kind: Mapped[CustodianKind] = mapped_column(String(16))
    to_ref: Mapped[str] = mapped_column(String(60))
    reason: Mapped[str] = mapped_column(String(200))
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class LedgerTransaction(Base):
    """A balanced set of postings: the postings' amounts sum to zero per currency. Immutable."""

    __tablename__ = "ledger_transactions"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True, doc="Business key, e.g. swap:<id>:charge.")
    kind: Mapped[str] = mapped_column(String(40))
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    memo: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    postings: Mapped[list[LedgerPosting]] = relationship(back_populates="transaction")


class LedgerPosting(Base):
    __tablename__ = "ledger_postings"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    account: Mapped[str] = mapped_column(String(80), index=True)
    amount_minor: Mapped[int] = mapped_column(BigInteger, doc="Debit positive, credit negative.")
    currency: Mapped[str] = mapped_column(String(3))

    transaction: Mapped[LedgerTransaction] = relationship(back_populates="postings")


class SandboxPayment(Base):
    """State of the sandbox payment provider: what a real provider would keep on its side."""

    __tablename__ = "sandbox_payments"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(120), unique=True)
    amount_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(String(16), doc="captured | declined")
    refunded_minor: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class SandboxRefund(Base):
    __tablename__ = "sandbox_refunds"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(120), unique=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("sandbox_payments.id"))
    amount_minor: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), doc="processing | succeeded | closed | abnormal | failed")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    settles_at: Mapped[datetime | None] = mapped_column(nullable=True, doc="When a processing refund succeeds.")
    final_at: Mapped[datetime | None] = mapped_column(nullable=True)


class DeviceCommand(Base):
    """A command sent to a cabinet, and its acknowledgement. Links a device message to its workflow."""

    __tablename__ = "device_commands"

    id: Mapped[str] = mapped_column(String(60), primary_key=True, doc="The command id on the wire.")
    cabinet_id: Mapped[str] = mapped_column(ForeignKey("cabinets.id"), index=True)
    slot_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(24))
    workflow_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    sent_at: Mapped[datetime] = mapped_column(default=utcnow)
    deadline_at: Mapped[datetime]
    acked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ok: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    error: Mapped[str | None] = mapped_column(String(200), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class DeviceMessage(Base):
    """Every accepted door/battery event and ack, once: the dedupe key and the trace of device messages."""

    __tablename__ = "device_messages"
    __table_args__ = (UniqueConstraint("cabinet_id", "message_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    cabinet_id: Mapped[str] = mapped_column(String(40), index=True)
    message_id: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    workflow_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeadLetter(Base):
    """A device message that could not be parsed or routed, kept with the reason for an operator."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    topic: Mapped[str] = mapped_column(String(300))
    payload: Mapped[str] = mapped_column(Text, doc="Raw payload, UTF-8 with replacement.")
    reason: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    dedupe_key: Mapped[str | None] = mapped_column(
        String(64),
        nullable=True,
        unique=True,
        doc="The same fault (topic and reason) within one hour: counted on one row, not stored again.",
    )
    occurrences: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    last_seen_at: Mapped[datetime | None] = mapped_column(nullable=True)

    @staticmethod
    def text(data: bytes | str, limit: int) -> str:
        """What a dead letter keeps of a device's bytes: the first `limit`, UTF-8 with replacement, NUL
        escaped (PostgreSQL's text cannot hold it, and the letter would be lost)."""
        raw = data[:limit].decode("utf-8", errors="replace") if isinstance(data, bytes) else data[:limit]
        return raw.replace("\x00", "\\x00")


class SafetyEvent(Base):
    """One check of a returned pack: its identity and BMS reading, the limits applied, the verdict."""

    __tablename__ = "safety_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True, doc="swap:<id>:return-check; retries are no-ops.")
    battery_serial: Mapped[str] = mapped_column(String(40), index=True, doc="As reported; may be unknown to us.")
    battery_model: Mapped[str | None] = mapped_column(String(40), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    cabinet_id: Mapped[str] = mapped_column(String(40))
    slot_no: Mapped[int] = mapped_column(Integer)
    reading: Mapped[dict[str, Any]] = mapped_column(JSON)
    limits: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    verdict: Mapped[str] = mapped_column(String(16), doc="accepted | rejected")
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """Something a person must look at. One open alert per `dedupe_key`; a repeat counts occurrences."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    severity: Mapped[str] = mapped_column(String(16), doc="info | warning | critical")
    dedupe_key: Mapped[str] = mapped_column(String(160), index=True)
    status: Mapped[AlertStatus] = mapped_column(String(16), default=AlertStatus.OPEN, index=True)
    cabinet_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    slot_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    battery_serial: Mapped[str | None] = mapped_column(String(40), nullable=True)
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    message: Mapped[str] = mapped_column(Text)
    occurrences: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True)


# ---- payments: our record of charges and refunds, wallets, subscriptions, pricing ----


class RiderPaymentMethod(Base):
    """How a rider pays: one method (a `swapflow.payments.provider.PaymentMethod`) and the provider's
    handle for them (WeChat openid, Stripe customer, ...). A rider without a row pays by the sandbox."""

    __tablename__ = "rider_payment_methods"

    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), primary_key=True)
    method: Mapped[str] = mapped_column(String(16))
    payer: Mapped[str | None] = mapped_column(String(120), nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Payment(Base):
    """Our record of one charge, written under its key before the provider is first asked, so a retry
    finds it and asks the provider what happened instead of charging again."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True, doc="swap:<order id>:charge")
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    rider_id: Mapped[str] = mapped_column(String(40), index=True)
    method: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(Integer, doc="Asked for; the captured amount once captured.")
    currency: Mapped[str] = mapped_column(String(3))
    status: Mapped[str] = mapped_column(
        String(16), doc="initiated | pending | authorized | captured | declined | closed"
    )
    payer: Mapped[str | None] = mapped_column(String(120), nullable=True, doc="The provider's handle for the rider.")
    provider_ref: Mapped[str | None] = mapped_column(String(80), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    captured_at: Mapped[datetime | None] = mapped_column(nullable=True, doc="When we learnt it was captured.")


class Refund(Base):
    """One refund our refund workflow (`refund/<id>`) follows until the money is back with the rider."""

    __tablename__ = "refunds"

    id: Mapped[str] = mapped_column(String(80), primary_key=True, doc="swap-<order id> for a failed swap's refund.")
    key: Mapped[str] = mapped_column(String(120), unique=True, doc="The current submission's key (refund:<id>[:n]).")
    payment_key: Mapped[str] = mapped_column(String(120), index=True)
    order_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    rider_id: Mapped[str] = mapped_column(String(40), index=True)
    method: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text)
    origin: Mapped[str] = mapped_column(String(24), doc="swap_compensation | operator | complaint")
    status: Mapped[str] = mapped_column(
        String(16), index=True, doc="requested | processing | succeeded | escalated | rejected"
    )
    provider_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    provider_ref: Mapped[str | None] = mapped_column(String(80), nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1, doc="Submission number; a new key each.")
    submitted_at: Mapped[datetime | None] = mapped_column(nullable=True)
    expected_by: Mapped[datetime | None] = mapped_column(nullable=True, index=True)
    final_at: Mapped[datetime | None] = mapped_column(nullable=True)
    succeeded_at: Mapped[datetime | None] = mapped_column(nullable=True, doc="When the provider says it succeeded.")
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Complaint(Base):
    """A rider's complaint asking for money back; ops approve it (which starts a refund) or reject it."""

    __tablename__ = "complaints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("swap_orders.id"), index=True)
    amount_minor: Mapped[int | None] = mapped_column(Integer, nullable=True, doc="None: all that is refundable.")
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open", doc="open | approved")
    refund_id: Mapped[str | None] = mapped_column(String(80), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Wallet(Base):
    """A rider's prepaid balance."""

    __tablename__ = "wallets"

    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3))
    balance_minor: Mapped[int] = mapped_column(BigInteger, default=0)


class WalletEntry(Base):
    """One movement of a wallet (top-up, goodwill credit, charge, refund), once per key. Append-only.
    `payment_key` names what backs it: the settled top-up payment, `goodwill:<id>`, or the refunded charge."""

    __tablename__ = "wallet_entries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16), doc="topup | goodwill | charge | refund")
    amount_minor: Mapped[int] = mapped_column(BigInteger, doc="Positive: into the wallet.")
    currency: Mapped[str] = mapped_column(String(3))
    payment_key: Mapped[str | None] = mapped_column(String(120), nullable=True, index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class SubscriptionPlan(Base):
    """N swaps per period for a price; each swap is worth `price_minor // swaps_per_period`."""

    __tablename__ = "subscription_plans"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    swaps_per_period: Mapped[int] = mapped_column(Integer)
    period_days: Mapped[int] = mapped_column(Integer)
    price_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))


class Subscription(Base):
    """A rider's plan; periods of `period_days` follow each other from `started_at`."""

    __tablename__ = "subscriptions"

    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), primary_key=True)
    plan_id: Mapped[str] = mapped_column(ForeignKey("subscription_plans.id"))
    started_at: Mapped[datetime]
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class SubscriptionUse(Base):
    """One swap taken from a subscription period (a charge); a refund gives it back."""

    __tablename__ = "subscription_uses"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(120), unique=True, doc="The charge's key.")
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    period_start: Mapped[datetime]
    amount_minor: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    refund_key: Mapped[str | None] = mapped_column(String(120), nullable=True, unique=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    returned_at: Mapped[datetime | None] = mapped_column(nullable=True)


class ReconciliationRun(Base):
    """One day's comparison of our payments and refunds with one provider's statement."""

    __tablename__ = "reconciliation_runs"
    __table_args__ = (UniqueConstraint("day", "provider"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), doc="YYYY-MM-DD (UTC)")
    provider: Mapped[str] = mapped_column(String(16))
    ours: Mapped[int] = mapped_column(Integer, doc="Our movements that day.")
    theirs: Mapped[int] = mapped_column(Integer, doc="Lines in the provider's statement.")
    matched: Mapped[int] = mapped_column(Integer)
    exceptions: Mapped[int] = mapped_column(Integer)
    ran_at: Mapped[datetime] = mapped_column(default=utcnow)


class ReconciliationException(Base):
    """One difference between our record and a provider's, for finance to resolve (never fixed silently)."""

    __tablename__ = "reconciliation_exceptions"
    __table_args__ = (UniqueConstraint("day", "provider", "ref"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), index=True)
    provider: Mapped[str] = mapped_column(String(16))
    ref: Mapped[str] = mapped_column(String(160), doc="Our key, or the provider's ref when it carries none.")
    kind: Mapped[str] = mapped_column(String(32), doc="missing_at_provider | missing_in_ours | amount_mismatch")
    ours_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    theirs_minor: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    detail: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---- payment provider notifications ----


class PaymentNotification(Base):
    """A verified notification from a payment provider (WeChat notify, Stripe webhook), kept once: the
    dedupe key, the provider state re-read after it, and the refund workflow it was passed to."""

    __tablename__ = "payment_notifications"
    __table_args__ = (UniqueConstraint("provider", "notification_id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    provider: Mapped[str] = mapped_column(String(16), doc="wechat | stripe")
    notification_id: Mapped[str] = mapped_column(String(80), doc="WeChat notification id / Stripe event id.")
    event_type: Mapped[str] = mapped_column(String(60))
    key: Mapped[str | None] = mapped_column(String(120), nullable=True, index=True, doc="Our charge/refund key.")
    status: Mapped[str | None] = mapped_column(String(16), nullable=True, doc="Re-read payment/refund status.")
    workflow_id: Mapped[str | None] = mapped_column(String(80), nullable=True, doc="Refund workflow signalled.")
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, doc="The verified (decrypted) notification.")
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


# ---- pricing rules and coupons ----


class PriceRule(Base):
    """One price rule (swapflow.domain.pricing says how rules combine). Edited by operators; never by a swap."""

    __tablename__ = "price_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(24), doc="base | battery_model | peak | off_peak | first_swap_free")
    adjustment: Mapped[str] = mapped_column(String(8), doc="percent (basis points) | fixed | set (minor units)")
    value: Mapped[int] = mapped_column(Integer)
    city_code: Mapped[str | None] = mapped_column(ForeignKey("cities.code"), nullable=True, index=True)
    battery_model: Mapped[str | None] = mapped_column(String(40), nullable=True)
    start_local: Mapped[time | None] = mapped_column(Time, nullable=True, doc="City-local wall clock.")
    end_local: Mapped[time | None] = mapped_column(Time, nullable=True)
    weekdays: Mapped[list[int] | None] = mapped_column(JSON, nullable=True, doc="ISO weekdays; null: all.")
    priority: Mapped[int] = mapped_column(Integer, default=0)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    valid_from: Mapped[datetime | None] = mapped_column(nullable=True)
    valid_until: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Coupon(Base):
    """A coupon and its limits. `redeemed_count` counts live redemptions; it only moves by a conditional
    UPDATE, so concurrent redemptions never pass `max_redemptions`."""

    __tablename__ = "coupons"

    code: Mapped[str] = mapped_column(String(40), primary_key=True, doc="Upper case.")
    description: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(8), doc="percent (basis points) | fixed (minor units)")
    value: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str | None] = mapped_column(String(3), nullable=True)
    valid_from: Mapped[datetime | None] = mapped_column(nullable=True)
    valid_until: Mapped[datetime | None] = mapped_column(nullable=True)
    max_redemptions: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_per_rider: Mapped[int | None] = mapped_column(Integer, nullable=True)
    min_price_minor: Mapped[int] = mapped_column(Integer, default=0)
    max_discount_minor: Mapped[int | None] = mapped_column(Integer, nullable=True)
    city_codes: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    battery_models: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    redeemed_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CouponRedemption(Base):
    """A coupon used by one swap (at most one per order). `rider_seq` numbers a rider's live redemptions
    of the coupon 1..max_per_rider; the unique constraint makes a concurrent extra one fail. A released
    redemption (the swap failed) keeps its row, with `rider_seq` cleared so the rider may use it again."""

    __tablename__ = "coupon_redemptions"
    __table_args__ = (UniqueConstraint("coupon_code", "rider_id", "rider_seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    coupon_code: Mapped[str] = mapped_column(ForeignKey("coupons.code"), index=True)
    order_id: Mapped[str] = mapped_column(ForeignKey("swap_orders.id"), unique=True)
    rider_id: Mapped[str] = mapped_column(String(40), index=True)
    rider_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    discount_minor: Mapped[int] = mapped_column(Integer)
    redeemed_at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None] = mapped_column(nullable=True)
    release_reason: Mapped[str | None] = mapped_column(String(200), nullable=True)


# ---- device network: online transitions, telemetry history, command queues ----


class CabinetPresence(Base):
    """One online/offline transition of a cabinet, with its cause. Append-only: uptime for any period
    is computed from it (swapflow/ops/uptime.py)."""

    __tablename__ = "cabinet_presence"
    __table_args__ = (Index("ix_cabinet_presence_cabinet_at", "cabinet_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    cabinet_id: Mapped[str] = mapped_column(ForeignKey("cabinets.id"))
    online: Mapped[bool] = mapped_column(Boolean)
    cause: Mapped[PresenceCause] = mapped_column(String(24))
    at: Mapped[datetime] = mapped_column(doc="When it happened (the message's time; the platform's for expiry).")


class BatteryReadingRecord(Base):
    """A pack's BMS reading over time (from cabinet telemetry or its own reports). History, not state:
    rows may be shed when ingestion falls behind. No foreign key, so inserts stay cheap."""

    __tablename__ = "battery_readings"
    __table_args__ = (Index("ix_battery_readings_serial_at", "battery_serial", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    battery_serial: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime]
    soc: Mapped[float] = mapped_column(Float)
    soh: Mapped[float] = mapped_column(Float)
    voltage_v: Mapped[float] = mapped_column(Float)
    current_a: Mapped[float] = mapped_column(Float)
    temperature_c: Mapped[float] = mapped_column(Float)
    cycle_count: Mapped[int] = mapped_column(Integer)
    cabinet_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    slot_no: Mapped[int | None] = mapped_column(Integer, nullable=True)


class CabinetHealthRecord(Base):
    """A cabinet's health over time, one row per telemetry report kept: temperature and slot counts."""

    __tablename__ = "cabinet_health"
    __table_args__ = (Index("ix_cabinet_health_cabinet_at", "cabinet_id", "at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    cabinet_id: Mapped[str] = mapped_column(String(40))
    at: Mapped[datetime]
    temperature_c: Mapped[float | None] = mapped_column(Float, nullable=True)
    batteries: Mapped[int] = mapped_column(Integer)
    charging: Mapped[int] = mapped_column(Integer)
    faults: Mapped[int] = mapped_column(Integer)
    doors_open: Mapped[int] = mapped_column(Integer)


class CustodyDiscrepancy(Base):
    """A slot whose pack, as the cabinet announced it on reconnecting, differs from our custody record:
    a pack moved while the cabinet was offline. Custody is not changed by it; an operator resolves it."""

    __tablename__ = "custody_discrepancies"
    __table_args__ = (UniqueConstraint("cabinet_id", "slot_no", "detected_at"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    cabinet_id: Mapped[str] = mapped_column(ForeignKey("cabinets.id"), index=True)
    slot_no: Mapped[int] = mapped_column(Integer)
    expected_serial: Mapped[str | None] = mapped_column(String(40), nullable=True, doc="What custody says.")
    reported_serial: Mapped[str | None] = mapped_column(String(40), nullable=True, doc="What the cabinet says.")
    detected_at: Mapped[datetime] = mapped_column(doc="Time of the birth or the late event that revealed it.")
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True)
    order_id: Mapped[str | None] = mapped_column(
        String(40), nullable=True, index=True, doc="The ended swap a late event belonged to (finance reviews it)."
    )


# ---- device identity and the tower-protocol gateway ----


class CabinetCredential(Base):
    """MQTT credentials of one cabinet or service account. Only the hash is kept (Mosquitto's `$7$`
    PBKDF2-SHA512 format, so the same line goes into a Mosquitto password file)."""

    __tablename__ = "cabinet_credentials"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    cabinet_id: Mapped[str | None] = mapped_column(ForeignKey("cabinets.id"), unique=True, nullable=True)
    role: Mapped[CredentialRole] = mapped_column(String(16), default=CredentialRole.CABINET)
    password_hash: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    rotated_at: Mapped[datetime | None] = mapped_column(nullable=True)


# ---- ops: operators, technicians, alerts, work orders ----


class Operator(Base):
    """A staff account. An admin sees every city; everyone else only the cities listed."""

    __tablename__ = "operators"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[OperatorRole] = mapped_column(String(16))
    cities: Mapped[list[str]] = mapped_column(JSON, default=list)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """A bearer token, kept only as its SHA-256: a leaked table grants nothing."""

    __tablename__ = "api_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    principal_kind: Mapped[str] = mapped_column(String(16), doc="operator | rider")
    principal_id: Mapped[str] = mapped_column(String(40), index=True)
    label: Mapped[str] = mapped_column(String(100), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class Technician(Base):
    """The field profile of a technician account: where they are and when they work (city local time)."""

    __tablename__ = "technicians"

    operator_id: Mapped[str] = mapped_column(ForeignKey("operators.id"), primary_key=True)
    city_code: Mapped[str] = mapped_column(ForeignKey("cities.code"), index=True)
    lat: Mapped[float] = mapped_column(Float)
    lon: Mapped[float] = mapped_column(Float)
    shift_start_minute: Mapped[int] = mapped_column(Integer, doc="Minutes after local midnight.")
    shift_end_minute: Mapped[int] = mapped_column(Integer, doc="May be below the start: a shift over midnight.")


class WorkOrder(Base):
    """A device problem a person must fix; run by the workflow `workorder/<id>`."""

    __tablename__ = "work_orders"

    id: Mapped[str] = mapped_column(String(80), primary_key=True, doc="<cabinet>.<slot or 0>.<random>")
    dedupe_key: Mapped[str] = mapped_column(String(80), index=True, doc="<cabinet>/<slot or ->")
    cabinet_id: Mapped[str] = mapped_column(ForeignKey("cabinets.id"), index=True)
    slot_no: Mapped[int | None] = mapped_column(Integer, nullable=True)
    city_code: Mapped[str] = mapped_column(String(16), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    severity: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(16), doc="alert | swap | operator")
    alert_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[WorkOrderStatus] = mapped_column(String(16), default=WorkOrderStatus.NEW, index=True)
    technician_id: Mapped[str | None] = mapped_column(String(40), nullable=True, index=True)
    escalated_to: Mapped[str | None] = mapped_column(String(40), nullable=True)
    reopen_count: Mapped[int] = mapped_column(Integer, default=0)
    opened_at: Mapped[datetime] = mapped_column(default=utcnow)
    acked_at: Mapped[datetime | None] = mapped_column(nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(nullable=True)


class WorkOrderEvent(Base):
    """One step of a work order, in order: its timeline. Keyed by the workflow's step number, so a
    retried activity records it once."""

    __tablename__ = "work_order_events"
    __table_args__ = (UniqueConstraint("work_order_id", "seq"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    work_order_id: Mapped[str] = mapped_column(ForeignKey("work_orders.id"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(40), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(default=utcnow)


class AlertDelivery(Base):
    """One attempt to deliver an alert to a channel (webhook): the delivery log."""

    __tablename__ = "alert_deliveries"
    __table_args__ = (UniqueConstraint("alert_id", "event", "channel", "attempt"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    alert_id: Mapped[int] = mapped_column(BigInteger, index=True)
    event: Mapped[str] = mapped_column(String(16), doc="opened | resolved")
    channel: Mapped[str] = mapped_column(String(40))
    attempt: Mapped[int] = mapped_column(Integer)
    ok: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(String(300), nullable=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class WalletTopUp(Base):
    """A rider's top-up: a payment collected through the rider's provider by workflow `topup/<id>`
    (our payment record is `payments` row `topup:<id>:charge`), credited to the wallet only once the
    provider confirms it."""

    __tablename__ = "wallet_top_ups"
    __table_args__ = (UniqueConstraint("rider_id", "idempotency_key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(60))
    method: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    payment_key: Mapped[str] = mapped_column(String(120), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True, doc="pending | succeeded | failed")
    failure_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    settled_at: Mapped[datetime | None] = mapped_column(nullable=True)


class GoodwillCredit(Base):
    """Money finance gives a rider without a payment (a gesture, a correction), with its reason and the
    finance operator who approved it; booked to its own ledger account."""

    __tablename__ = "goodwill_credits"
    __table_args__ = (UniqueConstraint("rider_id", "idempotency_key"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    rider_id: Mapped[str] = mapped_column(ForeignKey("riders.id"), index=True)
    idempotency_key: Mapped[str] = mapped_column(String(60))
    amount_minor: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    reason: Mapped[str] = mapped_column(Text)
    approved_by: Mapped[str] = mapped_column(String(40), doc="The operator (finance or admin) who granted it.")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
