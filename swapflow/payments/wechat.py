"""WeChat Pay v3 (JSAPI / mini-program pay) through the `wechatpayv3` SDK, in public-key verification mode.

A charge creates an order (`out_trade_no` derived from our key, see `out_trade_no()`) that the rider confirms
in the app: it answers PENDING with the signed parameters the app passes to `wx.requestPayment`; the caller
polls `find_payment` or closes the order at its deadline. Refunds use an `out_refund_no` derived from our key
the same way. WeChat answers the same order or refund for the same number, so retries never move money twice.

The SDK is synchronous (requests): every call runs in a worker thread so the event loop is never blocked.
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import hashlib
import io
import json
import re
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import requests
from wechatpayv3 import WeChatPay, WeChatPayType

from swapflow.payments.notifications import (
    NotificationMalformed,
    NotificationRejected,
    NotificationSubject,
    VerifiedNotification,
    object_value,
    text_field,
)
from swapflow.payments.provider import (
    ChargeRequest,
    PaymentMethod,
    PaymentStatus,
    ProviderDeclined,
    ProviderPayment,
    ProviderRefund,
    ProviderTimeout,
    ProviderUnavailable,
    RefundExceedsCapture,
    RefundRequest,
    RefundStatus,
    StatementLine,
)
from swapflow.settings import Settings

CHINA = timezone(timedelta(hours=8))  # WeChat's bills and timestamps are in Beijing time

_TRADE_STATES = {
    "SUCCESS": PaymentStatus.CAPTURED,
    "REFUND": PaymentStatus.CAPTURED,  # captured, then (partly) refunded
    "NOTPAY": PaymentStatus.PENDING,
    "USERPAYING": PaymentStatus.PENDING,
    "CLOSED": PaymentStatus.CLOSED,
    "REVOKED": PaymentStatus.CLOSED,
    "PAYERROR": PaymentStatus.DECLINED,
}
_REFUND_STATES = {
    "PROCESSING": RefundStatus.PROCESSING,
    "SUCCESS": RefundStatus.SUCCEEDED,
    "CLOSED": RefundStatus.CLOSED,
    "ABNORMAL": RefundStatus.ABNORMAL,
}
_NOT_FOUND_CODES = {"ORDER_NOT_EXIST", "ORDERNOTEXIST", "RESOURCE_NOT_EXISTS", "NOT_FOUND"}
_NO_BILL_CODES = {"NO_STATEMENT_EXIST", "STATEMENT_CREATING"}  # no trade that day / not generated yet

# Columns of the v3 trade bill (bill_type=ALL) that a statement needs.
_BILL_TIME, _BILL_TRANSACTION = "交易时间", "微信订单号"
_BILL_STATE, _BILL_CURRENCY, _BILL_TOTAL, _BILL_ATTACH = "交易状态", "货币种类", "订单金额", "商户数据包"
_BILL_REFUND_ID, _BILL_OUT_REFUND_NO, _BILL_REFUND = "微信退款单号", "商户退款单号", "退款金额"


def out_trade_no(key: str) -> str:
    """WeChat's `out_trade_no` for our charge key. WeChat allows 6-32 of [0-9A-Za-z_*-]; our keys
    (`swap:<id>:charge`) are longer and hold ':', so the number is a digest of the key, and the key itself
    travels in the order's `attach`, which queries, notifications and bills carry back."""
    return "sf" + hashlib.sha256(key.encode()).hexdigest()[:30]


def out_refund_no(key: str) -> str:
    """WeChat's `out_refund_no` for our refund key: up to 64 of [0-9A-Za-z_|*@-], so ':' is written '*'
    (reversibly: refunds have no `attach`; '|' would be percent-encoded in the query URL and break the
    request signature). A key that does not fit is digested (then notifications cannot name it, and the
    refund workflow's own polling follows it)."""
    if re.fullmatch(r"[0-9A-Za-z_@:-]{1,64}", key):
        return key.replace(":", "*")
    return "sf" + hashlib.sha256(key.encode()).hexdigest()[:30]


