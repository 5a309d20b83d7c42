"""What one swap costs: price rules and coupons, applied in a fixed order. Pure: no I/O, no clock (the
time priced is an argument), so the API's quote and the swap's admission compute the same price.

The order, one stage after another, each stage starting from the price the previous one left:

1. base: the city's swap price, or the price a `base` rule sets for the city;
2. battery_model: a rule for the model of the rider's pack (their vehicle takes one model);
3. time window: a `peak` or `off_peak` rule whose window holds the swap's time *in the city's local
   timezone* (a window may run past midnight: 22:00-06:00);
4. first_swap_free: the rider has never completed a swap: the price becomes 0;
5. coupon: a percentage or fixed-amount discount, within the coupon's limits.

In each rule stage at most one rule applies: among the rules that match, a rule for the city beats a
network-wide one (city_code None), then the higher `priority`, then the older rule (lower id).

Money is integer minor units (fen, cents). A percentage is given in basis points (1500 = 15 %); the
amount it moves is rounded half up to a whole minor unit (15 % of 599 = 89.85 → 90). After every stage
the price is at least 0, and a coupon never discounts more than the price it is applied to.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic.json_schema import JsonDict

from swapflow.domain.checks import present

BASIS_POINTS = 10_000
"""100 % in basis points."""


class RuleKind(StrEnum):
    """Which stage a price rule belongs to (the module docstring gives their order)."""

    BASE = "base"
    BATTERY_MODEL = "battery_model"
    PEAK = "peak"
    OFF_PEAK = "off_peak"
    FIRST_SWAP_FREE = "first_swap_free"


class Adjustment(StrEnum):
    """How a rule changes the price: `value` is basis points, minor units of change, or the new price."""

    PERCENT = "percent"  # signed basis points of the running price: 2000 = +20 %, -1500 = -15 %
    FIXED = "fixed"  # signed minor units added to the running price
    SET = "set"  # the price becomes `value` minor units


class CouponKind(StrEnum):
    PERCENT = "percent"  # `value` basis points off the price, 1..10000
    FIXED = "fixed"  # `value` minor units off the price


def _aware(value: datetime) -> datetime:
    # Written without an offset (or read back naive from SQLite): UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Bound = Annotated[datetime, AfterValidator(_aware)] | None
"""A validity bound; a naive one is UTC."""


def _wall_clock(value: time) -> time:
    if value.tzinfo is not None:
        raise ValueError("a local wall-clock time has no offset")
    return value


WallClock = Annotated[
    time,
    AfterValidator(_wall_clock),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\.[0-9]{1,6})?)?$",
            "description": "HH:MM[:SS], the city's local wall clock (no offset)",
        }
    ),
]

StoredInt = Annotated[int, Field(le=2**31 - 1)]
"""An integer its 32-bit column holds (give each its lower bound, at least -2**31)."""


def _when(
    condition: JsonDict, then: JsonDict, otherwise: JsonDict | None = None, *, required: bool = False
) -> JsonDict:
    """A JSON Schema conditional on the model's properties (`then` all `required`, or only where present):
    what a model validator checks, declared."""
    rule: JsonDict = {
        "if": {"properties": condition, "required": list(condition)},
        "then": {"properties": then, **({"required": list(then)} if required else {})},
    }
    if otherwise is not None:
        rule["else"] = {"properties": otherwise}
    return rule


_NULL: JsonDict = {"type": "null"}
_STRING: JsonDict = {"type": "string"}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class PriceRuleSpec(_Model):
    """A price rule as an operator writes it. Time windows are local wall-clock times of the city;
    `end_local` is exclusive, and an end at or before the start means the window runs past midnight."""

    # The model validator's rules, for the OpenAPI document (a rule it refuses is not schema-valid).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "allOf": [
                _when(
                    {"kind": {"enum": [RuleKind.PEAK, RuleKind.OFF_PEAK]}},
                    {"start_local": _STRING, "end_local": _STRING},
                    {"start_local": _NULL, "end_local": _NULL, "weekdays": _NULL},
                    required=True,
                ),
                _when(
                    {"kind": {"const": RuleKind.BATTERY_MODEL}},
                    {"battery_model": _STRING},
                    {"battery_model": _NULL},
                    required=True,
                ),
                _when(
                    {"kind": {"const": RuleKind.FIRST_SWAP_FREE}},
                    {"adjustment": {"const": Adjustment.SET}, "value": {"const": 0}},
                ),
                {
                    "if": {"properties": {"adjustment": {"const": Adjustment.SET}}},  # also when left to its default
                    "then": {"properties": {"value": {"minimum": 0}}},
                },
                _when({"adjustment": {"const": Adjustment.PERCENT}}, {"value": {"minimum": -BASIS_POINTS}}),
            ]
        },
    )

    name: str = Field(min_length=1, max_length=100)
    kind: RuleKind
    adjustment: Adjustment = Adjustment.SET
    value: StoredInt = Field(0, ge=-(2**31))
    city_code: str | None = Field(None, max_length=16, description="None: every city")
    battery_model: str | None = Field(None, max_length=40, description="Required for kind battery_model")
    start_local: WallClock | None = Field(None, description="Required for peak / off_peak")
    end_local: WallClock | None = Field(None, description="Required for peak / off_peak")
    weekdays: list[Annotated[int, Field(ge=1, le=7)]] | None = Field(
        None, min_length=1, description="ISO weekdays (1 = Monday) of the local date; None: all"
    )
    priority: StoredInt = Field(0, ge=-(2**31))
    active: bool = True
    valid_from: Bound = None
    valid_until: Bound = None

    @field_validator("weekdays")
    @classmethod
    def _iso_weekdays(cls, value: list[int] | None) -> list[int] | None:
        return sorted(set(value)) if value is not None else None

    @model_validator(mode="after")
    def _complete(self) -> PriceRuleSpec:
        windowed = self.kind in (RuleKind.PEAK, RuleKind.OFF_PEAK)
        if windowed and (self.start_local is None or self.end_local is None):
            raise ValueError(f"a {self.kind} rule needs start_local and end_local")
        if not windowed and (self.start_local is not None or self.end_local is not None or self.weekdays):
            raise ValueError(f"a {self.kind} rule has no time window")
        if (self.kind == RuleKind.BATTERY_MODEL) != (self.battery_model is not None):
            raise ValueError("battery_model is set exactly for battery_model rules")
        if self.kind == RuleKind.FIRST_SWAP_FREE and (self.adjustment, self.value) != (Adjustment.SET, 0):
            raise ValueError("a first_swap_free rule sets the price to 0 (adjustment set, value 0)")
        if self.adjustment == Adjustment.SET and self.value < 0:
            raise ValueError("a set price is not negative")
        if self.adjustment == Adjustment.PERCENT and self.value < -BASIS_POINTS:
            raise ValueError("a percentage takes off at most 100 % (-10000 basis points)")
        return self


class PriceRule(PriceRuleSpec):
    """A stored price rule."""

    id: int


class Coupon(_Model):
    """A coupon and its limits, as an operator writes it and as it is stored. A limit left None does not limit."""

    # The model validator's rules, for the OpenAPI document.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "allOf": [
                _when({"kind": {"const": CouponKind.PERCENT}}, {"value": {"maximum": BASIS_POINTS}}),
                _when({"kind": {"const": CouponKind.FIXED}}, {"currency": _STRING}, required=True),
            ]
        },
    )

    code: str = Field(min_length=3, max_length=40, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = Field("", max_length=200)
    kind: CouponKind
    value: StoredInt = Field(gt=0)
    currency: str | None = Field(None, min_length=3, max_length=3, description="Required for fixed coupons")
    valid_from: Bound = None
    valid_until: Bound = None
    max_redemptions: StoredInt | None = Field(None, ge=1, description="Total over all riders")
    max_per_rider: StoredInt | None = Field(1, ge=1)
    min_price_minor: StoredInt = Field(0, ge=0, description="The price before the coupon must be at least this")
    max_discount_minor: StoredInt | None = Field(None, ge=0, description="Cap on the discount")
    city_codes: list[str] | None = Field(None, description="None: every city")
    battery_models: list[str] | None = Field(None, description="None: every model")
    active: bool = True

    @field_validator("code", mode="before")
    @classmethod
    def _canonical_code(cls, value: object) -> object:
        return normalise_code(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> Coupon:
        if self.kind == CouponKind.PERCENT and self.value > BASIS_POINTS:
            raise ValueError("a percentage coupon takes off at most 100 % (10000 basis points)")
        if self.kind == CouponKind.FIXED and self.currency is None:
            raise ValueError("a fixed-amount coupon names its currency")
        return self


def normalise_code(code: str) -> str:
    """Coupon codes are case-insensitive: riders type them."""
    return code.strip().upper()


class CouponUsage(_Model):
    """How often a coupon has been redeemed (released redemptions not counted), overall and by the rider."""

    total: int = 0
    by_rider: int = 0


class CouponRejection(StrEnum):
    """Why a coupon does not apply to a swap; the API's 422 problem and the swap's steps name it."""

    UNKNOWN = "coupon_unknown"
    INACTIVE = "coupon_inactive"
    NOT_YET_VALID = "coupon_not_yet_valid"
    EXPIRED = "coupon_expired"
    EXHAUSTED = "coupon_exhausted"
    RIDER_LIMIT_REACHED = "coupon_rider_limit_reached"
    WRONG_CITY = "coupon_not_valid_in_city"
    WRONG_BATTERY_MODEL = "coupon_not_valid_for_battery_model"
    WRONG_CURRENCY = "coupon_currency_mismatch"
    BELOW_MINIMUM_PRICE = "coupon_below_minimum_price"


class PricingContext(_Model):
    """Everything about one swap the price depends on."""

    city_code: str
    currency: str
    timezone: str = Field(description="IANA zone of the city, for peak windows")
    city_price_minor: int = Field(ge=0)
    battery_model: str | None
    at: datetime = Field(description="When the rider asked for the swap (aware)")
    completed_swaps: int = Field(ge=0, description="The rider's completed swaps before this one")

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("the priced time must carry its timezone")
        return value


class PriceLine(_Model):
    """One stage that changed (or set) the price."""

    stage: str = Field(description="base | battery_model | peak | off_peak | first_swap_free | coupon")
    label: str
    change_minor: int = Field(description="Signed change; for the base line, the base price itself")
    price_minor: int = Field(description="The price after this line")
    rule_id: int | None = None
    coupon_code: str | None = None


class Quote(_Model):
    """The price of one swap and how it came about; recorded on the order as its breakdown."""

    currency: str
    at: datetime
    local_time: str = Field(description="The priced time in the city's timezone, ISO 8601")
    lines: tuple[PriceLine, ...]
    total_minor: int = Field(ge=0)
    coupon_code: str | None = Field(None, description="The coupon applied, if any")
    coupon_rejected: CouponRejection | None = Field(None, description="Why the coupon given was not applied")

    @property
    def discount_minor(self) -> int:
        """The coupon's discount (0 without one)."""
        return -sum(line.change_minor for line in self.lines if line.stage == "coupon")


