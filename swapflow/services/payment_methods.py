"""A rider's payment methods: listing them, binding the WeChat openid they signed in with, saving a card
with Stripe (a SetupIntent the rider's page confirms with Stripe.js; the card is recorded only once Stripe
itself says the SetupIntent succeeded), paying from the wallet, choosing the default, removing one.

Every function takes the database (or a session), the settings where a provider is asked, and the
rider's id; it says no with the errors of `domain/errors.py`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.db.money import RiderPaymentMethod, StripeCustomer
from swapflow.db.network import Rider
from swapflow.domain.errors import Conflict, NotFound, Refused, Unavailable
from swapflow.payments.methods import active_methods, add_method, lock_rider, make_default, remove_method
from swapflow.payments.provider import PaymentMethod, ProviderDeclined, ProviderError
from swapflow.payments.stripe_cards import StripeCards
from swapflow.settings import Settings

log = logging.getLogger(__name__)

WECHAT_LABEL, WALLET_LABEL = "WeChat Pay", "Wallet"


@dataclass(frozen=True)
class CardSetup:
    """What the rider's page confirms a new card with (Stripe.js `confirmCardSetup`)."""

    setup_intent_id: str
    client_secret: str
    publishable_key: str


async def _rider(session: AsyncSession, rider_id: str, *, locked: bool = False) -> Rider:
    rider = await lock_rider(session, rider_id) if locked else await session.get(Rider, rider_id)
    if rider is None:
        raise NotFound("rider", rider_id)
    return rider


async def _own_method(session: AsyncSession, rider_id: str, method_id: str) -> RiderPaymentMethod:
    """The rider's active method `method_id`, or NotFound."""
    row = await session.get(RiderPaymentMethod, method_id)
    if row is None or row.rider_id != rider_id or row.removed_at is not None:
        raise NotFound("payment method", method_id)
    return row


async def list_methods(session: AsyncSession, rider_id: str) -> list[RiderPaymentMethod]:
    """The rider's payment methods: the default first, then the newest. None: they pay by the sandbox."""
    await _rider(session, rider_id)
    return await active_methods(session, rider_id)


async def bind_wechat(db: Database, settings: Settings, rider_id: str) -> tuple[RiderPaymentMethod, bool]:
    """Pay by WeChat Pay as the WeChat user the rider signed in as (their openid). The default if the rider
    has none. Returns (method, added now)."""
    if not settings.wechat.mchid:
        raise Refused("WeChat Pay unavailable", "WeChat Pay is not set up here", reason="provider_not_configured")
    async with db.transaction() as session:
        rider = await _rider(session, rider_id, locked=True)
        if not rider.wechat_openid:
            raise Refused(
                "No WeChat account",
                f"rider {rider_id!r} did not sign in with WeChat: there is no openid to pay with",
                reason="no_wechat_openid",
            )
        return await add_method(
            session, rider_id=rider_id, method=PaymentMethod.WECHAT, label=WECHAT_LABEL, payer=rider.wechat_openid
        )


async def use_wallet(db: Database, rider_id: str) -> tuple[RiderPaymentMethod, bool]:
    """Pay swaps from the rider's prepaid wallet (filled by top-ups). The default if the rider has none.
    Returns (method, added now)."""
    async with db.transaction() as session:
        await _rider(session, rider_id, locked=True)
        return await add_method(session, rider_id=rider_id, method=PaymentMethod.WALLET, label=WALLET_LABEL)


@asynccontextmanager
async def _stripe(settings: Settings) -> AsyncIterator[StripeCards]:
    """Stripe's card calls. A provider error the caller lets through is Unavailable: Stripe cannot do it
    now (unreachable, or refusing our own request)."""
    if not (settings.stripe.api_key and settings.stripe.publishable_key):
        raise Refused("Cards unavailable", "Stripe is not set up here", reason="provider_not_configured")
    async with StripeCards(settings) as cards:
        try:
            yield cards
        except ProviderError as exc:
            raise Unavailable("Stripe unavailable", str(exc)) from exc


