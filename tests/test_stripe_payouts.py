"""Stripe Connect transfers through the real `stripe` SDK against a fake of the transfer endpoints that
checks what the SDK sends (localstripe has no transfers): a payout is one transfer to the partner's
connected account, made once per key, RETURNED when the platform reverses it, and classified when Stripe
is unreachable, slow or refuses."""

from __future__ import annotations

import uuid

import pytest

from swapflow.payments.payouts import PayoutMethod, PayoutProvider, PayoutRequest, PayoutStatus, payout_key
from swapflow.payments.provider import ProviderDeclined, ProviderTimeout, ProviderUnavailable
from swapflow.payments.stripe import KEY
from swapflow.payments.stripe_payouts import StripePayoutProvider, provider_from_settings
from swapflow.settings import Settings
from tests.stripe_connect_fake import API_KEY, StripeConnectFake, stripe_connect  # noqa: F401  (fixture)

CREATE = "POST /v1/transfers"


@pytest.fixture
def stripe_settings(stripe_connect: StripeConnectFake) -> Settings:
    return Settings().updated(stripe=stripe_connect.settings_values())


@pytest.fixture
def provider(stripe_settings: Settings) -> StripePayoutProvider:
    return StripePayoutProvider(stripe_settings)


@pytest.fixture
def account(stripe_connect: StripeConnectFake) -> str:
    return stripe_connect.connected_account()


def payout_request(account: str | None, amount: int = 25_00, **changes: object) -> PayoutRequest:
    request = PayoutRequest(
        key=payout_key(f"agent-{uuid.uuid4().hex[:8]}-2026-11", 1),
        partner_id="agent-ber-01",
        amount_minor=amount,
        currency="EUR",
        account=account,
        description="swapflow commission 2026-11",
    )
    return request.model_copy(update=changes)


def creates(fake: StripeConnectFake) -> int:
    return sum(1 for request in fake.requests if (request.method, request.path) == ("POST", "/v1/transfers"))


def test_provider_implements_the_payout_provider_interface(provider: StripePayoutProvider) -> None:
    assert isinstance(provider, PayoutProvider)
    assert provider.method is PayoutMethod.STRIPE


def test_provider_is_configured_by_the_stripe_api_key(stripe_settings: Settings) -> None:
    assert provider_from_settings(Settings().updated(stripe={"api_key": None}), db=None) is None
    assert isinstance(provider_from_settings(stripe_settings, db=None), StripePayoutProvider)


async def test_pay_transfers_to_the_connected_account_at_once(
    provider: StripePayoutProvider, stripe_connect: StripeConnectFake, account: str
) -> None:
    request = payout_request(account)
    payout = await provider.pay(request)
    [transfer] = stripe_connect.transfers.values()
    assert (payout.status, payout.payout_id, payout.amount_minor, payout.currency, payout.failure_reason) == (
        PayoutStatus.SUCCEEDED,
        transfer.id,
        25_00,
        "EUR",
        None,
    )
    assert (transfer.destination, transfer.amount, transfer.currency) == (account, 25_00, "eur")
    assert stripe_connect.balance["eur"] == 100_000_000 - 25_00


async def test_the_sdk_sends_the_key_as_transfer_group_metadata_and_idempotency_key(
    provider: StripePayoutProvider, stripe_connect: StripeConnectFake, account: str
) -> None:
    request = payout_request(account)
    await provider.pay(request)
    [create] = [sent for sent in stripe_connect.requests if sent.method == "POST"]
    assert create.path == "/v1/transfers"
    assert create.form == {
        "amount": "2500",
        "currency": "eur",
        "destination": account,
        "transfer_group": request.key,
        "description": "swapflow commission 2026-11",
        f"metadata[{KEY}]": request.key,
        "metadata[partner_id]": "agent-ber-01",
    }
    assert create.headers["idempotency-key"] == request.key
    assert create.headers["authorization"] == f"Bearer {API_KEY}"
    lookups = [sent for sent in stripe_connect.requests if sent.method == "GET"]
    assert [(sent.path, sent.query.get("transfer_group")) for sent in lookups] == [("/v1/transfers", request.key)]


