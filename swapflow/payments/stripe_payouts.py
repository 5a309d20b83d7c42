"""Payouts by Stripe Connect transfer from the platform's balance to the partner's connected account
(`PayoutRequest.account`, `acct_…`), through the `stripe` SDK's `StripeClient` (async methods over httpx).

Our key is the transfer's `transfer_group`, its metadata (`swapflow_key`) and Stripe's idempotency key.
Stripe cannot search transfers, but lists them by `transfer_group`: `find_payout` asks for the key's
group, and `pay` looks the key up before creating anything, so a retry answers the first transfer even
past Stripe's 24-hour idempotency window.

A transfer lands in the connected account at once: SUCCEEDED. A transfer reversed in full (the platform
took the money back) is RETURNED. swapflow never reverses part of a transfer; one reversed in part by hand
stays SUCCEEDED, with `amount_minor` what stayed with the partner.
"""

from __future__ import annotations

from typing import cast

import stripe
from stripe.params import TransferCreateParams

from swapflow.payments.payouts import PayoutMethod, PayoutRequest, PayoutStatus, ProviderPayout
from swapflow.payments.provider import ProviderDeclined
from swapflow.payments.stripe import KEY, metadata_of, stripe_call, stripe_client
from swapflow.settings import Settings


class StripePayoutProvider:
    """`PayoutProvider` for Stripe Connect transfers to a partner's connected account."""

    method = PayoutMethod.STRIPE

    def __init__(self, settings: Settings) -> None:
        if not settings.stripe.api_key:
            raise ValueError("Stripe needs SWAPFLOW_STRIPE_API_KEY")
        self._client = stripe_client(settings)

    async def pay(self, request: PayoutRequest) -> ProviderPayout:
        """Transfer the amount to `request.account` under `request.key`; a transfer already made under it
        is the answer."""
        existing = await self.find_payout(request.key)
        if existing is not None:
            return existing
        if not request.account:
            raise ProviderDeclined("a Stripe transfer needs the partner's connected account as account")
        params = {
            "amount": request.amount_minor,
            "currency": request.currency.lower(),
            "destination": request.account,
            "transfer_group": request.key,
            "description": request.description,
            "metadata": {KEY: request.key, "partner_id": request.partner_id},
        }
        transfer = await stripe_call(
            self._client.v1.transfers.create_async(
                params=cast(TransferCreateParams, params), options={"idempotency_key": request.key}
            )
        )
        return self._payout_from(transfer, request.key)

    async def find_payout(self, key: str) -> ProviderPayout | None:
        """The transfer made under `key` as Stripe sees it now (reversals included); None if there is none."""
        page = await stripe_call(self._client.v1.transfers.list_async(params={"transfer_group": key, "limit": 10}))
        async for transfer in page.auto_paging_iter():
            if metadata_of(transfer).get(KEY) == key:
                return self._payout_from(transfer, key)
        return None

    def _payout_from(self, transfer: stripe.Transfer, key: str) -> ProviderPayout:
        reversed_minor = int(transfer.amount_reversed or 0)
        returned = bool(transfer.reversed)
        return ProviderPayout(
            method=self.method,
            key=key,
            payout_id=transfer.id,
            status=PayoutStatus.RETURNED if returned else PayoutStatus.SUCCEEDED,
            amount_minor=int(transfer.amount) if returned else int(transfer.amount) - reversed_minor,
            currency=str(transfer.currency).upper(),
            failure_reason=f"Stripe transfer {transfer.id} was reversed" if returned else None,
        )


def provider_from_settings(settings: Settings, db: object) -> StripePayoutProvider | None:
    """The Stripe transfer provider when an API key is configured (`SWAPFLOW_STRIPE_API_KEY`), else None."""
    return StripePayoutProvider(settings) if settings.stripe.api_key else None
