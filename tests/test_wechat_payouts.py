"""WeChat Pay v3 merchant transfers through the real `wechatpayv3` SDK against the signing WeChat fake:
a payout is one batch of one detail to the partner's openid, followed from processing to its end, paid
once per key whatever is retried, failed or closed with WeChat's reason, and classified when WeChat is
unreachable or refuses."""

from __future__ import annotations

import re
import uuid

import pytest

from swapflow.payments.payouts import (
    PayoutMethod,
    PayoutProvider,
    PayoutRequest,
    PayoutStatus,
    payout_key,
)
from swapflow.payments.provider import ProviderDeclined, ProviderTimeout, ProviderUnavailable
from swapflow.payments.wechat_payouts import (
    USER_NAME_FROM_MINOR,
    WeChatPayoutProvider,
    out_batch_no,
    out_detail_no,
    provider_from_settings,
)
from swapflow.settings import Settings
from tests.payment_fakes import wechat_fake  # noqa: F401  (fixture)
from tests.wechat_fake import WeChatPayFake

OPENID = "o-partner-openid-0001"
CREATE = "POST /v3/transfer/batches"


@pytest.fixture
def wechat_settings(wechat_fake: WeChatPayFake) -> Settings:
    return Settings().updated(wechat={**wechat_fake.settings_values(), "transfer_scene_id": "1005"})


@pytest.fixture
def provider(wechat_settings: Settings) -> WeChatPayoutProvider:
    return WeChatPayoutProvider(wechat_settings)


def payout_request(amount: int = 12_345, **changes: object) -> PayoutRequest:
    request = PayoutRequest(
        key=payout_key(f"host-{uuid.uuid4().hex[:8]}-2026-11", 1),
        partner_id="host-sh-01",
        amount_minor=amount,
        currency="CNY",
        account=OPENID,
        description="swapflow commission 2026-11",
    )
    return request.model_copy(update=changes)


def test_provider_implements_the_payout_provider_interface(provider: WeChatPayoutProvider) -> None:
    assert isinstance(provider, PayoutProvider)
    assert provider.method is PayoutMethod.WECHAT


def test_batch_and_detail_numbers_are_digests_of_the_key_within_wechats_rules() -> None:
    first, retry = payout_key("host-sh-01-2026-11", 1), payout_key("host-sh-01-2026-11", 2)
    for number in (out_batch_no(first), out_detail_no(first), out_batch_no(retry)):
        assert re.fullmatch(r"[0-9A-Za-z]{5,32}", number)
    assert out_batch_no(first) == out_batch_no(first)
    assert out_batch_no(first) != out_batch_no(retry)


def test_provider_is_configured_by_the_wechat_merchant_settings(wechat_settings: Settings) -> None:
    assert provider_from_settings(Settings().updated(wechat={"mchid": None}), db=None) is None
    assert isinstance(provider_from_settings(wechat_settings, db=None), WeChatPayoutProvider)


async def test_pay_submits_one_batch_of_one_transfer_to_the_partners_openid(
    provider: WeChatPayoutProvider, wechat_fake: WeChatPayFake
) -> None:
    request = payout_request()
    payout = await provider.pay(request)
    batch = wechat_fake.batches[out_batch_no(request.key)]
    assert (payout.status, payout.payout_id, payout.amount_minor, payout.currency) == (
        PayoutStatus.PROCESSING,
        batch.batch_id,
        12_345,
        "CNY",
    )
    assert (batch.total_amount, batch.total_num, batch.scene_id, batch.batch_name) == (
        12_345,
        1,
        "1005",
        "swapflow commission",
    )
    [detail] = batch.details
    assert (detail.out_detail_no, detail.openid, detail.amount, detail.remark, detail.user_name) == (
        out_detail_no(request.key),
        OPENID,
        12_345,
        "swapflow commission 2026-11",
        None,
    )
    assert wechat_fake.bad_signatures == 0


async def test_payout_is_processing_until_wechat_pays_it_then_succeeded(
    provider: WeChatPayoutProvider, wechat_fake: WeChatPayFake
) -> None:
    request = payout_request()
    await provider.pay(request)
    assert (await provider.find_payout(request.key)).status is PayoutStatus.PROCESSING  # type: ignore[union-attr]
    wechat_fake.process_transfer(out_batch_no(request.key))
    assert (await provider.find_payout(request.key)).status is PayoutStatus.PROCESSING  # type: ignore[union-attr]
    batch = wechat_fake.settle_transfer(out_batch_no(request.key))
    payout = await provider.find_payout(request.key)
    assert payout is not None
    assert (payout.status, payout.payout_id, payout.amount_minor, payout.failure_reason) == (
        PayoutStatus.SUCCEEDED,
        batch.batch_id,
        12_345,
        None,
    )


async def test_paying_the_same_key_again_pays_once_and_answers_the_first_payout(
    provider: WeChatPayoutProvider, wechat_fake: WeChatPayFake
) -> None:
    request = payout_request()
    first = await provider.pay(request)
    assert await provider.pay(request) == first
    wechat_fake.settle_transfer(out_batch_no(request.key))
    assert (await provider.pay(request)).status is PayoutStatus.SUCCEEDED
    assert wechat_fake.created_batches == 1