def key_of_refund_no(number: str) -> str | None:
    """Our refund key back from an `out_refund_no`; None for a digested one."""
    return number.replace("*", ":") if "*" in number else None


class WeChatAnswer:
    """One SDK answer: HTTP status and the JSON body (or raw bytes of a downloaded bill)."""

    def __init__(self, status: int, body: str | bytes) -> None:
        self.status, self.raw = status, body

    @property
    def json(self) -> dict[str, Any]:
        if isinstance(self.raw, bytes) or not self.raw:
            return {}
        try:
            parsed = json.loads(self.raw)
        except ValueError:  # a proxy's error page, say: the status alone classifies it
            return {}
        return parsed if isinstance(parsed, dict) else {}

    @property
    def code(self) -> str:
        return str(self.json.get("code", "")) if self.status >= 300 else ""


def wechat_sdk(settings: Settings, required: tuple[str, ...], what: str) -> WeChatPay:
    """The SDK for our merchant, once the `required` WeChat settings and a private key are there (else a
    ValueError naming what `what` needs)."""
    wechat = settings.wechat
    missing = [name for name in required if not getattr(wechat, name)]
    private_key = wechat.private_key or (wechat.private_key_path.read_text() if wechat.private_key_path else None)
    if not private_key:
        missing.append("private_key (or SWAPFLOW_WECHAT_PRIVATE_KEY_PATH)")
    if missing:
        needed = ", ".join(f"SWAPFLOW_WECHAT_{name.upper()}" for name in missing)
        raise ValueError(f"{what} needs {needed}")
    sdk = WeChatPay(
        wechatpay_type=WeChatPayType.MINIPROG,
        mchid=wechat.mchid,
        private_key=private_key,
        cert_serial_no=wechat.cert_serial_no,
        appid=wechat.appid,
        apiv3_key=wechat.apiv3_key,
        notify_url=wechat.notify_url,
        # Connect fast (a refused connection is safe to retry), read patiently (a lost answer is unknown).
        timeout=(min(3.0, wechat.timeout_s), wechat.timeout_s),
        public_key=wechat.public_key,
        public_key_id=wechat.public_key_id,
    )
    if wechat.gateway_url:
        # The SDK keeps its gateway in a private attribute; this is the one place that knows it.
        sdk._core._gate_way = wechat.gateway_url.rstrip("/")
    return sdk


async def wechat_call(fn: Callable[..., tuple[int, str | bytes]], **kwargs: Any) -> WeChatAnswer:
    """Run one SDK call in a thread, classifying transport failures."""
    try:
        status, body = await asyncio.to_thread(fn, **kwargs)
    except requests.exceptions.ConnectTimeout as exc:  # nothing was sent
        raise ProviderUnavailable(f"WeChat Pay unreachable: {exc}") from exc
    except requests.exceptions.Timeout as exc:  # sent, answer lost: the outcome is unknown
        raise ProviderTimeout(f"WeChat Pay did not answer in time: {exc}") from exc
    except requests.exceptions.RequestException as exc:
        raise ProviderUnavailable(f"WeChat Pay unreachable: {exc}") from exc
    except Exception as exc:  # the SDK raises bare Exception for an answer whose signature fails
        raise ProviderUnavailable(f"WeChat Pay answer rejected: {exc}") from exc
    return WeChatAnswer(status, body)