async def _customer(db: Database, cards: StripeCards, rider_id: str) -> str:
    """The rider's Stripe Customer, made (once) if they have none."""
    async with db.sessions() as session:
        await _rider(session, rider_id)
        known = await session.get(StripeCustomer, rider_id)
    if known is not None:
        return known.customer_id
    customer_id = await cards.create_customer(rider_id)
    try:
        async with db.transaction() as session:
            session.add(StripeCustomer(rider_id=rider_id, customer_id=customer_id))
    except IntegrityError:
        # Made at the same time by another request: theirs is kept (Stripe answered both the same one).
        async with db.sessions() as session:
            return (await session.get_one(StripeCustomer, rider_id)).customer_id
    return customer_id


async def start_card_setup(db: Database, settings: Settings, rider_id: str) -> CardSetup:
    """A SetupIntent saving a new card to the rider's Stripe Customer (made now, or the one they have), for
    the rider's page to confirm with Stripe.js."""
    async with _stripe(settings) as cards:
        customer_id = await _customer(db, cards, rider_id)
        intent = await cards.setup_intent(customer_id, rider_id)
    return CardSetup(
        setup_intent_id=intent.id,
        client_secret=intent.client_secret,
        publishable_key=str(settings.stripe.publishable_key),
    )


async def save_card(
    db: Database, settings: Settings, rider_id: str, setup_intent_id: str
) -> tuple[RiderPaymentMethod, bool]:
    """Record the card of a SetupIntent the rider confirmed, as Stripe reports it (the page's word is not
    taken): it must be the rider's Customer's and have succeeded. The default if the rider has none.
    Returns (method, added now)."""
    async with db.sessions() as session:
        await _rider(session, rider_id)
        known = await session.get(StripeCustomer, rider_id)
    unknown = NotFound("setup intent", setup_intent_id)
    if known is None:
        raise unknown
    async with _stripe(settings) as cards:
        try:
            outcome = await cards.outcome(setup_intent_id)
        except ProviderDeclined:
            raise unknown from None
        if outcome.customer != known.customer_id:
            raise unknown  # another rider's, or made elsewhere: it does not exist for this rider
        if outcome.status != "succeeded" or outcome.payment_method is None:
            raise Conflict(
                "Card not saved",
                f"setup intent {setup_intent_id!r} is {outcome.status}: a card is saved once it has succeeded",
                setup_intent_status=outcome.status,
            )
        if outcome.card_customer is None:
            try:
                await cards.attach(outcome.payment_method, known.customer_id)
            except ProviderDeclined as refused:
                raise Conflict("Card not saved", f"Stripe refused the card: {refused}") from None
        elif outcome.card_customer != known.customer_id:
            raise Conflict("Card not saved", f"the card of setup intent {setup_intent_id!r} is another customer's")
    async with db.transaction() as session:
        await _rider(session, rider_id, locked=True)
        return await add_method(
            session,
            rider_id=rider_id,
            method=PaymentMethod.STRIPE,
            label=outcome.label,
            payer=known.customer_id,
            provider_ref=outcome.payment_method,
        )


async def set_default(db: Database, rider_id: str, method_id: str) -> RiderPaymentMethod:
    """Make one of the rider's methods the one their swaps, top-ups and plans are charged through."""
    async with db.transaction() as session:
        await _rider(session, rider_id, locked=True)
        row = await _own_method(session, rider_id, method_id)
        await make_default(session, row)
        return row


async def remove(db: Database, settings: Settings, rider_id: str, method_id: str) -> RiderPaymentMethod | None:
    """Remove one of the rider's methods; a removed default hands over to the newest remaining one. A card
    is detached at Stripe too, as far as Stripe answers (it is removed here whatever Stripe says). Returns
    the rider's default now (None: the sandbox)."""
    async with db.transaction() as session:
        await _rider(session, rider_id, locked=True)
        row = await _own_method(session, rider_id, method_id)
        method, card = row.method, row.provider_ref
        now_default = await remove_method(session, row)
    if method == PaymentMethod.STRIPE and card and settings.stripe.api_key:
        try:
            async with StripeCards(settings) as cards:
                await cards.detach(card)
        except ProviderError as exc:
            log.warning("card %s of rider %s removed, but not detached at Stripe: %s", card, rider_id, exc)
    return now_default