async def test_a_lost_answer_is_a_timeout_and_the_retry_under_the_same_key_pays_once(
    provider: WeChatPayoutProvider, wechat_fake: WeChatPayFake
) -> None:
    request = payout_request()
    wechat_fake.delay_next_answer(3.0, request=CREATE)  # longer than the 2 s the client waits
    with pytest.raises(ProviderTimeout):
        await provider.pay(request)
    found = await provider.find_payout(request.key)
    assert found is not None and found.status is PayoutStatus.PROCESSING
    assert await provider.pay(request) == found
    assert wechat_fake.created_batches == 1


async def test_a_failed_transfer_is_failed_with_wechats_reason(
    provider: WeChatPayoutProvider, wechat_fake: WeChatPayFake
) -> None:
    request = payout_request()
    await provider.pay(request)
    wechat_fake.settle_transfer(out_batch_no(request.key), "FAIL", fail_reason="ACCOUNT_FROZEN")
    payout = await provider.find_payout(request.key)
    assert payout is not None
    assert payout.status is PayoutStatus.FAILED
    assert payout.failure_reason == "WeChat transfer failed: ACCOUNT_FROZEN"
    assert await provider.pay(request) == payout  # the key stays spent: a new attempt is a new key


async def test_a_batch_wechat_closed_is_failed_with_its_close_reason(
    provider: WeChatPayoutProvider, wechat_fake: WeChatPayFake
) -> None:
    request = payout_request()
    await provider.pay(request)
    wechat_fake.close_transfer(out_batch_no(request.key), "OVERDUE_CLOSE")
    payout = await provider.find_payout(request.key)
    assert payout is not None
    assert (payout.status, payout.failure_reason) == (
        PayoutStatus.FAILED,
        "WeChat closed the transfer batch: OVERDUE_CLOSE",
    )


async def test_unreachable_wechat_is_unavailable_and_the_retry_later_pays_once(
    provider: WeChatPayoutProvider, wechat_fake: WeChatPayFake
) -> None:
    request = payout_request()
    wechat_fake.go_offline()
    with pytest.raises(ProviderUnavailable):
        await provider.pay(request)
    with pytest.raises(ProviderUnavailable):
        await provider.find_payout(request.key)
    wechat_fake.come_back()
    assert (await provider.pay(request)).status is PayoutStatus.PROCESSING
    assert wechat_fake.created_batches == 1


async def test_find_payout_of_an_unknown_key_is_none(provider: WeChatPayoutProvider) -> None:
    assert await provider.find_payout(payout_key("nobody-2026-11", 1)) is None


async def test_transient_answers_are_unavailable_and_nothing_is_paid(
    provider: WeChatPayoutProvider, wechat_fake: WeChatPayFake
) -> None:
    request = payout_request()
    for status, code in ((500, "SYSTEM_ERROR"), (429, "FREQUENCY_LIMITED"), (403, "NOT_ENOUGH")):
        wechat_fake.fail_next(status, code, request=CREATE)
        with pytest.raises(ProviderUnavailable, match=code):
            await provider.pay(request)
    assert wechat_fake.created_batches == 0
    await provider.pay(request)
    assert wechat_fake.created_batches == 1


async def test_a_refusal_is_declined(provider: WeChatPayoutProvider, wechat_fake: WeChatPayFake) -> None:
    wechat_fake.fail_next(403, "NO_AUTH", request=CREATE)
    with pytest.raises(ProviderDeclined, match="NO_AUTH"):
        await provider.pay(payout_request())


async def test_an_undocumented_error_is_an_unknown_outcome(
    provider: WeChatPayoutProvider, wechat_fake: WeChatPayFake
) -> None:
    wechat_fake.fail_next(403, "SOMETHING_NEW", request=CREATE)
    with pytest.raises(ProviderTimeout, match="SOMETHING_NEW"):
        await provider.pay(payout_request())


async def test_a_large_transfer_carries_the_payees_name_encrypted(
    provider: WeChatPayoutProvider, wechat_fake: WeChatPayFake
) -> None:
    request = payout_request(USER_NAME_FROM_MINOR, details={"holder": "张三"})
    await provider.pay(request)
    [detail] = wechat_fake.batches[out_batch_no(request.key)].details
    assert detail.user_name == "张三"


async def test_a_payout_without_description_is_remarked_with_the_batch_name(
    provider: WeChatPayoutProvider, wechat_fake: WeChatPayFake
) -> None:
    request = payout_request(description="")
    await provider.pay(request)
    batch = wechat_fake.batches[out_batch_no(request.key)]
    assert (batch.batch_remark, batch.details[0].remark) == ("swapflow commission", "swapflow commission")


async def test_a_payout_wechat_cannot_take_is_declined_and_submits_nothing(
    provider: WeChatPayoutProvider, wechat_fake: WeChatPayFake
) -> None:
    for request in (
        payout_request(account=None),
        payout_request(currency="EUR"),
        payout_request(USER_NAME_FROM_MINOR),  # no payee name
    ):
        with pytest.raises(ProviderDeclined):
            await provider.pay(request)
    assert wechat_fake.batches == {}
