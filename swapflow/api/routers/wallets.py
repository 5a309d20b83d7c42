"""Rider wallet endpoints: the balance; top-ups, which are payments through the rider's provider
(workflow `topup/<id>`, credited once the provider confirms); and finance's goodwill credits. Both
creations are idempotent by the request's Idempotency-Key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response, status
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from swapflow.api.auth import Finance, RiderOrMoneyStaff, check_rider_access
from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep
from swapflow.api.payment_schemas import GoodwillCreate, GoodwillView, TopUpCreate, TopUpView, WalletView
from swapflow.api.problems import Problem, problem_responses
from swapflow.db.money import Wallet, WalletTopUp
from swapflow.db.network import City, Rider
from swapflow.payments.topups import TopUpRefused, grant_goodwill, open_top_up
from swapflow.workflows.topup import TopUpWorkflow
from swapflow.workflows.topup_contract import TopUpStart, top_up_workflow_id

router = APIRouter(prefix="/v1/riders", tags=["wallets"])

IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=60)]


def top_up_view(top_up: WalletTopUp) -> TopUpView:
    return TopUpView.model_validate(
        {
            **{name: getattr(top_up, name) for name in TopUpView.model_fields if name != "workflow_id"},
            "workflow_id": top_up_workflow_id(top_up.id),
        }
    )


async def _rider_currency(session: AsyncSession, rider_id: str) -> str:
    rider = await session.get(Rider, rider_id)
    if rider is None:
        raise Problem(404, "Unknown rider", f"no rider {rider_id!r}")
    city = await session.get(City, rider.city_code)
    assert city is not None
    return city.currency


@router.get("/{rider_id}/wallet", response_model=WalletView)
async def get_wallet(rider_id: str, session: SessionDep, principal: RiderOrMoneyStaff) -> WalletView:
    """A rider's prepaid balance (the rider's own, or ops' and finance's for riders of their cities)."""
    await check_rider_access(session, principal, rider_id, "rider", rider_id)
    wallet = await session.get(Wallet, rider_id)
    if wallet is None:
        if await session.get(Rider, rider_id) is None:
            raise Problem(404, "Unknown rider", f"no rider {rider_id!r}")
        raise Problem(404, "No wallet", f"rider {rider_id!r} has never topped up")
    return WalletView(rider_id=rider_id, currency=wallet.currency, balance_minor=wallet.balance_minor)


@router.post(
    "/{rider_id}/wallet/top-ups",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TopUpView,
    responses={
        200: {"model": TopUpView, "description": "The top-up this Idempotency-Key already opened"},
        **problem_responses(409, 503),
    },
)
async def create_top_up(
    rider_id: str,
    body: TopUpCreate,
    response: Response,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    principal: RiderOrMoneyStaff,
    idempotency_key: IdempotencyKey,
) -> TopUpView:
    """Top the wallet up by a payment through the rider's provider (their WeChat Pay or Stripe method, else
    the sandbox), in their city's currency. Answers at once with the top-up pending: the wallet is
    credited only when the provider confirms the payment (follow it with GET). The same Idempotency-Key
    opens one top-up."""
    async with db.transaction() as session:
        await check_rider_access(session, principal, rider_id, "rider", rider_id)
        currency = await _rider_currency(session, rider_id)
        try:
            top_up, created = await open_top_up(
                session,
                rider_id=rider_id,
                idempotency_key=idempotency_key,
                amount_minor=body.amount_minor,
                currency=currency,
            )
        except TopUpRefused as refused:
            raise Problem(409, "Top-up refused", str(refused)) from None
    try:
        client = await temporal()
    except RuntimeError as exc:
        # The top-up is kept, pending: the same request starts its workflow once Temporal is back.
        raise Problem(503, "Top-ups unavailable", f"workflow service unreachable: {exc}") from exc
    try:
        await client.start_workflow(
            TopUpWorkflow.run,
            TopUpStart(top_up_id=top_up.id, pending_timeout_s=settings.payment_pending_timeout_s),
            id=top_up_workflow_id(top_up.id),
            task_queue=settings.temporal_task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        pass  # already ran to the end
    if not created:
        response.status_code = status.HTTP_200_OK
    return top_up_view(top_up)


@router.get("/{rider_id}/wallet/top-ups/{top_up_id}", response_model=TopUpView)
async def get_top_up(rider_id: str, top_up_id: str, session: SessionDep, principal: RiderOrMoneyStaff) -> TopUpView:
    """A top-up and where it is: pending until the provider confirms, then succeeded (credited) or failed."""
    await check_rider_access(session, principal, rider_id, "top-up", top_up_id)
    top_up = await session.get(WalletTopUp, top_up_id)
    if top_up is None or top_up.rider_id != rider_id:
        raise Problem(404, "Unknown top-up", f"no top-up {top_up_id!r}")
    return top_up_view(top_up)


@router.post(
    "/{rider_id}/wallet/goodwill-credits",
    status_code=status.HTTP_201_CREATED,
    response_model=GoodwillView,
    responses={
        200: {"model": GoodwillView, "description": "The credit this Idempotency-Key already made"},
        **problem_responses(409),
    },
)
async def create_goodwill_credit(
    rider_id: str,
    body: GoodwillCreate,
    response: Response,
    db: DatabaseDep,
    principal: Finance,
    idempotency_key: IdempotencyKey,
) -> GoodwillView:
    """Finance credits a rider of their cities without a payment, with a reason; the caller is recorded as
    its approver and the money comes from the goodwill ledger account."""
    async with db.transaction() as session:
        await check_rider_access(session, principal, rider_id, "rider", rider_id)
        currency = await _rider_currency(session, rider_id)
        try:
            credit, created = await grant_goodwill(
                session,
                rider_id=rider_id,
                idempotency_key=idempotency_key,
                amount_minor=body.amount_minor,
                currency=currency,
                reason=body.reason,
                approved_by=principal.id,
            )
        except TopUpRefused as refused:
            raise Problem(409, "Credit refused", str(refused)) from None
        view = GoodwillView.model_validate(credit)
    if not created:
        response.status_code = status.HTTP_200_OK
    return view
