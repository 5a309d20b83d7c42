"""Rider wallet endpoints: the balance, and top-ups (idempotent by the request's Idempotency-Key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response, status

from swapflow.api.auth import RiderOrMoneyStaff, check_rider_access
from swapflow.api.deps import DatabaseDep, SessionDep
from swapflow.api.payment_schemas import TopUpCreate, TopUpView, WalletView
from swapflow.api.problems import Problem, problem_responses
from swapflow.db.models import City, Rider, Wallet
from swapflow.payments.provider import ProviderDeclined
from swapflow.payments.wallet import top_up

router = APIRouter(prefix="/v1/riders", tags=["wallets"])


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


@router.post("/{rider_id}/wallet/top-ups", status_code=status.HTTP_201_CREATED, response_model=TopUpView,
             responses={200: {"model": TopUpView, "description": "The top-up this Idempotency-Key already made"},
                        **problem_responses(409)})
async def create_top_up(
    rider_id: str,
    body: TopUpCreate,
    response: Response,
    db: DatabaseDep,
    principal: RiderOrMoneyStaff,
    idempotency_key: Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=60)],
) -> TopUpView:
    """Credit the rider's wallet, in their city's currency; the same Idempotency-Key credits it once."""
    async with db.transaction() as session:
        await check_rider_access(session, principal, rider_id, "rider", rider_id)
        rider = await session.get(Rider, rider_id)
        if rider is None:
            raise Problem(404, "Unknown rider", f"no rider {rider_id!r}")
        city = await session.get(City, rider.city_code)
        assert city is not None
        try:
            wallet, entry, created = await top_up(session, rider_id=rider_id, idempotency_key=idempotency_key,
                                                  amount_minor=body.amount_minor, currency=city.currency)
        except ProviderDeclined as refused:
            raise Problem(409, "Top-up refused", str(refused)) from None
        if not created and entry.amount_minor != body.amount_minor:
            raise Problem(409, "Idempotency-Key reused",
                          f"Idempotency-Key {idempotency_key!r} was used for a top-up of {entry.amount_minor}")
        view = TopUpView(rider_id=rider_id, entry_id=entry.id, amount_minor=entry.amount_minor,
                         currency=entry.currency, balance_minor=wallet.balance_minor)
    if not created:
        response.status_code = status.HTTP_200_OK
    return view
