"""Price rules, coupons and their redemptions."""

from __future__ import annotations

from datetime import datetime, time

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Integer, String, Time, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from swapflow.db.base import Base
from swapflow.domain.clock import utcnow


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
