"""Payouts by WeChat Pay v3 merchant transfer to the partner's WeChat balance (商家转账到零钱, the batch
API), through the `wechatpayv3` SDK in public-key verification mode, like the payment provider.

One payout is a batch of one detail to the partner's openid (`PayoutRequest.account`, under our appid).
`out_batch_no` and `out_detail_no` are digests of our key (WeChat allows 5-32 of [0-9A-Za-z]), so the
key alone finds the batch again. WeChat answers the same batch to the same number and parameters, and
after an error it wants the same number retried, never a new one: `pay` looks the batch up first, and
an answer that is neither success nor a known refusal is treated as lost (`ProviderTimeout`), so the
caller asks `find_payout` and retries under the same key.

A batch is accepted (ACCEPTED, or WAIT_PAY while the merchant's staff confirm a large amount), then
PROCESSING, then FINISHED with the detail SUCCESS or FAIL (a `fail_reason`), or CLOSED (a
`close_reason`); within about an hour unless it waits for confirmation. The payout is PROCESSING until
the detail is final.

The SDK is synchronous (requests): every call runs in a worker thread so the event loop is never blocked.
"""

from __future__ import annotations

import hashlib
from typing import Any

from swapflow.payments.payouts import PayoutMethod, PayoutRequest, PayoutStatus, ProviderPayout
from swapflow.payments.provider import ProviderDeclined, ProviderTimeout, ProviderUnavailable
from swapflow.payments.wechat import WeChatAnswer, wechat_call, wechat_sdk
from swapflow.settings import Settings

USER_NAME_FROM_MINOR = 200_000  # WeChat wants the payee's real name on a transfer of 2,000 yuan or more
_TEXT_LIMIT = 32  # batch name, batch remark and transfer remark: at most 32 characters each

# WeChat's rule for these: retry with the same batch number (after a top-up, for NOT_ENOUGH).
_RETRY_CODES = frozenset({"SYSTEM_ERROR", "FREQUENCY_LIMITED", "NOT_ENOUGH"})
# Refusals of the request itself: nothing was accepted under the number.
_REFUSAL_CODES = frozenset({"PARAM_ERROR", "INVALID_REQUEST", "NO_AUTH", "SIGN_ERROR"})
_NOT_FOUND_CODES = frozenset({"NOT_FOUND", "RESOURCE_NOT_EXISTS"})


def out_batch_no(key: str) -> str:
    """WeChat's `out_batch_no` for our payout key: 32 of [0-9a-z], a digest of the key."""
    return "sfp" + hashlib.sha256(key.encode()).hexdigest()[:29]


def out_detail_no(key: str) -> str:
    """WeChat's `out_detail_no` of the batch's one detail: a digest of the key, like the batch number."""
    return "sfd" + hashlib.sha256(key.encode()).hexdigest()[:29]


