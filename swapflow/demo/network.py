"""Seed the demo network: cities, stations, cabinets with slots, batteries in slots and riders' hands,
and the partners who earn commissions on its swaps."""

from __future__ import annotations

import random
from dataclasses import dataclass

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from swapflow.db.money import (
    GoodwillCredit,
    LedgerPosting,
    LedgerTransaction,
    RiderPaymentMethod,
    Subscription,
    SubscriptionPlan,
    Wallet,
    WalletEntry,
)
from swapflow.db.network import Battery, Cabinet, City, Rider, Slot, Station
from swapflow.db.swaps import CustodyEvent
from swapflow.demo.partners import seed_demo_partners
from swapflow.demo.pricing import seed_demo_pricing
from swapflow.domain.checks import present
from swapflow.domain.clock import utcnow
from swapflow.domain.network import BatteryStatus, CabinetCapability, CabinetProtocol, CustodianKind, slot_ref
from swapflow.payments.ledger import GOODWILL, provider_clearing, subscription_account, wallet_account
from swapflow.settings import get_settings


@dataclass(frozen=True)
class DemoCity:
    code: str
    name: str
    timezone: str
    currency: str
    swap_price_minor: int
    lat: float
    lon: float


DEMO_CITIES = (
    DemoCity("SH", "Shanghai", "Asia/Shanghai", "CNY", 600, 31.2304, 121.4737),
    DemoCity("SZ", "Shenzhen", "Asia/Shanghai", "CNY", 550, 22.5431, 114.0579),
    DemoCity("HZ", "Hangzhou", "Asia/Shanghai", "CNY", 500, 30.2741, 120.1551),
    DemoCity("BER", "Berlin", "Europe/Berlin", "EUR", 299, 52.5200, 13.4050),
)

BATTERY_MODEL = "LFP-60V-32Ah"


def _battery(rng: random.Random, serial: str, soc: float, kind: CustodianKind, ref: str) -> Battery:
    return Battery(
        serial=serial,
        model=BATTERY_MODEL,
        chemistry="LFP",
        rated_capacity_mah=32_000,
        soc=soc,
        soh=round(rng.uniform(82, 99), 1),
        voltage_v=round(54.0 + 13.0 * soc / 100, 2),
        temperature_c=round(rng.uniform(22, 30), 1),
        cycle_count=rng.randint(10, 900),
        status=BatteryStatus.IN_SERVICE,
        custodian_kind=kind,
        custodian_ref=ref,
    )


def seed_demo_network(
    engine: Engine,
    *,
    stations_per_city: int = 8,
    cabinets_per_station: int = 1,
    slots_per_cabinet: int = 12,
    empty_slots_per_cabinet: int = 3,
    riders_per_city: int = 40,
    command_only_share: float = 0.125,
    tower_share: float = 0.0,
    seed: int = 7,
    demo_pricing: bool = True,
    demo_partners: bool = True,
    settlement_minutes: int | None = None,
) -> bool:
    """Fill an empty database with the demo network (with `demo_pricing`, its demo price rules and
    coupons too; with `demo_partners`, its commission partners, who settle every `settlement_minutes`,
    by default the setting `settlement.demo_cadence_minutes`). Returns False (and changes nothing) when the database
    already holds cities, so `swapflow up` can call it on every start. `tower_share` of the reporting
    cabinets speak the tower protocol (through the gateway)."""
    rng = random.Random(seed)
    # Its own stream: the rest of the network comes out the same whatever the tower share.
    tower_rng = random.Random(seed + 1)
    with Session(engine) as session, session.begin():
        if session.scalar(select(func.count()).select_from(City)):
            return False
        battery_no = 0
        for c in DEMO_CITIES:
            session.add(
                City(
                    code=c.code,
                    name=c.name,
                    timezone=c.timezone,
                    currency=c.currency,
                    swap_price_minor=c.swap_price_minor,
                )
            )
            for s in range(1, stations_per_city + 1):
                station = Station(
                    id=f"st-{c.code.lower()}-{s:03d}",
                    city_code=c.code,
                    name=f"{c.name} station {s}",
                    lat=round(c.lat + rng.uniform(-0.08, 0.08), 6),
                    lon=round(c.lon + rng.uniform(-0.08, 0.08), 6),
                )
                session.add(station)
                for k in range(1, cabinets_per_station + 1):
                    cabinet_id = f"cab-{c.code.lower()}-{s:03d}-{k}"
                    command_only = rng.random() < command_only_share
                    tower = tower_rng.random() < tower_share and not command_only
                    session.add(
                        Cabinet(
                            id=cabinet_id,
                            station_id=station.id,
                            model="SC-12",
                            slot_count=slots_per_cabinet,
                            capability=CabinetCapability.COMMAND_ONLY if command_only else CabinetCapability.REPORTING,
                            online=False,
                            firmware="1.4.2",
                            protocol=CabinetProtocol.TOWER if tower else CabinetProtocol.V1,
                        )
                    )
                    for n in range(1, slots_per_cabinet + 1):
                        serial = None
                        if n <= slots_per_cabinet - empty_slots_per_cabinet:
                            battery_no += 1
                            serial = f"BAT{battery_no:07d}"
                            soc = 100.0 if rng.random() < 0.75 else round(rng.uniform(30, 85), 1)
                            session.add(_battery(rng, serial, soc, CustodianKind.SLOT, slot_ref(cabinet_id, n)))
                        session.add(
                            Slot(cabinet_id=cabinet_id, slot_no=n, battery_serial=serial, charging=serial is not None)
                        )
            for r in range(1, riders_per_city + 1):
                rider_id = f"rider-{c.code.lower()}-{r:04d}"
                session.add(Rider(id=rider_id, name=f"Rider {c.code}-{r}", city_code=c.code))
                battery_no += 1
                serial = f"BAT{battery_no:07d}"
                session.add(_battery(rng, serial, round(rng.uniform(5, 35), 1), CustodianKind.RIDER, rider_id))
        if demo_pricing:
            seed_demo_pricing(session, (c.code for c in DEMO_CITIES))
        session.flush()
        _seed_payment_methods(session)
        if demo_partners:
            seed_demo_partners(
                session, cadence_minutes=settlement_minutes or get_settings().settlement.demo_cadence_minutes
            )
        for battery in session.scalars(select(Battery)):
            session.add(
                CustodyEvent(
                    key=f"commission:{battery.serial}",
                    battery_serial=battery.serial,
                    from_kind=CustodianKind.OPS,
                    from_ref="warehouse",
                    to_kind=battery.custodian_kind,
                    to_ref=battery.custodian_ref,
                    reason="commissioned",
                )
            )
    return True


