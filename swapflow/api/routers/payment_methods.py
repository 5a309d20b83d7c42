"""A rider's payment methods: the rider lists, adds (their WeChat Pay, a card saved with Stripe, their
wallet), chooses the default of and removes their own; money staff of the rider's city read them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from swapflow.api.auth import RiderOnly, RiderOrMoneyStaff, check_own, check_rider_access
from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, answer_created
from swapflow.api.payment_schemas import CardSave, CardSetupView, PaymentMethodView
from swapflow.api.problems import problem_responses
from swapflow.services import payment_methods

router = APIRouter(prefix="/v1/riders", tags=["payment methods"])


ADDED: dict[int | str, dict[str, Any]] = {
    200: {"model": PaymentMethodView, "description": "The rider already had this method"},
}


@router.get("/{rider_id}/payment-methods", response_model=list[PaymentMethodView])
async def list_payment_methods(
    rider_id: str, session: SessionDep, principal: RiderOrMoneyStaff
) -> list[PaymentMethodView]:
    """The rider's payment methods, the default first (none: the rider pays by the sandbox)."""
    await check_rider_access(session, principal, rider_id, "rider", rider_id)
    return [PaymentMethodView.model_validate(row) for row in await payment_methods.list_methods(session, rider_id)]


@router.post(
    "/{rider_id}/payment-methods/wechat",
    status_code=status.HTTP_201_CREATED,
    response_model=PaymentMethodView,
    responses=ADDED,
)
async def bind_wechat(
    rider_id: str, response: Response, db: DatabaseDep, settings: SettingsDep, principal: RiderOnly
) -> PaymentMethodView:
    """Pay by WeChat Pay as the WeChat user the rider signed in as; 422 (`reason` no_wechat_openid) for a
    rider who did not sign in with WeChat. The default if the rider had none."""
    check_own(principal, rider_id)
    row, added = await payment_methods.bind_wechat(db, settings, rider_id)
    answer_created(response, added)
    return PaymentMethodView.model_validate(row)


@router.post(
    "/{rider_id}/payment-methods/wallet",
    status_code=status.HTTP_201_CREATED,
    response_model=PaymentMethodView,
    responses=ADDED,
)
async def use_wallet(rider_id: str, response: Response, db: DatabaseDep, principal: RiderOnly) -> PaymentMethodView:
    """Pay swaps from the prepaid wallet (filled by top-ups). The default if the rider had none."""
    check_own(principal, rider_id)
    row, added = await payment_methods.use_wallet(db, rider_id)
    answer_created(response, added)
    return PaymentMethodView.model_validate(row)


@router.post(
    "/{rider_id}/payment-methods/stripe/setup-intents",
    status_code=status.HTTP_201_CREATED,
    response_model=CardSetupView,
    responses=problem_responses(503),
)
async def start_card_setup(
    rider_id: str, db: DatabaseDep, settings: SettingsDep, principal: RiderOnly
) -> CardSetupView:
    """Start saving a card: a Stripe SetupIntent on the rider's Stripe Customer (made on first use), for
    the page to confirm with Stripe.js."""
    check_own(principal, rider_id)
    setup = await payment_methods.start_card_setup(db, settings, rider_id)
    return CardSetupView(
        setup_intent_id=setup.setup_intent_id, client_secret=setup.client_secret, publishable_key=setup.publishable_key
    )


@router.post(
    "/{rider_id}/payment-methods/stripe",
    status_code=status.HTTP_201_CREATED,
    response_model=PaymentMethodView,
    responses={**ADDED, **problem_responses(409, 503)},
)
async def save_card(
    rider_id: str, body: CardSave, response: Response, db: DatabaseDep, settings: SettingsDep, principal: RiderOnly
) -> PaymentMethodView:
    """Record the card of a confirmed SetupIntent, as Stripe reports it: 409 until Stripe says it
    succeeded. The default if the rider had none."""
    check_own(principal, rider_id)
    row, added = await payment_methods.save_card(db, settings, rider_id, body.setup_intent_id)
    answer_created(response, added)
    return PaymentMethodView.model_validate(row)


@router.put(
    "/{rider_id}/payment-methods/{method_id}/default",
    response_model=PaymentMethodView,
)
async def set_default(rider_id: str, method_id: str, db: DatabaseDep, principal: RiderOnly) -> PaymentMethodView:
    """Charge the rider's swaps, top-ups and plans through this method from now on."""
    check_own(principal, rider_id)
    return PaymentMethodView.model_validate(await payment_methods.set_default(db, rider_id, method_id))


@router.delete(
    "/{rider_id}/payment-methods/{method_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
)
async def remove(rider_id: str, method_id: str, db: DatabaseDep, settings: SettingsDep, principal: RiderOnly) -> None:
    """Remove a method (a card is detached at Stripe too); if it was the default, the newest remaining one
    becomes it."""
    check_own(principal, rider_id)
    await payment_methods.remove(db, settings, rider_id, method_id)
