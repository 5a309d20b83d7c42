"""Rider wallet endpoints: the balance; top-ups, which are payments through the rider's provider
(workflow `topup/<id>`, credited once the provider confirms); and finance's goodwill credits. Both
creations are idempotent by the request's Idempotency-Key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status

from swapflow.api.auth import Finance, RiderOrMoneyStaff, check_rider_access
from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep, answer_created
from swapflow.api.payment_schemas import (
    GoodwillCreate,
    GoodwillView,
    TopUpCreate,
    TopUpView,
    WalletEntryPage,
    WalletEntryView,
    WalletView,
)
from swapflow.api.problems import problem_responses
from swapflow.services import wallets

router = APIRouter(prefix="/v1/riders", tags=["wallets"])

IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=60)]
Limit = Annotated[int, Query(ge=1, le=200)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=40, description="The previous page's `next_cursor`.")]


@router.get("/{rider_id}/wallet", response_model=WalletView)
async def get_wallet(rider_id: str, session: SessionDep, principal: RiderOrMoneyStaff) -> WalletView:
    """A rider's prepaid balance (the rider's own, or ops' and finance's for riders of their cities)."""
    await check_rider_access(session, principal, rider_id, "rider", rider_id)
    wallet = await wallets.find_wallet(session, rider_id)
    return WalletView(rider_id=rider_id, currency=wallet.currency, balance_minor=wallet.balance_minor)


@router.get("/{rider_id}/wallet/entries", response_model=WalletEntryPage)
async def list_wallet_entries(
    rider_id: str, session: SessionDep, principal: RiderOrMoneyStaff, cursor: Cursor = None, limit: Limit = 50
) -> WalletEntryPage:
    """The wallet's movements, newest first, a page at a time (the rider's own, or money staff's for
    riders of their cities)."""
    await check_rider_access(session, principal, rider_id, "rider", rider_id)
    page = await wallets.wallet_entries(session, rider_id, cursor=cursor, limit=limit)
    return WalletEntryPage(
        items=[WalletEntryView.model_validate(entry) for entry in page.entries], next_cursor=page.next_cursor
    )


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
    async with db.sessions() as session:
        await check_rider_access(session, principal, rider_id, "rider", rider_id)
    top_up, created = await wallets.top_up(
        db, settings, temporal, rider_id=rider_id, amount_minor=body.amount_minor, idempotency_key=idempotency_key
    )
    answer_created(response, created)
    return TopUpView.of(top_up)


@router.get("/{rider_id}/wallet/top-ups/{top_up_id}", response_model=TopUpView)
async def get_top_up(rider_id: str, top_up_id: str, session: SessionDep, principal: RiderOrMoneyStaff) -> TopUpView:
    """A top-up and where it is: pending until the provider confirms, then succeeded (credited) or failed;
    while a WeChat Pay payment waits for the rider, what the app confirms it with (`client_params`)."""
    await check_rider_access(session, principal, rider_id, "top-up", top_up_id)
    top_up = await wallets.find_top_up(session, rider_id, top_up_id)
    return TopUpView.of(top_up, await wallets.top_up_confirmation(session, top_up))


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
        credit, created = await wallets.credit_goodwill(
            session,
            rider_id=rider_id,
            amount_minor=body.amount_minor,
            reason=body.reason,
            approved_by=principal.id,
            idempotency_key=idempotency_key,
        )
        view = GoodwillView.model_validate(credit)
    answer_created(response, created)
    return view
