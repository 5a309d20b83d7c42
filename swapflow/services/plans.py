"""Plans riders buy: the plans on sale in a city; a purchase, opened once per Idempotency-Key and collected
by workflow `plan_purchase/<id>`, which `start_plan_purchase` starts (the one place that says how); and
where a rider's plan stands (its period, the swaps used and left).

A rider buys one period at a time: the same plan again while a paid period runs extends it by a period;
another plan only once the current one has ended. One purchase per rider is pending at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.db.money import PlanPurchase, Subscription, SubscriptionPlan
from swapflow.db.network import City, Rider
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.errors import Conflict, NotFound
from swapflow.payments.confirmation import confirmation_params
from swapflow.payments.methods import lock_rider
from swapflow.payments.plans import PurchaseState, open_plan_purchase
from swapflow.payments.subscription import period_start, swaps_used
from swapflow.services.idempotency import create_once
from swapflow.services.temporal import TemporalConnector, connect, start_once
from swapflow.settings import Settings
from swapflow.workflows.plan_purchase import PlanPurchaseWorkflow
from swapflow.workflows.plan_purchase_contract import PlanPurchaseStart, plan_purchase_workflow_id

REFUSED = "Plan purchase refused"


def _on_sale_in(cities: list[City]) -> ColumnElement[bool]:
    """Plans on sale to riders of `cities`: the city's own, and network-wide ones in its currency."""
    return or_(
        *(
            or_(
                SubscriptionPlan.city_code == city.code,
                and_(SubscriptionPlan.city_code.is_(None), SubscriptionPlan.currency == city.currency),
            )
            for city in cities
        )
    )


async def list_plans(session: AsyncSession, cities: list[str] | None) -> list[SubscriptionPlan]:
    """The plans on sale to riders of `cities` (None: of every city), cheapest first."""
    query = select(SubscriptionPlan).where(SubscriptionPlan.for_sale)
    if cities is not None:
        found = list(await session.scalars(select(City).where(City.code.in_(cities))))
        if not found:
            return []
        query = query.where(_on_sale_in(found))
    return list(await session.scalars(query.order_by(SubscriptionPlan.price_minor, SubscriptionPlan.id)))


async def _plan_for(session: AsyncSession, rider: Rider, plan_id: str) -> SubscriptionPlan:
    """The plan, if on sale to the rider (NotFound otherwise: another city's plan does not exist for them)."""
    city = await session.get(City, rider.city_code)
    plan = await session.get(SubscriptionPlan, plan_id)
    if city is None or plan is None or not plan.for_sale:
        raise NotFound("plan", plan_id)
    if plan.city_code != city.code and not (plan.city_code is None and plan.currency == city.currency):
        raise NotFound("plan", plan_id)
    return plan


async def _check_may_buy(session: AsyncSession, rider_id: str, plan: SubscriptionPlan) -> None:
    """Conflict if the rider has a purchase pending, or a running plan this one may not follow now."""
    pending = await session.scalar(
        select(PlanPurchase.id).where(PlanPurchase.rider_id == rider_id, PlanPurchase.status == PurchaseState.PENDING)
    )
    if pending is not None:
        raise Conflict(REFUSED, f"plan purchase {pending!r} is still waiting for its payment")
    subscription = await session.get(Subscription, rider_id)
    if subscription is None or not subscription.active:
        return
    if subscription.paid_until is None:
        raise Conflict(REFUSED, f"rider {rider_id!r} is on plan {subscription.plan_id!r}, which has no end")
    if subscription.plan_id != plan.id and as_utc(subscription.paid_until) > utcnow():
        raise Conflict(
            REFUSED,
            f"rider {rider_id!r} is on plan {subscription.plan_id!r} until {as_utc(subscription.paid_until):%Y-%m-%d}"
            f"; another plan can be bought once it ends",
        )