class WeChatPayProvider:
    """`PaymentProvider` for WeChat Pay v3 JSAPI / mini-program payments."""

    method = PaymentMethod.WECHAT

    def __init__(self, settings: Settings) -> None:
        self._sdk = wechat_sdk(
            settings,
            ("mchid", "appid", "cert_serial_no", "apiv3_key", "public_key", "public_key_id", "notify_url"),
            "WeChat Pay",
        )
        self._appid = settings.wechat.appid
        self._tolerance_s = settings.payments.notification_tolerance_s
        self._public_key_id = settings.wechat.public_key_id

    # ---- payments ----

    async def charge(self, request: ChargeRequest) -> ProviderPayment:
        """Create the JSAPI order under `request.key` for the rider's openid (`request.payer`): PENDING."""
        if not request.payer:
            raise ProviderDeclined("a WeChat Pay charge needs the rider's openid as payer")
        answer = await wechat_call(
            self._sdk.pay,
            description=request.description[:127],
            out_trade_no=out_trade_no(request.key),
            attach=request.key,
            amount={"total": request.amount_minor, "currency": request.currency.upper()},
            payer={"openid": request.payer},
            pay_type=WeChatPayType.JSAPI,
        )
        if answer.code in ("ORDERPAID", "ORDER_CLOSED", "ORDERCLOSED", "OUT_TRADE_NO_USED"):
            # The key was used before: the first order is the answer.
            existing = await self.find_payment(request.key)
            if existing is not None:
                return existing
        self._raise_for(answer)
        # Until the rider pays there is no transaction_id: the order is known by its out_trade_no.
        return ProviderPayment(
            provider=self.method,
            key=request.key,
            payment_id=request.key,
            status=PaymentStatus.PENDING,
            amount_minor=request.amount_minor,
            currency=request.currency.upper(),
            client_params=self._jsapi_params(str(answer.json["prepay_id"])),
        )

    async def find_payment(self, key: str) -> ProviderPayment | None:
        """The order `key` as WeChat Pay sees it now; None if it was never created."""
        answer = await wechat_call(self._sdk.query, out_trade_no=out_trade_no(key))
        if answer.status == 404 or answer.code in _NOT_FOUND_CODES:
            return None
        self._raise_for(answer)
        order = answer.json
        amount = order.get("amount") or {}
        return ProviderPayment(
            provider=self.method,
            key=key,
            payment_id=str(order.get("transaction_id") or key),
            status=_TRADE_STATES.get(str(order.get("trade_state")), PaymentStatus.PENDING),
            amount_minor=int(amount.get("total", 0)),
            currency=str(amount.get("currency", "CNY")),
        )

    async def capture(self, key: str) -> ProviderPayment:
        """WeChat Pay has no separate capture: the rider's confirmation captures. Answers a captured order."""
        payment = await self.find_payment(key)
        if payment is None:
            raise ProviderDeclined(f"no WeChat Pay order {key}")
        if payment.status is not PaymentStatus.CAPTURED:
            raise ProviderDeclined(f"WeChat Pay order {key} is {payment.status.value}: only the rider can pay it")
        return payment

    async def close(self, key: str) -> ProviderPayment:
        """Close an unpaid order; an order the rider already paid is answered as it is (CAPTURED)."""
        answer = await wechat_call(self._sdk.close, out_trade_no=out_trade_no(key))
        if answer.code not in ("ORDERPAID", "ORDER_CLOSED", "ORDERCLOSED"):
            self._raise_for(answer)
        payment = await self.find_payment(key)
        if payment is None:
            raise ProviderDeclined(f"no WeChat Pay order {key}")
        return payment

    # ---- refunds ----

    async def refund(self, request: RefundRequest) -> ProviderRefund:
        """Submit a refund with `out_refund_no` = `request.key` against the order `request.payment.key`."""
        left = request.payment.amount_minor - request.payment.refunded_minor
        if request.amount_minor > left:
            raise RefundExceedsCapture(
                f"refund of {request.amount_minor} exceeds the {left} left of {request.payment.key}"
            )
        answer = await wechat_call(
            self._sdk.refund,
            out_refund_no=out_refund_no(request.key),
            out_trade_no=out_trade_no(request.payment.key),
            amount={
                "refund": request.amount_minor,
                "total": request.payment.amount_minor,
                "currency": request.payment.currency.upper(),
            },
            reason=request.reason[:80] or None,
        )
        self._raise_for(answer)
        return self._refund_from(answer.json, request.key)

    async def find_refund(self, key: str) -> ProviderRefund | None:
        """The refund `out_refund_no` = `key` with its current status; None if it was never submitted."""
        answer = await wechat_call(self._sdk.query_refund, out_refund_no=out_refund_no(key))
        if answer.status == 404 or answer.code in _NOT_FOUND_CODES:
            return None
        self._raise_for(answer)
        return self._refund_from(answer.json, key)

    # ---- statement ----

    async def statement(self, day: date) -> list[StatementLine]:
        """The trade bill lines of the UTC `day`. WeChat's bills cover Beijing-time days, so the two bills
        that overlap the UTC day are read and cut to it."""
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + timedelta(days=1)
        lines: list[StatementLine] = []
        for bill_day in (day, day + timedelta(days=1)):
            for line in await self._bill(bill_day):
                if start <= line.at < end:
                    lines.append(line)
        return sorted(lines, key=lambda line: line.at)

    async def _bill(self, bill_day: date) -> list[StatementLine]:
        answer = await wechat_call(
            self._sdk.trade_bill, bill_date=bill_day.isoformat(), bill_type="ALL", tar_type="GZIP"
        )
        if answer.code in _NO_BILL_CODES or answer.code in _NOT_FOUND_CODES:
            return []
        self._raise_for(answer)
        download = await wechat_call(self._sdk.download_bill, url=str(answer.json["download_url"]))
        self._raise_for(download)
        raw = download.raw if isinstance(download.raw, bytes) else download.raw.encode()
        return parse_trade_bill(gzip.decompress(raw).decode("utf-8-sig"))

    # ---- notifications ----

    def verify_notification(
        self, headers: Mapping[str, str], body: bytes, *, now: float | None = None
    ) -> VerifiedNotification:
        """Check a notify call's signature (WeChat Pay public key) and timestamp, decrypt its resource
        (AES-256-GCM with the APIv3 key). Raises `NotificationRejected`."""
        lowered = {name.lower(): value for name, value in headers.items()}
        if lowered.get("wechatpay-serial") != self._public_key_id:
            # Checked first: for an unknown serial the SDK would go and download platform certificates.
            raise NotificationRejected("notification is not signed with the configured WeChat Pay public key")
        try:
            decrypted = self._sdk.decrypt_callback(lowered, body)
        except Exception as exc:  # the SDK raises bare Exception for an unsupported algorithm
            raise NotificationRejected(f"notification not verifiable: {exc}") from exc
        if not decrypted:
            raise NotificationRejected("notification signature or encryption is not valid")
        try:
            sent = int(lowered.get("wechatpay-timestamp", ""))
        except ValueError as exc:
            raise NotificationRejected("notification has no valid Wechatpay-Timestamp") from exc
        if abs((time.time() if now is None else now) - sent) > self._tolerance_s:
            raise NotificationRejected(f"notification timestamp {sent} is stale", stale=True)
        # Authentic from here on: content WeChat does not document is malformed, not forged.
        result: dict[str, Any] = json.loads(body)  # an object: the SDK read its fields to decrypt it
        notification_id, event_type = result.get("id"), str(result.get("event_type", ""))
        try:
            result["resource"] = resource = object_value(json.loads(decrypted), where="resource")
            if event_type.startswith("REFUND."):
                subject = NotificationSubject.REFUND
                key = key_of_refund_no(text_field(resource, "out_refund_no", where="resource") or "")
            elif event_type.startswith("TRANSACTION."):
                subject, key = NotificationSubject.PAYMENT, text_field(resource, "attach", where="resource")
            else:
                subject, key = NotificationSubject.OTHER, None
        except (NotificationMalformed, ValueError) as exc:
            raise NotificationMalformed(
                str(exc),
                body=body,
                event_type=event_type,
                notification_id=notification_id if isinstance(notification_id, str) else None,
                content={**result, "resource": decrypted},
            ) from None
        return VerifiedNotification(
            provider=self.method,
            notification_id=str(notification_id or ""),
            event_type=event_type,
            subject=subject,
            key=key,
            payload=result,
        )

    # ---- plumbing ----

    def _jsapi_params(self, prepay_id: str) -> dict[str, str]:
        """What the mini-program passes to wx.requestPayment, signed with the merchant key."""
        timestamp, nonce, package = str(int(time.time())), secrets.token_hex(16), f"prepay_id={prepay_id}"
        signature = self._sdk.sign([self._appid, timestamp, nonce, package])
        return {
            "appId": str(self._appid),
            "timeStamp": timestamp,
            "nonceStr": nonce,
            "package": package,
            "signType": "RSA",
            "paySign": signature,
        }

    @staticmethod
    def _raise_for(answer: WeChatAnswer) -> None:
        """Raise for an error answer: 429 and 5xx are transient, other 4xx are final."""
        if answer.status < 300:
            return
        detail = f"WeChat Pay {answer.status} {answer.code}: {answer.json.get('message', '')}".strip()
        if answer.status == 429 or answer.status >= 500 or answer.code in ("SYSTEM_ERROR", "FREQUENCY_LIMITED"):
            raise ProviderUnavailable(detail)
        raise ProviderDeclined(detail)

    def _refund_from(self, body: dict[str, Any], key: str) -> ProviderRefund:
        amount = body.get("amount") or {}
        return ProviderRefund(
            provider=self.method,
            key=key,
            refund_id=str(body.get("refund_id", "")),
            payment_id=str(body.get("transaction_id") or body.get("out_trade_no") or ""),
            status=_REFUND_STATES.get(str(body.get("status")), RefundStatus.PROCESSING),
            amount_minor=int(amount.get("refund", 0)),
            created_at=_parse_time(body.get("create_time")),
            succeeded_at=_parse_time(body.get("success_time")),
        )


