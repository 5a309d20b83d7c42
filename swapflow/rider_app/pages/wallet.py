"""The rider's money: the balance and a top-up (the same service as `POST /v1/riders/{id}/wallet/top-ups`:
a payment through the rider's provider, credited once it confirms; once per form, so a double tap pays
once), the last top-ups; how they pay (their methods, the default, WeChat Pay bound, a card saved through
Stripe.js and recorded once Stripe says it succeeded); and their plan, or a plan to buy (collected as a
top-up is, running once the provider confirms)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep
from swapflow.db.network import Rider
from swapflow.domain.errors import Conflict, DomainError, NotFound
from swapflow.rider_app.rendering import PREFIX, render
from swapflow.rider_app.session import RiderUser
from swapflow.services import payment_methods, plans, rider_app, wallets
from swapflow.services.plans import PlanStanding
from swapflow.settings import Settings

router = APIRouter()

RECENT_TOP_UPS = 5
MethodId = Annotated[str, Path(min_length=1, max_length=40)]


async def _plan(session: SessionDep, rider_id: str) -> PlanStanding | None:
    try:
        return await plans.rider_plan(session, rider_id)
    except NotFound:
        return None


async def _wallet_page(
    request: Request,
    rider: RiderUser,
    session: SessionDep,
    settings: Settings,
    *,
    error: str | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    currency, choices = await rider_app.top_up_choices(session, rider.id)
    wallet = await rider_app.wallet_of(session, rider.id)
    profile = await session.get(Rider, rider.id)
    if profile is None:
        raise NotFound("rider", rider.id)
    methods = await payment_methods.list_methods(session, rider.id)
    plan = await _plan(session, rider.id)
    # Plans on sale in the rider's city, while theirs is not running.
    for_sale = [] if plan and plan.status == "active" else await plans.list_plans(session, [profile.city_code])
    context = {
        "section": "wallet",
        "currency": currency,
        "balance_minor": wallet.balance_minor if wallet else 0,
        "choices": choices,
        "top_ups": await rider_app.recent_top_ups(session, rider.id, RECENT_TOP_UPS),
        "plan": plan,
        "plans": for_sale,
        "methods": methods,
        "wechat_bindable": profile.wechat_openid is not None and all(m.method != "wechat" for m in methods),
        "cards": bool(settings.stripe.api_key and settings.stripe.publishable_key),
        # The Idempotency-Keys: one per form shown.
        "top_up_token": secrets.token_urlsafe(18),
        "plan_token": secrets.token_urlsafe(18),
        "error": error,
    }
    return render(request, "wallet.html", context, rider=rider, status_code=status_code)


async def _refused(
    request: Request, rider: RiderUser, db: DatabaseDep, settings: Settings, error: DomainError
) -> HTMLResponse:
    async with db.sessions() as session:
        return await _wallet_page(request, rider, session, settings, error=error.detail, status_code=409)


def _back() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/wallet", status_code=303)


@router.get("/wallet", response_class=HTMLResponse)
async def wallet(request: Request, rider: RiderUser, session: SessionDep, settings: SettingsDep) -> HTMLResponse:
    return await _wallet_page(request, rider, session, settings)


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
        return await _refused(request, rider, db, settings, refused)
    return _back()


@router.post("/wallet/methods/wechat")
async def bind_wechat(request: Request, rider: RiderUser, db: DatabaseDep, settings: SettingsDep) -> Response:
    """Pay with the WeChat account the rider signed in with."""
    try:
        await payment_methods.bind_wechat(db, settings, rider.id)
    except DomainError as refused:
        return await _refused(request, rider, db, settings, refused)
    return _back()


@router.post("/wallet/methods/{method_id}/default")
async def make_default(rider: RiderUser, db: DatabaseDep, method_id: MethodId) -> Response:
    await payment_methods.set_default(db, rider.id, method_id)
    return _back()


@router.post("/wallet/methods/{method_id}/remove")
async def remove_method(rider: RiderUser, db: DatabaseDep, settings: SettingsDep, method_id: MethodId) -> Response:
    await payment_methods.remove(db, settings, rider.id, method_id)
    return _back()


@router.get("/wallet/cards/new", response_class=HTMLResponse)
async def new_card(request: Request, rider: RiderUser, db: DatabaseDep, settings: SettingsDep) -> HTMLResponse:
    """The card form: a SetupIntent made for the rider, confirmed in the browser by Stripe.js (the card's
    number goes to Stripe only)."""
    setup = await payment_methods.start_card_setup(db, settings, rider.id)
    context = {"section": "wallet", "setup": setup, "stripe_js": settings.stripe.js_url}
    return render(request, "card.html", context, rider=rider)


@router.post("/wallet/cards")
async def save_card(
    request: Request,
    rider: RiderUser,
    db: DatabaseDep,
    settings: SettingsDep,
    setup_intent_id: Annotated[str, Form(min_length=1, max_length=80)],
) -> Response:
    """Record the card once Stripe says its SetupIntent succeeded (the page's word is not taken)."""
    try:
        await payment_methods.save_card(db, settings, rider.id, setup_intent_id)
    except DomainError as refused:
        return await _refused(request, rider, db, settings, refused)
    return _back()


@router.post("/wallet/plans")
async def buy_plan(
    request: Request,
    rider: RiderUser,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    plan_id: Annotated[str, Form(min_length=1, max_length=40)],
    plan_token: Annotated[str, Form(min_length=16, max_length=50)],
) -> Response:
    """Buy a period of a plan: it runs once the provider confirms the payment."""
    try:
        await plans.buy_plan(
            db, settings, temporal, rider_id=rider.id, plan_id=plan_id, idempotency_key=f"app:{plan_token}"
        )
    except DomainError as refused:
        return await _refused(request, rider, db, settings, refused)
    return _back()