async def open_rider_purchase(
    session: AsyncSession, *, rider_id: str, plan_id: str, idempotency_key: str
) -> tuple[PlanPurchase, bool]:
    """The rider's purchase under `idempotency_key`, opened now (pending) if new. Returns (purchase, created)."""

    async def find() -> PlanPurchase | None:
        return await session.scalar(
            select(PlanPurchase).where(
                PlanPurchase.rider_id == rider_id, PlanPurchase.idempotency_key == idempotency_key
            )
        )

    def differs(purchase: PlanPurchase) -> str | None:
        if purchase.plan_id != plan_id:
            return f"Idempotency-Key {idempotency_key!r} was used to buy plan {purchase.plan_id!r}"
        return None

    async def create() -> PlanPurchase:
        rider = await lock_rider(session, rider_id)  # purchases of one rider are opened one at a time
        if rider is None:
            raise NotFound("rider", rider_id)
        plan = await _plan_for(session, rider, plan_id)
        await _check_may_buy(session, rider_id, plan)
        return await open_plan_purchase(session, rider_id=rider_id, idempotency_key=idempotency_key, plan=plan)

    return await create_once(session, find=find, differs=differs, create=create, reused_title=REFUSED)


async def start_plan_purchase(temporal: TemporalConnector, settings: Settings, purchase: PlanPurchase) -> None:
    """Start the workflow that collects an opened purchase (once: a finished one is never started again).
    Unavailable while Temporal is unreachable; the purchase stays pending, and the same request starts it."""
    client = await connect(temporal, "Plan purchases unavailable")
    await start_once(
        client,
        PlanPurchaseWorkflow.run,
        PlanPurchaseStart(purchase_id=purchase.id, pending_timeout_s=settings.payments.payment_pending_timeout_s),
        workflow_id=plan_purchase_workflow_id(purchase.id),
        task_queue=settings.temporal.task_queue,
    )


async def buy_plan(
    db: Database,
    settings: Settings,
    temporal: TemporalConnector,
    *,
    rider_id: str,
    plan_id: str,
    idempotency_key: str,
) -> tuple[PlanPurchase, bool]:
    """Open the rider's purchase of a period of `plan_id` (once per key) and start collecting it: the plan
    runs only once the provider confirms the payment. Returns (purchase, created)."""
    async with db.transaction() as session:
        purchase, created = await open_rider_purchase(
            session, rider_id=rider_id, plan_id=plan_id, idempotency_key=idempotency_key
        )
    if purchase.status == PurchaseState.PENDING:
        await start_plan_purchase(temporal, settings, purchase)
    return purchase, created


async def find_purchase(session: AsyncSession, rider_id: str, purchase_id: str) -> PlanPurchase:
    """The rider's plan purchase, or NotFound."""
    found = await session.get(PlanPurchase, purchase_id)
    if found is None or found.rider_id != rider_id:
        raise NotFound("plan purchase", purchase_id)
    return found


async def purchase_confirmation(session: AsyncSession, purchase: PlanPurchase) -> dict[str, Any] | None:
    """While the purchase's payment waits for the rider: what their app confirms it with."""
    return await confirmation_params(session, purchase.payment_key)


@dataclass(frozen=True)
class PlanStanding:
    """Where a rider's plan stands now: its period (the last one, once it has ended) and its swaps."""

    plan: SubscriptionPlan
    status: str  # active | expired | inactive
    started_at: datetime
    paid_until: datetime | None
    period_start: datetime
    period_end: datetime
    swaps_used: int
    swaps_left: int


async def rider_plan(session: AsyncSession, rider_id: str) -> PlanStanding:
    """The rider's plan and its current period; NotFound for a rider without one."""
    subscription = await session.get(Subscription, rider_id)
    if subscription is None:
        if await session.get(Rider, rider_id) is None:
            raise NotFound("rider", rider_id)
        raise NotFound("subscription", rider_id, detail=f"rider {rider_id!r} has no plan")
    plan = await session.get(SubscriptionPlan, subscription.plan_id)
    if plan is None:
        raise RuntimeError(f"subscription of {rider_id!r} names plan {subscription.plan_id!r}, which is not stored")
    now = utcnow()
    paid_until = as_utc(subscription.paid_until) if subscription.paid_until is not None else None
    expired = paid_until is not None and now >= paid_until
    status = "expired" if expired else "active" if subscription.active else "inactive"
    at = paid_until - timedelta(microseconds=1) if expired and paid_until is not None else now
    start = period_start(subscription, plan, at)
    used = await swaps_used(session, rider_id, start)
    return PlanStanding(
        plan=plan,
        status=status,
        started_at=as_utc(subscription.started_at),
        paid_until=paid_until,
        period_start=start,
        period_end=start + timedelta(days=plan.period_days),
        swaps_used=used,
        swaps_left=max(0, plan.swaps_per_period - used) if status == "active" else 0,
    )