def percent_of(amount_minor: int, basis_points: int) -> int:
    """`basis_points` of `amount_minor`, rounded half up in magnitude to a whole minor unit."""
    magnitude = (abs(amount_minor * basis_points) + BASIS_POINTS // 2) // BASIS_POINTS
    return magnitude if amount_minor * basis_points >= 0 else -magnitude


def _adjusted(price: int, rule: PriceRuleSpec) -> int:
    if rule.adjustment == Adjustment.SET:
        new = rule.value
    elif rule.adjustment == Adjustment.PERCENT:
        new = price + percent_of(price, rule.value)
    else:
        new = price + rule.value
    return max(0, new)


def _in_validity(at: datetime, valid_from: datetime | None, valid_until: datetime | None) -> bool:
    return (valid_from is None or valid_from <= at) and (valid_until is None or at < valid_until)


def in_window(local: datetime, start: time, end: time, weekdays: Sequence[int] | None) -> bool:
    """Whether a local wall-clock time lies in [start, end) on one of `weekdays` (of its local date).
    An end at or before the start wraps past midnight."""
    if weekdays is not None and local.isoweekday() not in weekdays:
        return False
    clock = local.time().replace(tzinfo=None)
    if start < end:
        return start <= clock < end
    return clock >= start or clock < end


def _matches(rule: PriceRuleSpec, ctx: PricingContext, local: datetime) -> bool:
    if not rule.active or not _in_validity(ctx.at, rule.valid_from, rule.valid_until):
        return False
    if rule.city_code is not None and rule.city_code != ctx.city_code:
        return False
    if rule.kind == RuleKind.BATTERY_MODEL:
        return rule.battery_model == ctx.battery_model
    if rule.kind in (RuleKind.PEAK, RuleKind.OFF_PEAK):
        if rule.start_local is None or rule.end_local is None:
            raise ValueError(f"price rule {rule.name!r} ({rule.kind}) has no time window")
        return in_window(local, rule.start_local, rule.end_local, rule.weekdays)
    if rule.kind == RuleKind.FIRST_SWAP_FREE:
        return ctx.completed_swaps == 0
    return True


def _pick(
    rules: Sequence[PriceRule], kinds: tuple[RuleKind, ...], ctx: PricingContext, local: datetime
) -> PriceRule | None:
    """The one rule of a stage that applies: city-specific first, then higher priority, then older."""
    matching = [rule for rule in rules if rule.kind in kinds and _matches(rule, ctx, local)]
    return min(matching, key=lambda r: (r.city_code is None, -r.priority, r.id), default=None)


def coupon_rejection(
    coupon: Coupon | None, ctx: PricingContext, usage: CouponUsage, price_minor: int
) -> CouponRejection | None:
    """Why `coupon` cannot discount a swap priced `price_minor` before it, or None if it can."""
    if coupon is None:
        return CouponRejection.UNKNOWN
    if not coupon.active:
        return CouponRejection.INACTIVE
    if coupon.valid_from is not None and ctx.at < coupon.valid_from:
        return CouponRejection.NOT_YET_VALID
    if coupon.valid_until is not None and ctx.at >= coupon.valid_until:
        return CouponRejection.EXPIRED
    if coupon.city_codes is not None and ctx.city_code not in coupon.city_codes:
        return CouponRejection.WRONG_CITY
    if coupon.battery_models is not None and ctx.battery_model not in coupon.battery_models:
        return CouponRejection.WRONG_BATTERY_MODEL
    if coupon.currency is not None and coupon.currency != ctx.currency:
        return CouponRejection.WRONG_CURRENCY
    if coupon.max_redemptions is not None and usage.total >= coupon.max_redemptions:
        return CouponRejection.EXHAUSTED
    if coupon.max_per_rider is not None and usage.by_rider >= coupon.max_per_rider:
        return CouponRejection.RIDER_LIMIT_REACHED
    if price_minor < coupon.min_price_minor:
        return CouponRejection.BELOW_MINIMUM_PRICE
    return None


def coupon_discount(coupon: Coupon, price_minor: int) -> int:
    """What the coupon takes off `price_minor`: its percentage or amount, capped, never more than the price."""
    discount = percent_of(price_minor, coupon.value) if coupon.kind == CouponKind.PERCENT else coupon.value
    if coupon.max_discount_minor is not None:
        discount = min(discount, coupon.max_discount_minor)
    return max(0, min(discount, price_minor))


def quote(
    ctx: PricingContext,
    rules: Sequence[PriceRule],
    *,
    coupon_code: str | None = None,
    coupon: Coupon | None = None,
    usage: CouponUsage | None = None,
) -> Quote:
    """Price one swap: the rules in their order, then the coupon the rider gave (`coupon_code`; `coupon`
    is the stored coupon of that code, None if there is none). A coupon that does not apply leaves the
    price as the rules made it and says why in `coupon_rejected`."""
    local = ctx.at.astimezone(ZoneInfo(ctx.timezone))
    lines: list[PriceLine] = []

    base = _pick(rules, (RuleKind.BASE,), ctx, local)
    price = _adjusted(ctx.city_price_minor, base) if base is not None else ctx.city_price_minor
    lines.append(
        PriceLine(
            stage=RuleKind.BASE,
            label=base.name if base else f"{ctx.city_code} swap price",
            change_minor=price,
            price_minor=price,
            rule_id=base.id if base else None,
        )
    )

    stages = ((RuleKind.BATTERY_MODEL,), (RuleKind.PEAK, RuleKind.OFF_PEAK), (RuleKind.FIRST_SWAP_FREE,))
    for kinds in stages:
        rule = _pick(rules, kinds, ctx, local)
        if rule is None:
            continue
        new = _adjusted(price, rule)
        lines.append(
            PriceLine(stage=rule.kind, label=rule.name, change_minor=new - price, price_minor=new, rule_id=rule.id)
        )
        price = new

    applied: str | None = None
    rejected: CouponRejection | None = None
    if coupon_code is not None:
        rejected = coupon_rejection(coupon, ctx, usage or CouponUsage(), price)
        if rejected is None:
            coupon = present(coupon, f"coupon {coupon_code}")  # an unknown code is rejected
            discount = coupon_discount(coupon, price)
            lines.append(
                PriceLine(
                    stage="coupon",
                    label=coupon.description or coupon.code,
                    change_minor=-discount,
                    price_minor=price - discount,
                    coupon_code=coupon.code,
                )
            )
            price -= discount
            applied = coupon.code
    return Quote(
        currency=ctx.currency,
        at=ctx.at,
        local_time=local.isoformat(),
        lines=tuple(lines),
        total_minor=price,
        coupon_code=applied,
        coupon_rejected=rejected,
    )


def without_coupon(priced: Quote, reason: CouponRejection) -> Quote:
    """The same quote with its coupon taken off again (it could not be redeemed), saying why."""
    lines = tuple(line for line in priced.lines if line.stage != "coupon")
    return priced.model_copy(
        update={"lines": lines, "total_minor": lines[-1].price_minor, "coupon_code": None, "coupon_rejected": reason}
    )
