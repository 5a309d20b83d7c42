"""The rider's wallet and plan: the balance, a top-up (the same service as `POST
/v1/riders/{id}/wallet/top-ups`: a payment through the rider's provider, credited once it confirms;
once per form, so a double tap pays once), the last top-ups, and the plan's swaps left this period."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep
from swapflow.domain.clock import utcnow
from swapflow.domain.errors import Conflict
from swapflow.rider_app.rendering import PREFIX, render
from swapflow.rider_app.session import RiderUser
from swapflow.services import rider_app, wallets

router = APIRouter()

RECENT_TOP_UPS = 5


async def _wallet_page(
    request: Request, rider: RiderUser, session: SessionDep, *, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    currency, choices = await rider_app.top_up_choices(session, rider.id)
    wallet = await rider_app.wallet_of(session, rider.id)
    context = {
        "section": "wallet",
        "currency": currency,
        "balance_minor": wallet.balance_minor if wallet else 0,
        "choices": choices,
        "top_ups": await rider_app.recent_top_ups(session, rider.id, RECENT_TOP_UPS),
        "plan": await rider_app.rider_plan(session, rider.id, utcnow()),
        # The top-up's Idempotency-Key: one per form shown.
        "top_up_token": secrets.token_urlsafe(18),
        "error": error,
    }
    return render(request, "wallet.html", context, rider=rider, status_code=status_code)


@router.get("/wallet", response_class=HTMLResponse)
async def wallet(request: Request, rider: RiderUser, session: SessionDep) -> HTMLResponse:
    return await _wallet_page(request, rider, session)


@router.post("/wallet/top-ups")
async def top_up(
    request: Request,
    rider: RiderUser,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    amount_minor: Annotated[int, Form(gt=0, le=10_000_000)],
    top_up_token: Annotated[str, Form(min_length=16, max_length=50)],
) -> Response:
    """Open the top-up and start collecting it; the wallet page shows it pending until the provider confirms."""
    try:
        await wallets.top_up(
            db, settings, temporal, rider_id=rider.id, amount_minor=amount_minor, idempotency_key=f"app:{top_up_token}"
        )
    except Conflict as refused:
        async with db.sessions() as session:
            return await _wallet_page(request, rider, session, error=refused.detail, status_code=409)
    return RedirectResponse(f"{PREFIX}/wallet", status_code=303)