DEMO_WALLET_TOPUP = 20  # swaps' worth of balance a demo wallet rider starts with


def demo_payment_method(rider_no: int) -> str:
    """How demo rider number `rider_no` pays: mostly the sandbox (the embedded default), every tenth a
    wallet and every tenth a subscription (riders 7, 17, ... and 8, 18, ...)."""
    return {7: "wallet", 8: "subscription"}.get(rider_no % 10, "sandbox")


def _seed_payment_methods(session: Session) -> None:
    """Wallet riders get a balance (a goodwill credit), subscription riders a plan, both booked in the ledger."""
    plans: dict[str, SubscriptionPlan] = {}
    for city in session.scalars(select(City)):
        plan = SubscriptionPlan(
            id=f"plan-{city.code.lower()}-60",
            name=f"{city.name}: 60 swaps a month",
            swaps_per_period=60,
            period_days=30,
            price_minor=city.swap_price_minor * 50,
            currency=city.currency,
            city_code=city.code,
            for_sale=True,
        )
        session.add(plan)
        plans[city.code] = plan
    session.flush()
    for rider in session.scalars(select(Rider).order_by(Rider.id)):
        method = demo_payment_method(int(rider.id.rsplit("-", 1)[-1]))
        if method != "sandbox":  # a rider without a default method pays by the sandbox
            label = plans[rider.city_code].name if method == "subscription" else "Wallet"
            session.add(
                RiderPaymentMethod(
                    id=f"rpm_seed_{rider.id}"[:40], rider_id=rider.id, method=method, label=label, is_default=True
                )
            )
        home = present(session.get(City, rider.city_code), f"city {rider.city_code} of rider {rider.id}")
        if method == "wallet":
            # A demo balance is a goodwill credit: money into a wallet is a payment or finance's gift.
            amount, credit_id = home.swap_price_minor * DEMO_WALLET_TOPUP, f"gw_seed_{rider.id}"[:40]
            key = f"wallet:{rider.id}:goodwill:{credit_id}"
            session.add(
                GoodwillCredit(
                    id=credit_id,
                    rider_id=rider.id,
                    idempotency_key="seed",
                    amount_minor=amount,
                    currency=home.currency,
                    reason="demo balance",
                    approved_by="seed",
                )
            )
            _book(
                session,
                key=key,
                kind="wallet_goodwill",
                currency=home.currency,
                debit=GOODWILL,
                credit=wallet_account(rider.id),
                amount=amount,
            )
            session.add(Wallet(rider_id=rider.id, currency=home.currency, balance_minor=amount))
            session.add(
                WalletEntry(
                    id=f"wal_seed_{rider.id}"[:40],
                    key=key,
                    rider_id=rider.id,
                    kind="goodwill",
                    currency=home.currency,
                    amount_minor=amount,
                    payment_key=f"goodwill:{credit_id}",
                )
            )
        elif method == "subscription":
            plan = plans[rider.city_code]
            _book(
                session,
                key=f"subscription:{rider.id}:{plan.id}:sale",
                kind="subscription_sale",
                currency=plan.currency,
                debit=provider_clearing("subscription_sales"),
                credit=subscription_account(rider.id),
                amount=plan.price_minor,
            )
            session.add(Subscription(rider_id=rider.id, plan_id=plan.id, started_at=utcnow(), active=True))


def _book(session: Session, *, key: str, kind: str, currency: str, debit: str, credit: str, amount: int) -> None:
    transaction = LedgerTransaction(key=key, kind=kind, memo="demo seed")
    session.add(transaction)
    session.flush()
    session.add_all(
        [
            LedgerPosting(transaction_id=transaction.id, account=debit, amount_minor=amount, currency=currency),
            LedgerPosting(transaction_id=transaction.id, account=credit, amount_minor=-amount, currency=currency),
        ]
    )
