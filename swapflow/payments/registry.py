"""Which provider takes a rider's money: the providers this process has, built from the settings, and
the rider's default payment method (`rider_payment_methods`; a rider without one pays by the sandbox).
And the payout providers that pay partners."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.db.money import RiderPaymentMethod
from swapflow.payments.bank_payouts import provider_from_settings as bank_payouts_from_settings
from swapflow.payments.methods import default_method
from swapflow.payments.payouts import PayoutMethod, PayoutProvider
from swapflow.payments.provider import PaymentMethod, PaymentProvider
from swapflow.payments.sandbox import SandboxProvider
from swapflow.payments.sandbox_payouts import SandboxPayoutProvider
from swapflow.payments.stripe import provider_from_settings as stripe_from_settings
from swapflow.payments.stripe_payouts import provider_from_settings as stripe_payouts_from_settings
from swapflow.payments.subscription import SubscriptionProvider
from swapflow.payments.wallet import WalletProvider
from swapflow.payments.wechat import provider_from_settings as wechat_from_settings
from swapflow.payments.wechat_payouts import provider_from_settings as wechat_payouts_from_settings
from swapflow.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_METHOD = PaymentMethod.SANDBOX


def providers_from_settings(settings: Settings, db: Database) -> dict[PaymentMethod, PaymentProvider]:
    """Every provider this process can use: the ones in our database always, WeChat Pay and Stripe when
    their settings configure them."""
    providers: dict[PaymentMethod, PaymentProvider] = {
        PaymentMethod.SANDBOX: SandboxProvider(
            db,
            latency_ms=settings.payments.sandbox_payment_latency_ms,
            decline_rate=settings.payments.sandbox_decline_rate,
            timeout_rate=settings.payments.sandbox_timeout_rate,
            refund_processing_s=settings.payments.sandbox_refund_processing_s,
        ),
        PaymentMethod.WALLET: WalletProvider(db),
        PaymentMethod.SUBSCRIPTION: SubscriptionProvider(db),
    }
    for factory in (wechat_from_settings, stripe_from_settings):
        provider = factory(settings, db)
        if provider is not None:
            providers[provider.method] = provider
            log.info("payment provider %s configured", provider.method)
    return providers


def payout_providers_from_settings(settings: Settings, db: Database) -> dict[PayoutMethod, PayoutProvider]:
    """Every way this process can pay partners: the sandbox and the bank file always, WeChat merchant
    transfers and Stripe Connect transfers when their settings configure them."""
    providers: dict[PayoutMethod, PayoutProvider] = {
        PayoutMethod.SANDBOX: SandboxPayoutProvider(
            db,
            delay_s=settings.settlement.sandbox_payout_delay_s,
            failure_rate=settings.settlement.sandbox_payout_failure_rate,
        ),
        PayoutMethod.BANK: bank_payouts_from_settings(settings, db),
    }
    for factory in (wechat_payouts_from_settings, stripe_payouts_from_settings):
        provider = factory(settings, db)
        if provider is not None:
            providers[provider.method] = provider
            log.info("payout provider %s configured", provider.method)
    return providers


@dataclass(frozen=True)
class PayerMethod:
    """How one rider pays."""

    method: PaymentMethod
    payer: str | None


async def payer_method(session: AsyncSession, rider_id: str) -> PayerMethod:
    """The rider's default payment method and the provider's handle for them (a Stripe card is
    `cus_…/pm_…`, its customer and the card, as the Stripe provider charges it)."""
    row = await default_method(session, rider_id)
    return PayerMethod(DEFAULT_METHOD, None) if row is None else _payer_of(row)


def _payer_of(row: RiderPaymentMethod) -> PayerMethod:
    if row.method == PaymentMethod.STRIPE:  # the card with its customer: `cus_…/pm_…`
        card = "/".join(part for part in (row.payer, row.provider_ref) if part)
        return PayerMethod(PaymentMethod.STRIPE, card or None)
    return PayerMethod(PaymentMethod(row.method), row.payer)


OUTSIDE_METHODS = frozenset({PaymentMethod.SANDBOX, PaymentMethod.WECHAT, PaymentMethod.STRIPE})
"""Where money from outside comes from: what a top-up or a plan is paid with (not a wallet or a plan)."""


async def paying_in_method(session: AsyncSession, rider_id: str) -> PayerMethod:
    """What a rider's top-up or plan is paid through: their default method if it brings money from
    outside, else their newest WeChat Pay or Stripe method, else the sandbox."""
    how = await payer_method(session, rider_id)
    if how.method in OUTSIDE_METHODS:
        return how
    newest = await session.scalar(
        select(RiderPaymentMethod)
        .where(
            RiderPaymentMethod.rider_id == rider_id,
            RiderPaymentMethod.removed_at.is_(None),
            RiderPaymentMethod.method.in_((PaymentMethod.WECHAT, PaymentMethod.STRIPE)),
        )
        .order_by(RiderPaymentMethod.created_at.desc(), RiderPaymentMethod.id)
        .limit(1)
    )
    return PayerMethod(DEFAULT_METHOD, None) if newest is None else _payer_of(newest)


class UnknownProvider(LookupError):
    """A payment method this process has no provider for (not configured here)."""


def provider_for(providers: dict[PaymentMethod, PaymentProvider], method: str) -> PaymentProvider:
    """The provider of `method`."""
    try:
        return providers[PaymentMethod(method)]
    except (KeyError, ValueError):
        raise UnknownProvider(f"no payment provider {method!r} is configured") from None
