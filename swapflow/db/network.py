"""The network: cities, stations, cabinets and their slots, batteries, riders, and cabinets' online and
offline transitions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from swapflow.db.base import Base
from swapflow.domain.network import (
    BatteryStatus,
    CabinetCapability,
    CabinetProtocol,
    CustodianKind,
    DoorState,
    PresenceCause,
)
from swapflow.domain.swaps import RiderStatus


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
    reservation_id: Mapped[str | None] = mapped_column(
        String(32), nullable=True, doc="The rider's reservation holding its pack (swapflow.db.reservations)."
    )
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
    phone: Mapped[str | None] = mapped_column(
        String(20), unique=True, nullable=True, doc="E.164; the rider signs in with a code sent to it."
    )
    wechat_openid: Mapped[str | None] = mapped_column(
        String(64), unique=True, nullable=True, doc="From WeChat mini-program sign-in; WeChat Pay's payer."
    )
    created_at: Mapped[datetime | None] = mapped_column(nullable=True, doc="When they signed up (None: seeded).")


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
