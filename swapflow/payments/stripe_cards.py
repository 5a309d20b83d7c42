"""Saving a rider's card with Stripe: the rider's Customer, a SetupIntent the rider's page confirms with
Stripe.js, the saved card read back from Stripe (never from the page), and detaching a removed card.

`StripeCards` is opened per use (`async with StripeCards(settings) as cards`) and closes its connections.
Failures are the provider's: `ProviderDeclined` (Stripe refused, or the object does not exist),
`ProviderUnavailable` / `ProviderTimeout` (try again)."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import stripe
from stripe.params import SetupIntentCreateParams

from swapflow.payments.stripe import stripe_call, stripe_client
from swapflow.settings import Settings

BRANDS = {
    "amex": "American Express",
    "diners": "Diners Club",
    "jcb": "JCB",
    "unionpay": "UnionPay",
    "mastercard": "Mastercard",
    "visa": "Visa",
    "discover": "Discover",
}


def card_label(brand: str | None, last4: str | None) -> str:
    """What a rider sees of a card: 'Visa ·· 4242'."""
    name = BRANDS.get(brand or "", (brand or "card").replace("_", " ").title())
    return f"{name} ·· {last4}" if last4 else name


@dataclass(frozen=True)
class SetupIntent:
    """What the rider's page confirms a card with."""

    id: str
    client_secret: str


@dataclass(frozen=True)
class SetupOutcome:
    """A SetupIntent as Stripe has it: its status, Customer and card (with what the rider sees of it)."""

    id: str
    status: str
    customer: str | None
    payment_method: str | None
    label: str
    card_customer: str | None  # the Customer the card is attached to, if any


def _id(value: Any) -> str | None:
    """An expandable field's id, whether Stripe answered the id or the object."""
    if value is None or isinstance(value, str):
        return value
    return str(value.id)


class StripeCards:
    """The Stripe calls of saving and removing a rider's card."""

    def __init__(self, settings: Settings) -> None:
        if not settings.stripe.api_key:
            raise ValueError("Stripe needs SWAPFLOW_STRIPE_API_KEY")
        self._http = stripe.HTTPXClient(timeout=settings.stripe.timeout_s)
        self._client = stripe_client(settings, self._http)

    async def __aenter__(self) -> StripeCards:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self._http.close_async()
        self._http.close()

    async def create_customer(self, rider_id: str) -> str:
        """A new Customer for the rider (Stripe answers a retry under the same key with the first one)."""
        customer = await stripe_call(
            self._client.v1.customers.create_async(
                params={"metadata": {"rider_id": rider_id}},
                options={"idempotency_key": f"rider:{rider_id}:customer"},
            )
        )
        return str(customer.id)

    async def setup_intent(self, customer_id: str, rider_id: str) -> SetupIntent:
        """A SetupIntent saving a card to the rider's Customer, for later charges without the rider."""
        intent = await stripe_call(
            self._client.v1.setup_intents.create_async(
                params=SetupIntentCreateParams(
                    customer=customer_id,
                    usage="off_session",
                    metadata={"rider_id": rider_id},
                )
            )
        )
        return SetupIntent(id=str(intent.id), client_secret=str(intent.client_secret))

    async def outcome(self, setup_intent_id: str) -> SetupOutcome:
        """The SetupIntent and its card, as Stripe has them now."""
        intent = await stripe_call(self._client.v1.setup_intents.retrieve_async(setup_intent_id))
        method_id = _id(intent.payment_method)
        label, card_customer = "Card", None
        if method_id is not None:
            method = await stripe_call(self._client.v1.payment_methods.retrieve_async(method_id))
            card = getattr(method, "card", None)
            label = card_label(getattr(card, "brand", None), getattr(card, "last4", None))
            card_customer = _id(method.customer)
        return SetupOutcome(
            id=str(intent.id),
            status=str(intent.status),
            customer=_id(intent.customer),
            payment_method=method_id,
            label=label,
            card_customer=card_customer,
        )

    async def attach(self, payment_method_id: str, customer_id: str) -> None:
        """Attach a card to the Customer (Stripe does so when a SetupIntent with a Customer succeeds;
        a server that does not is made to here)."""
        await stripe_call(
            self._client.v1.payment_methods.attach_async(payment_method_id, params={"customer": customer_id})
        )

    async def detach(self, payment_method_id: str) -> None:
        """Detach a card from its Customer: it can no longer be charged."""
        await stripe_call(self._client.v1.payment_methods.detach_async(payment_method_id))