async def test_paying_the_same_key_again_transfers_once_and_answers_the_first_payout(
    provider: StripePayoutProvider, stripe_connect: StripeConnectFake, account: str
) -> None:
    request = payout_request(account)
    first = await provider.pay(request)
    assert await provider.pay(request) == first
    assert len(stripe_connect.transfers) == 1
    assert creates(stripe_connect) == 1


async def test_a_lost_answer_is_a_timeout_and_the_retry_under_the_same_key_transfers_once(
    provider: StripePayoutProvider, stripe_connect: StripeConnectFake, account: str
) -> None:
    request = payout_request(account)
    stripe_connect.delay_next_answer(2.0, request=CREATE)  # longer than the 1 s the client waits
    with pytest.raises(ProviderTimeout):
        await provider.pay(request)
    found = await provider.find_payout(request.key)
    assert found is not None and found.status is PayoutStatus.SUCCEEDED
    assert await provider.pay(request) == found
    assert len(stripe_connect.transfers) == 1


async def test_a_transfer_reversed_in_full_is_returned(
    provider: StripePayoutProvider, stripe_connect: StripeConnectFake, account: str
) -> None:
    request = payout_request(account)
    payout = await provider.pay(request)
    stripe_connect.reverse(payout.payout_id)
    returned = await provider.find_payout(request.key)
    assert returned is not None
    assert (returned.status, returned.amount_minor, returned.failure_reason) == (
        PayoutStatus.RETURNED,
        25_00,
        f"Stripe transfer {payout.payout_id} was reversed",
    )
    assert await provider.pay(request) == returned  # the key stays spent: a new attempt is a new key
    assert len(stripe_connect.transfers) == 1


async def test_a_transfer_reversed_in_part_stays_succeeded_with_what_the_partner_kept(
    provider: StripePayoutProvider, stripe_connect: StripeConnectFake, account: str
) -> None:
    request = payout_request(account)
    payout = await provider.pay(request)
    stripe_connect.reverse(payout.payout_id, amount=5_00)
    found = await provider.find_payout(request.key)
    assert found is not None
    assert (found.status, found.amount_minor) == (PayoutStatus.SUCCEEDED, 20_00)


async def test_find_payout_of_an_unknown_key_is_none(provider: StripePayoutProvider) -> None:
    assert await provider.find_payout(payout_key("nobody-2026-11", 1)) is None


async def test_unreachable_stripe_is_unavailable_and_the_retry_later_transfers_once(
    provider: StripePayoutProvider, stripe_connect: StripeConnectFake, account: str
) -> None:
    request = payout_request(account)
    stripe_connect.go_offline()
    with pytest.raises(ProviderUnavailable):
        await provider.pay(request)
    stripe_connect.come_back()
    assert (await provider.pay(request)).status is PayoutStatus.SUCCEEDED
    assert len(stripe_connect.transfers) == 1


async def test_server_errors_and_rate_limits_are_unavailable_and_transfer_nothing(
    provider: StripePayoutProvider, stripe_connect: StripeConnectFake, account: str
) -> None:
    request = payout_request(account)
    for status, kind in ((500, "api_error"), (429, "rate_limit_error")):
        stripe_connect.fail_next(status, kind, request=CREATE)
        with pytest.raises(ProviderUnavailable):
            await provider.pay(request)
    assert stripe_connect.transfers == {}


async def test_an_unknown_destination_is_declined(provider: StripePayoutProvider) -> None:
    with pytest.raises(ProviderDeclined, match="No such destination"):
        await provider.pay(payout_request("acct_nobody"))


async def test_a_platform_balance_short_of_the_amount_is_declined(
    provider: StripePayoutProvider, stripe_connect: StripeConnectFake, account: str
) -> None:
    stripe_connect.balance["eur"] = 24_99
    with pytest.raises(ProviderDeclined, match="insufficient available funds"):
        await provider.pay(payout_request(account))
    assert stripe_connect.transfers == {}


async def test_a_payout_without_a_connected_account_is_declined_and_transfers_nothing(
    provider: StripePayoutProvider, stripe_connect: StripeConnectFake
) -> None:
    with pytest.raises(ProviderDeclined):
        await provider.pay(payout_request(None))
    assert creates(stripe_connect) == 0
