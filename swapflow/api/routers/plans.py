"""Plans riders buy: the plans on sale, a rider buying a period of one (a payment through their provider,
workflow `plan_purchase/<id>`; the plan runs once the provider confirms it), and where their plan stands."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from swapflow.api.auth import RiderOnly, RiderOrMoneyStaff, check_own, check_rider_access
from swapflow.api.deps import DatabaseDep, IdempotencyKey, SessionDep, SettingsDep, TemporalDep, answer_created
from swapflow.api.payment_schemas import PlanPurchaseCreate, PlanPurchaseView, PlanView, SubscriptionView
from swapflow.api.problems import problem_responses
from swapflow.services import plans

router = APIRouter(tags=["plans"])


@router.get("/v1/plans", response_model=list[PlanView])
async def list_plans(
    session: SessionDep,
    principal: RiderOrMoneyStaff,
    city: Annotated[str | None, Query(min_length=1, max_length=16, description="A city code.")] = None,
) -> list[PlanView]:
    """The plans on sale to riders of `city` (a rider: their own city), cheapest first."""
    cities = principal.visible_cities(city)
    return [PlanView.model_validate(plan) for plan in await plans.list_plans(session, cities)]


@router.post(
    "/v1/riders/{rider_id}/subscriptions",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=PlanPurchaseView,
    responses={
        200: {"model": PlanPurchaseView, "description": "The purchase this Idempotency-Key already opened"},
        **problem_responses(409, 503),
    },
)
async def buy_plan(
    rider_id: str,
    body: PlanPurchaseCreate,
    response: Response,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    principal: RiderOnly,
    idempotency_key: IdempotencyKey,
) -> PlanPurchaseView:
    """Buy a period of a plan on sale in the rider's city, paid through their provider (their default
    WeChat Pay or Stripe method, else their newest one, else the sandbox). Answers at once with the
    purchase pending: the plan runs only once the provider confirms the payment (follow it with GET). The
    same plan again while a paid period runs adds a period; another plan is a 409 until the current one
    ends. The same Idempotency-Key opens one purchase."""
    check_own(principal, rider_id)
    purchase, created = await plans.buy_plan(
        db, settings, temporal, rider_id=rider_id, plan_id=body.plan_id, idempotency_key=idempotency_key
    )
    answer_created(response, created)
    return PlanPurchaseView.of(purchase)


@router.get("/v1/riders/{rider_id}/subscriptions/{purchase_id}", response_model=PlanPurchaseView)
async def get_purchase(
    rider_id: str, purchase_id: str, session: SessionDep, principal: RiderOrMoneyStaff
) -> PlanPurchaseView:
    """A plan purchase and where it is: pending until the provider confirms, then succeeded (the plan runs)
    or failed; while a WeChat Pay payment waits for the rider, what the app confirms it with."""
    await check_rider_access(session, principal, rider_id, "plan purchase", purchase_id)
    purchase = await plans.find_purchase(session, rider_id, purchase_id)
    return PlanPurchaseView.of(purchase, await plans.purchase_confirmation(session, purchase))


@router.get("/v1/riders/{rider_id}/subscription", response_model=SubscriptionView)
async def get_subscription(rider_id: str, session: SessionDep, principal: RiderOrMoneyStaff) -> SubscriptionView:
    """The rider's plan: its current period (the last, once its paid periods are over), swaps used and left."""
    await check_rider_access(session, principal, rider_id, "rider", rider_id)
    standing = await plans.rider_plan(session, rider_id)
    return SubscriptionView(
        plan=PlanView.model_validate(standing.plan),
        status=standing.status,
        started_at=standing.started_at,
        paid_until=standing.paid_until,
        period_start=standing.period_start,
        period_end=standing.period_end,
        swaps_used=standing.swaps_used,
        swaps_left=standing.swaps_left,
    )