def _parse_time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value).astimezone(UTC) if value else None


def _minor(yuan: str) -> int:
    return int((Decimal(yuan or "0") * 100).to_integral_value())


def parse_trade_bill(text: str) -> list[StatementLine]:
    """Lines of a v3 trade bill (CSV, every value prefixed with a backquote, summary rows at the end)."""
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        return []
    header = [name.strip().lstrip("`") for name in rows[0]]
    lines = []
    for row in rows[1:]:
        if len(row) != len(header):
            break  # the summary block ("总交易单数,...") begins
        record = {name: value.strip().lstrip("`") for name, value in zip(header, row, strict=True)}
        at = datetime.strptime(record[_BILL_TIME], "%Y-%m-%d %H:%M:%S").replace(tzinfo=CHINA).astimezone(UTC)
        currency = record.get(_BILL_CURRENCY) or "CNY"
        if record[_BILL_STATE] == "REFUND":
            lines.append(
                StatementLine(
                    kind="refund",
                    key=key_of_refund_no(record[_BILL_OUT_REFUND_NO]),
                    provider_ref=record[_BILL_REFUND_ID],
                    amount_minor=-_minor(record[_BILL_REFUND]),
                    currency=currency,
                    at=at,
                )
            )
        elif record[_BILL_STATE] == "SUCCESS":
            lines.append(
                StatementLine(
                    kind="charge",
                    key=record.get(_BILL_ATTACH) or None,
                    provider_ref=record[_BILL_TRANSACTION],
                    amount_minor=_minor(record[_BILL_TOTAL]),
                    currency=currency,
                    at=at,
                )
            )
    return lines


def provider_from_settings(settings: Settings, db: object) -> WeChatPayProvider | None:
    """The WeChat Pay provider when its merchant settings are present (the registry's hook), else None."""
    return WeChatPayProvider(settings) if settings.wechat.mchid else None