class WeChatPayoutProvider:
    """`PayoutProvider` for WeChat Pay v3 merchant transfers to a partner's openid."""

    method = PayoutMethod.WECHAT

    def __init__(self, settings: Settings) -> None:
        self._sdk = wechat_sdk(
            settings, ("mchid", "appid", "cert_serial_no", "public_key", "public_key_id"), "WeChat Pay transfers"
        )
        self._batch_name = settings.wechat.transfer_batch_name[:_TEXT_LIMIT]
        self._scene_id = settings.wechat.transfer_scene_id

    async def pay(self, request: PayoutRequest) -> ProviderPayout:
        """Submit the batch under `request.key` (PROCESSING); a batch already made under it is the answer."""
        existing = await self.find_payout(request.key)
        if existing is not None:
            return existing
        if not request.account:
            raise ProviderDeclined("a WeChat transfer needs the partner's openid as account")
        if request.currency.upper() != "CNY":
            raise ProviderDeclined(f"WeChat transfers pay CNY, not {request.currency}")
        holder = request.details.get("holder")
        if request.amount_minor >= USER_NAME_FROM_MINOR and not holder:
            raise ProviderDeclined("a WeChat transfer of 2,000 yuan or more needs the payee's name (details.holder)")
        remark = request.description[:_TEXT_LIMIT] or self._batch_name  # WeChat requires a remark
        detail: dict[str, Any] = {
            "out_detail_no": out_detail_no(request.key),
            "transfer_amount": request.amount_minor,
            "transfer_remark": remark,
            "openid": request.account,
        }
        if holder:
            detail["user_name"] = holder  # the SDK encrypts it with WeChat Pay's public key
        answer = await wechat_call(
            self._sdk.transfer_batch,
            out_batch_no=out_batch_no(request.key),
            batch_name=self._batch_name,
            batch_remark=remark,
            total_amount=request.amount_minor,
            total_num=1,
            transfer_detail_list=[detail],
            transfer_scene_id=self._scene_id,
        )
        if answer.code == "INVALID_REQUEST":
            # Among others: the number exists with other parameters (a concurrent submission). Then that
            # batch is the payout under this key.
            existing = await self.find_payout(request.key)
            if existing is not None:
                return existing
        self._raise_for(answer)
        return ProviderPayout(
            method=self.method,
            key=request.key,
            payout_id=str(answer.json.get("batch_id", "")),
            status=PayoutStatus.PROCESSING,
            amount_minor=request.amount_minor,
            currency="CNY",
        )

    async def find_payout(self, key: str) -> ProviderPayout | None:
        """The batch made under `key` as WeChat sees it now; None if there is none."""
        answer = await wechat_call(
            self._sdk.transfer_query_out_batch_no, out_batch_no=out_batch_no(key), need_query_detail=True
        )
        if answer.status == 404 or answer.code in _NOT_FOUND_CODES:
            return None
        self._raise_for(answer)
        batch = answer.json.get("transfer_batch") or {}
        details = {str(d.get("out_detail_no")): d for d in answer.json.get("transfer_detail_list") or []}
        detail_status = str(details.get(out_detail_no(key), {}).get("detail_status", ""))
        status, reason = PayoutStatus.PROCESSING, None
        if batch.get("batch_status") == "CLOSED":
            status, reason = PayoutStatus.FAILED, f"WeChat closed the transfer batch: {batch.get('close_reason')}"
        elif detail_status == "SUCCESS":
            status = PayoutStatus.SUCCEEDED
        elif detail_status == "FAIL":
            status, reason = PayoutStatus.FAILED, f"WeChat transfer failed: {await self._fail_reason(key)}"
        return ProviderPayout(
            method=self.method,
            key=key,
            payout_id=str(batch.get("batch_id", "")),
            status=status,
            amount_minor=int(batch.get("total_amount", 0)),
            currency="CNY",
            failure_reason=reason,
        )

    async def _fail_reason(self, key: str) -> str:
        """Why the detail failed (only the detail query carries it)."""
        answer = await wechat_call(
            self._sdk.transfer_query_out_detail_no, out_detail_no=out_detail_no(key), out_batch_no=out_batch_no(key)
        )
        self._raise_for(answer)
        return str(answer.json.get("fail_reason") or "no reason given")

    @staticmethod
    def _raise_for(answer: WeChatAnswer) -> None:
        """Raise for an error answer: transient ones are retried, known refusals are final, and any other
        is taken as an unknown outcome (WeChat: never give up a number on an error it does not document)."""
        if answer.status < 300:
            return
        detail = f"WeChat Pay {answer.status} {answer.code}: {answer.json.get('message', '')}".strip()
        if answer.status == 429 or answer.status >= 500 or answer.code in _RETRY_CODES:
            raise ProviderUnavailable(detail)
        if answer.code in _REFUSAL_CODES:
            raise ProviderDeclined(detail)
        raise ProviderTimeout(f"{detail} (outcome unknown: query the batch)")


def provider_from_settings(settings: Settings, db: object) -> WeChatPayoutProvider | None:
    """The WeChat transfer provider when the merchant settings are present (`SWAPFLOW_WECHAT_MCHID` and
    its keys, as for WeChat Pay), else None."""
    return WeChatPayoutProvider(settings) if settings.wechat.mchid else None
