"""A local fake of the WeChat Pay v3 endpoints swapflow uses, so the `wechatpayv3` SDK's real signing,
verification and decryption run in tests.

It verifies every request's `Authorization: WECHATPAY2-SHA256-RSA2048 ...` signature with the merchant's
public key, signs every answer with its own platform key (public-key mode: `Wechatpay-Serial` is the public
key id), keeps orders, refunds and merchant transfer batches in memory, lets a test play the rider (`pay`)
and WeChat's back office (`settle_refund`, `process_transfer`, `settle_transfer`, `close_transfer`), go
offline and come back (`go_offline`, `come_back`), and builds signed, AES-GCM-encrypted notifications. Keys
are generated per fake.
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CHINA = timezone(timedelta(hours=8))
TRANSFER_NUMBER = re.compile(r"[0-9A-Za-z]{5,32}")  # out_batch_no / out_detail_no
BILL_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,"
    "货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,"
    "商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
).split(",")


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _sign(key: rsa.RSAPrivateKey, message: str) -> str:
    return base64.b64encode(key.sign(message.encode(), padding.PKCS1v15(), hashes.SHA256())).decode()


def _beijing(at: float) -> str:
    return datetime.fromtimestamp(at, CHINA).isoformat(timespec="seconds")


@dataclass
class FakeOrder:
    out_trade_no: str
    prepay_id: str
    amount: int
    currency: str
    openid: str
    description: str
    attach: str = ""
    state: str = "NOTPAY"
    transaction_id: str | None = None
    success_time: float | None = None


@dataclass
class FakeRefund:
    out_refund_no: str
    refund_id: str
    out_trade_no: str
    amount: int
    total: int
    currency: str
    status: str = "PROCESSING"
    created: float = field(default_factory=time.time)
    success_time: float | None = None


@dataclass
class FakeTransferDetail:
    out_detail_no: str
    detail_id: str
    amount: int
    remark: str
    openid: str
    user_name: str | None  # decrypted: what the merchant sent, encrypted with the platform key
    status: str = "INIT"
    fail_reason: str | None = None
    updated: float = field(default_factory=time.time)


@dataclass
class FakeBatch:
    out_batch_no: str
    batch_id: str
    appid: str
    batch_name: str
    batch_remark: str
    total_amount: int
    total_num: int
    scene_id: str | None
    details: list[FakeTransferDetail]
    status: str = "ACCEPTED"
    close_reason: str | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def parameters(self) -> tuple[Any, ...]:
        """What a re-entry under the same number must repeat to be answered this batch."""
        details = tuple((d.out_detail_no, d.amount, d.remark, d.openid, d.user_name) for d in self.details)
        return (
            self.appid,
            self.batch_name,
            self.batch_remark,
            self.total_amount,
            self.total_num,
            self.scene_id,
            details,
        )


class WeChatPayFake:
    """The fake server. Start with `start()`, stop with `stop()`; `settings_values()` configures a provider."""

    def __init__(self) -> None:
        self.mchid, self.appid = "1900000109", "wx8888888888888888"
        self.apiv3_key = secrets.token_hex(16)  # 32 characters, as WeChat's APIv3 keys are
        self.merchant_key, self.platform_key = _new_key(), _new_key()
        self.merchant_serial = uuid.uuid4().hex[:40].upper()
        self.public_key_id = f"PUB_KEY_ID_{uuid.uuid4().hex[:24].upper()}"
        self.orders: dict[str, FakeOrder] = {}
        self.refunds: dict[str, FakeRefund] = {}
        self.created_orders = 0  # JSAPI orders actually created (not answered again for a repeat)
        self.batches: dict[str, FakeBatch] = {}
        self.created_batches = 0  # transfer batches actually created (not answered again for a re-entry)
        self.bad_signatures = 0
        self._delays: list[tuple[float, str]] = []  # (seconds, only requests whose method and path start so)
        self._failures: list[tuple[int, str, str]] = []  # (status, code, the same prefix)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._offline_port = 0

    # ---- life ----

    def start(self, port: int = 0) -> str:
        """Serve on loopback (a free port unless `port` is given); returns the gateway URL."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def settings_values(self, notify_url: str = "https://swapflow.example/v1/payments/wechat/notify") -> dict[str, Any]:
        """The `settings.wechat` fields of a merchant talking to this fake."""
        return {
            "mchid": self.mchid,
            "appid": self.appid,
            "private_key": private_pem(self.merchant_key),
            "cert_serial_no": self.merchant_serial,
            "apiv3_key": self.apiv3_key,
            "public_key": _public_pem(self.platform_key),
            "public_key_id": self.public_key_id,
            "notify_url": notify_url,
            "gateway_url": self.url,
            "timeout_s": 2.0,
        }

    # ---- knobs: the rider, WeChat's back office, faults ----

    def pay(self, out_trade_no: str) -> FakeOrder:
        """The rider confirms the order in the app."""
        with self._lock:
            order = self.orders[out_trade_no]
            assert order.state == "NOTPAY", f"order {out_trade_no} is {order.state}"
            order.state, order.success_time = "SUCCESS", time.time()
            order.transaction_id = f"4200{secrets.randbelow(10**24):024d}"
            return order

    def pay_sheet_opens(self, params: dict[str, str]) -> FakeOrder:
        """What WeChat's pay sheet checks of `wx.requestPayment`'s parameters: our app id, a `paySign` the
        merchant's key made over `appId, timeStamp, nonceStr, package`, and a prepay id of an unpaid order.
        Returns that order; raises if any of it does not hold."""
        assert params["appId"] == self.appid and params["signType"] == "RSA"
        message = "".join(f"{params[name]}\n" for name in ("appId", "timeStamp", "nonceStr", "package"))
        self.merchant_key.public_key().verify(
            base64.b64decode(params["paySign"]), message.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        prepay_id = params["package"].removeprefix("prepay_id=")
        with self._lock:
            [order] = [order for order in self.orders.values() if order.prepay_id == prepay_id]
            assert order.state == "NOTPAY", f"order {order.out_trade_no} is {order.state}"
            return order

    def settle_refund(self, out_refund_no: str, status: str) -> FakeRefund:
        """Move a refund on: SUCCESS, CLOSED or ABNORMAL."""
        with self._lock:
            refund = self.refunds[out_refund_no]
            refund.status = status
            if status == "SUCCESS":
                refund.success_time = time.time()
            return refund

    def process_transfer(self, out_batch_no: str) -> FakeBatch:
        """WeChat starts paying an accepted batch: it and its details are PROCESSING."""
        with self._lock:
            batch = self.batches[out_batch_no]
            assert batch.status in ("ACCEPTED", "PROCESSING"), f"batch {out_batch_no} is {batch.status}"
            batch.status, batch.updated = "PROCESSING", time.time()
            for detail in batch.details:
                detail.status, detail.updated = "PROCESSING", time.time()
            return batch

    def settle_transfer(self, out_batch_no: str, status: str = "SUCCESS", fail_reason: str | None = None) -> FakeBatch:
        """Every detail of a batch ends SUCCESS, or FAIL with `fail_reason` (ACCOUNT_FROZEN ...); the batch
        is FINISHED."""
        assert status in ("SUCCESS", "FAIL") and (status == "FAIL") == (fail_reason is not None)
        with self._lock:
            batch = self.batches[out_batch_no]
            assert batch.status in ("ACCEPTED", "PROCESSING"), f"batch {out_batch_no} is {batch.status}"
            batch.status, batch.updated = "FINISHED", time.time()
            for detail in batch.details:
                detail.status, detail.fail_reason, detail.updated = status, fail_reason, time.time()
            return batch

    def close_transfer(self, out_batch_no: str, reason: str = "OVERDUE_CLOSE") -> FakeBatch:
        """WeChat closes a batch it never paid (not confirmed in time, revoked): CLOSED with `reason`."""
        with self._lock:
            batch = self.batches[out_batch_no]
            assert batch.status in ("ACCEPTED", "PROCESSING"), f"batch {out_batch_no} is {batch.status}"
            batch.status, batch.close_reason, batch.updated = "CLOSED", reason, time.time()
            return batch

    def go_offline(self) -> None:
        """Stop listening (connections are refused), keeping every order, refund and batch."""
        self._offline_port = int(self.url.rsplit(":", 1)[1])
        self.stop()
        self._server = None

    def come_back(self) -> None:
        """Listen again on the same port, with the state kept."""
        assert self._server is None, "the fake is not offline"
        self.start(self._offline_port)

    def delay_next_answer(self, seconds: float, *, request: str = "") -> None:
        """The next request takes effect, then its answer is held back `seconds` (longer than the client
        waits: the answer is lost after the money moved). `request` narrows it to the next one whose
        "METHOD /path" starts so ("POST /v3/transfer/batches")."""
        self._delays.append((seconds, request))

    def fail_next(self, status: int, code: str, *, request: str = "") -> None:
        """The next request (narrowed as for `delay_next_answer`) is answered with an error and has no effect."""
        self._failures.append((status, code, request))

    # ---- notifications ----

    def notification(
        self,
        event_type: str,
        resource: Any,
        *,
        timestamp: int | None = None,
        notification_id: str | None = None,
        signing_key: rsa.RSAPrivateKey | None = None,
        apiv3_key: str | None = None,
    ) -> tuple[dict[str, str], bytes]:
        """Headers and body of a notify call, encrypted and signed as WeChat Pay does."""
        nonce, associated = secrets.token_hex(6), "transaction" if event_type.startswith("TRANSACTION") else "refund"
        ciphertext = AESGCM((apiv3_key or self.apiv3_key).encode()).encrypt(
            nonce.encode(), json.dumps(resource).encode(), associated.encode()
        )
        body = json.dumps(
            {
                "id": notification_id or str(uuid.uuid4()),
                "create_time": _beijing(time.time()),
                "resource_type": "encrypt-resource",
                "event_type": event_type,
                "summary": event_type,
                "resource": {
                    "original_type": associated,
                    "algorithm": "AEAD_AES_256_GCM",
                    "ciphertext": base64.b64encode(ciphertext).decode(),
                    "associated_data": associated,
                    "nonce": nonce,
                },
            }
        ).encode()
        return self._signed_headers(body.decode(), timestamp=timestamp, key=signing_key), body

    def order_resource(self, out_trade_no: str) -> dict[str, Any]:
        """The decrypted resource of a TRANSACTION.SUCCESS notification for an order."""
        return self._order_json(self.orders[out_trade_no])

    def refund_resource(self, out_refund_no: str) -> dict[str, Any]:
        """The decrypted resource of a REFUND.* notification."""
        refund = self.refunds[out_refund_no]
        return {
            "mchid": self.mchid,
            "out_trade_no": refund.out_trade_no,
            "transaction_id": self.orders[refund.out_trade_no].transaction_id,
            "out_refund_no": refund.out_refund_no,
            "refund_id": refund.refund_id,
            "refund_status": refund.status,
            "amount": {
                "total": refund.total,
                "refund": refund.amount,
                "payer_total": refund.total,
                "payer_refund": refund.amount,
            },
        }

    # ---- the server side ----

    def _signed_headers(
        self, body: str, *, timestamp: int | None = None, key: rsa.RSAPrivateKey | None = None
    ) -> dict[str, str]:
        stamp, nonce = str(int(time.time()) if timestamp is None else timestamp), secrets.token_hex(16)
        return {
            "Wechatpay-Timestamp": stamp,
            "Wechatpay-Nonce": nonce,
            "Wechatpay-Signature": _sign(key or self.platform_key, f"{stamp}\n{nonce}\n{body}\n"),
            "Wechatpay-Serial": self.public_key_id,
            "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048",
        }

    def _verify_request(self, method: str, path: str, body: str, authorization: str) -> bool:
        scheme, _, params = authorization.partition(" ")
        fields = dict(part.split("=", 1) for part in params.split(",") if "=" in part)
        fields = {name: value.strip('"') for name, value in fields.items()}
        if (
            scheme != "WECHATPAY2-SHA256-RSA2048"
            or fields.get("mchid") != self.mchid
            or fields.get("serial_no") != self.merchant_serial
        ):
            return False
        message = f"{method}\n{path}\n{fields.get('timestamp')}\n{fields.get('nonce_str')}\n{body}\n"
        try:
            self.merchant_key.public_key().verify(
                base64.b64decode(fields.get("signature", "")), message.encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except (InvalidSignature, ValueError):
            return False
        return True

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        if not self._verify_request(method, handler.path, body, handler.headers.get("Authorization", "")):
            self.bad_signatures += 1
            self._reply(handler, 401, {"code": "SIGN_ERROR", "message": "signature verification failed"})
            return
        failure = _take(self._failures, f"{method} {handler.path}")
        if failure is not None:
            status, code, _ = failure
            self._reply(handler, status, {"code": code, "message": code})
            return
        delayed = _take(self._delays, f"{method} {handler.path}")
        delay = delayed[0] if delayed else 0.0
        with self._lock:
            status, answer = self._route(
                method, handler.path, json.loads(body) if body else {}, handler.headers.get("Wechatpay-Serial")
            )
        if delay:
            time.sleep(delay)
        self._reply(handler, status, answer)

    def _reply(self, handler: BaseHTTPRequestHandler, status: int, answer: dict[str, Any] | bytes | None) -> None:
        try:
            if isinstance(answer, bytes):  # a bill download: not signed, as on WeChat
                handler.send_response(status)
                handler.send_header("Content-Type", "application/octet-stream")
                handler.send_header("Content-Length", str(len(answer)))
                handler.end_headers()
                handler.wfile.write(answer)
                return
            text = json.dumps(answer) if answer is not None else ""
            handler.send_response(status)
            for name, value in self._signed_headers(text).items():
                handler.send_header(name, value)
            if text:
                handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(text.encode())))
            handler.end_headers()
            handler.wfile.write(text.encode())
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting: the answer is lost
            pass

    def _route(
        self, method: str, target: str, data: dict[str, Any], serial: str | None = None
    ) -> tuple[int, dict[str, Any] | bytes | None]:
        parts = urlsplit(target)
        path, query = parts.path, {k: v[0] for k, v in parse_qs(parts.query).items()}
        if method == "POST" and path == "/v3/pay/transactions/jsapi":
            return self._create_order(data)
        if path.startswith("/v3/pay/transactions/out-trade-no/"):
            out_trade_no = path.removeprefix("/v3/pay/transactions/out-trade-no/")
            if method == "POST" and out_trade_no.endswith("/close"):
                return self._close(out_trade_no.removesuffix("/close"))
            order = self.orders.get(out_trade_no)
            if order is None:
                return 404, {"code": "ORDER_NOT_EXIST", "message": "order does not exist"}
            return 200, self._order_json(order)
        if method == "POST" and path == "/v3/refund/domestic/refunds":
            return self._create_refund(data)
        if method == "GET" and path.startswith("/v3/refund/domestic/refunds/"):
            refund = self.refunds.get(path.removeprefix("/v3/refund/domestic/refunds/"))
            if refund is None:
                return 404, {"code": "RESOURCE_NOT_EXISTS", "message": "refund does not exist"}
            return 200, self._refund_json(refund)
        if method == "POST" and path == "/v3/transfer/batches":
            return self._create_batch(data, serial)
        if method == "GET" and path.startswith("/v3/transfer/batches/out-batch-no/"):
            number, _, detail_no = path.removeprefix("/v3/transfer/batches/out-batch-no/").partition(
                "/details/out-detail-no/"
            )
            batch = self.batches.get(number)
            if batch is None:
                return 404, {"code": "NOT_FOUND", "message": "记录不存在"}
            if detail_no:
                detail = next((d for d in batch.details if d.out_detail_no == detail_no), None)
                if detail is None:
                    return 404, {"code": "NOT_FOUND", "message": "记录不存在"}
                return 200, self._detail_json(batch, detail)
            return 200, self._batch_json(batch, with_details=query.get("need_query_detail") == "true")
        if method == "GET" and path == "/v3/bill/tradebill":
            return 200, {
                "hash_type": "SHA1",
                "hash_value": "",
                "download_url": f"{self.url}/v3/billdownload/file?token={query['bill_date']}",
            }
        if method == "GET" and path == "/v3/billdownload/file":
            return 200, gzip.compress(self._bill(query["token"]).encode("utf-8"))
        return 404, {"code": "NOT_FOUND", "message": f"no route {method} {path}"}

    def _create_order(self, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if data.get("mchid") != self.mchid or data.get("appid") != self.appid or not data.get("notify_url"):
            return 400, {"code": "PARAM_ERROR", "message": "mchid, appid and notify_url are required"}
        out_trade_no, amount = data["out_trade_no"], data["amount"]
        order = self.orders.get(out_trade_no)
        if order is not None:
            if order.state == "SUCCESS" or order.state == "REFUND":
                return 400, {"code": "ORDERPAID", "message": "order already paid"}
            if order.state == "CLOSED":
                return 400, {"code": "ORDER_CLOSED", "message": "order closed"}
            if order.amount != amount["total"]:
                return 400, {"code": "OUT_TRADE_NO_USED", "message": "out_trade_no used with other parameters"}
            return 200, {"prepay_id": order.prepay_id}
        order = FakeOrder(
            out_trade_no=out_trade_no,
            prepay_id=f"wx{uuid.uuid4().hex}",
            amount=amount["total"],
            currency=amount.get("currency", "CNY"),
            openid=data["payer"]["openid"],
            description=data["description"],
            attach=data.get("attach", ""),
        )
        self.orders[out_trade_no] = order
        self.created_orders += 1
        return 200, {"prepay_id": order.prepay_id}

    def _close(self, out_trade_no: str) -> tuple[int, dict[str, Any] | None]:
        order = self.orders.get(out_trade_no)
        if order is None:
            return 404, {"code": "ORDER_NOT_EXIST", "message": "order does not exist"}
        if order.state in ("SUCCESS", "REFUND"):
            return 400, {"code": "ORDERPAID", "message": "order already paid"}
        order.state = "CLOSED"
        return 204, None

    def _create_refund(self, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        existing = self.refunds.get(data["out_refund_no"])
        if existing is not None:
            return 200, self._refund_json(existing)
        order = self.orders.get(data.get("out_trade_no", ""))
        if order is None:
            return 404, {"code": "ORDER_NOT_EXIST", "message": "order does not exist"}
        if order.state not in ("SUCCESS", "REFUND"):
            return 400, {"code": "INVALID_REQUEST", "message": "order not paid"}
        amount = data["amount"]
        refunded = sum(
            r.amount for r in self.refunds.values() if r.out_trade_no == order.out_trade_no and r.status != "CLOSED"
        )
        if amount["total"] != order.amount or amount["refund"] > order.amount - refunded:
            return 400, {"code": "INVALID_REQUEST", "message": "refund amount exceeds what is left"}
        refund = FakeRefund(
            out_refund_no=data["out_refund_no"],
            refund_id=f"50{secrets.randbelow(10**26):026d}",
            out_trade_no=order.out_trade_no,
            amount=amount["refund"],
            total=order.amount,
            currency=amount.get("currency", "CNY"),
        )
        self.refunds[refund.out_refund_no] = refund
        order.state = "REFUND"
        return 200, self._refund_json(refund)

    def _create_batch(self, data: dict[str, Any], serial: str | None) -> tuple[int, dict[str, Any]]:
        """发起商家转账: validated as WeChat does; a re-entry with the same parameters answers the batch."""

        def refused(message: str) -> tuple[int, dict[str, Any]]:
            return 400, {"code": "PARAM_ERROR", "message": message}

        items = data.get("transfer_detail_list") or []
        if data.get("appid") != self.appid:
            return refused("appid is not bound to the merchant")
        if not TRANSFER_NUMBER.fullmatch(str(data.get("out_batch_no", ""))):
            return refused("out_batch_no must be 5-32 of [0-9A-Za-z]")
        for name in ("batch_name", "batch_remark"):
            if not 1 <= len(str(data.get(name, ""))) <= 32:
                return refused(f"{name} must hold 1-32 characters")
        if not items or data.get("total_num") != len(items):
            return refused("total_num must equal the number of details")
        if data.get("total_amount") != sum(int(item.get("transfer_amount", 0)) for item in items):
            return refused("total_amount must equal the sum of the details")
        details = []
        for item in items:
            if not TRANSFER_NUMBER.fullmatch(str(item.get("out_detail_no", ""))):
                return refused("out_detail_no must be 5-32 of [0-9A-Za-z]")
            if not item.get("openid") or int(item.get("transfer_amount", 0)) <= 0:
                return refused("a detail needs an openid and a positive transfer_amount")
            if not 1 <= len(str(item.get("transfer_remark", ""))) <= 32:
                return refused("transfer_remark must hold 1-32 characters")
            user_name = None
            if item.get("user_name"):
                if serial != self.public_key_id:
                    return refused("user_name is encrypted with an unknown key (Wechatpay-Serial)")
                user_name = self.platform_key.decrypt(
                    base64.b64decode(item["user_name"]),
                    padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None),
                ).decode()
            elif item["transfer_amount"] >= 200_000:
                return refused("user_name is required from 2,000 yuan")
            details.append(
                FakeTransferDetail(
                    out_detail_no=item["out_detail_no"],
                    detail_id=f"1040{secrets.randbelow(10**36):036d}",
                    amount=int(item["transfer_amount"]),
                    remark=item["transfer_remark"],
                    openid=item["openid"],
                    user_name=user_name,
                )
            )
        batch = FakeBatch(
            out_batch_no=data["out_batch_no"],
            batch_id=f"1030{secrets.randbelow(10**36):036d}",
            appid=data["appid"],
            batch_name=data["batch_name"],
            batch_remark=data["batch_remark"],
            total_amount=data["total_amount"],
            total_num=data["total_num"],
            scene_id=data.get("transfer_scene_id"),
            details=details,
        )
        existing = self.batches.get(batch.out_batch_no)
        if existing is not None:
            if existing.parameters() != batch.parameters():
                return 400, {"code": "INVALID_REQUEST", "message": "单号已存在但信息不一致,请查单后比较确认"}
            batch = existing
        else:
            self.batches[batch.out_batch_no] = batch
            self.created_batches += 1
        return 200, {
            "out_batch_no": batch.out_batch_no,
            "batch_id": batch.batch_id,
            "create_time": _beijing(batch.created),
            "batch_status": batch.status,
        }

    def _batch_json(self, batch: FakeBatch, *, with_details: bool) -> dict[str, Any]:
        done = [d for d in batch.details if d.status in ("SUCCESS", "FAIL")]
        summary: dict[str, Any] = {
            "mchid": self.mchid,
            "out_batch_no": batch.out_batch_no,
            "batch_id": batch.batch_id,
            "appid": batch.appid,
            "batch_status": batch.status,
            "batch_type": "API",
            "batch_name": batch.batch_name,
            "batch_remark": batch.batch_remark,
            "total_amount": batch.total_amount,
            "total_num": batch.total_num,
            "create_time": _beijing(batch.created),
            "update_time": _beijing(batch.updated),
            "success_amount": sum(d.amount for d in done if d.status == "SUCCESS"),
            "success_num": sum(1 for d in done if d.status == "SUCCESS"),
            "fail_amount": sum(d.amount for d in done if d.status == "FAIL"),
            "fail_num": sum(1 for d in done if d.status == "FAIL"),
        }
        if batch.scene_id:
            summary["transfer_scene_id"] = batch.scene_id
        if batch.close_reason:
            summary["close_reason"] = batch.close_reason
        answer: dict[str, Any] = {"offset": 0, "limit": 20, "transfer_batch": summary}
        if with_details:
            answer["transfer_detail_list"] = [
                {"detail_id": d.detail_id, "out_detail_no": d.out_detail_no, "detail_status": d.status}
                for d in batch.details
            ]
        return answer

    def _detail_json(self, batch: FakeBatch, detail: FakeTransferDetail) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "mchid": self.mchid,
            "out_batch_no": batch.out_batch_no,
            "batch_id": batch.batch_id,
            "appid": batch.appid,
            "out_detail_no": detail.out_detail_no,
            "detail_id": detail.detail_id,
            "detail_status": detail.status,
            "transfer_amount": detail.amount,
            "transfer_remark": detail.remark,
            "openid": detail.openid,
            "initiate_time": _beijing(batch.created),
            "update_time": _beijing(detail.updated),
        }
        if detail.fail_reason:
            answer["fail_reason"] = detail.fail_reason
        return answer

    def _order_json(self, order: FakeOrder) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "appid": self.appid,
            "mchid": self.mchid,
            "out_trade_no": order.out_trade_no,
            "trade_type": "JSAPI",
            "trade_state": order.state,
            "trade_state_desc": order.state,
            "payer": {"openid": order.openid},
            "attach": order.attach,
            "amount": {
                "total": order.amount,
                "currency": order.currency,
                **({"payer_total": order.amount, "payer_currency": order.currency} if order.transaction_id else {}),
            },
        }
        if order.transaction_id:
            answer |= {
                "transaction_id": order.transaction_id,
                "bank_type": "OTHERS",
                "success_time": _beijing(order.success_time or time.time()),
            }
        return answer

    def _refund_json(self, refund: FakeRefund) -> dict[str, Any]:
        answer: dict[str, Any] = {
            "refund_id": refund.refund_id,
            "out_refund_no": refund.out_refund_no,
            "transaction_id": self.orders[refund.out_trade_no].transaction_id,
            "out_trade_no": refund.out_trade_no,
            "channel": "ORIGINAL",
            "user_received_account": "招商银行信用卡0403",
            "create_time": _beijing(refund.created),
            "status": refund.status,
            "funds_account": "AVAILABLE",
            "amount": {
                "total": refund.total,
                "refund": refund.amount,
                "payer_total": refund.total,
                "payer_refund": refund.amount,
                "settlement_refund": refund.amount,
                "settlement_total": refund.total,
                "discount_refund": 0,
                "currency": refund.currency,
            },
        }
        if refund.success_time:
            answer["success_time"] = _beijing(refund.success_time)
        return answer

    def _bill(self, bill_date: str) -> str:
        """The ALL trade bill of a Beijing-time day, in WeChat's CSV layout."""

        def row(values: dict[str, str]) -> str:
            return ",".join("`" + values.get(name, "") for name in BILL_HEADER)

        rows, total, refunded = [], 0, 0
        for order in self.orders.values():
            if order.success_time and datetime.fromtimestamp(order.success_time, CHINA).date().isoformat() == bill_date:
                total += order.amount
                rows.append(
                    row(
                        {
                            "交易时间": _bill_time(order.success_time),
                            "公众账号ID": self.appid,
                            "商户号": self.mchid,
                            "微信订单号": order.transaction_id or "",
                            "商户订单号": order.out_trade_no,
                            "用户标识": order.openid,
                            "交易类型": "JSAPI",
                            "交易状态": "SUCCESS",
                            "货币种类": order.currency,
                            "应结订单金额": _yuan(order.amount),
                            "订单金额": _yuan(order.amount),
                            "退款金额": "0.00",
                            "商品名称": order.description,
                            "商户数据包": order.attach,
                        }
                    )
                )
        for refund in self.refunds.values():
            if (
                refund.success_time
                and datetime.fromtimestamp(refund.success_time, CHINA).date().isoformat() == bill_date
            ):
                refunded += refund.amount
                order = self.orders[refund.out_trade_no]
                rows.append(
                    row(
                        {
                            "交易时间": _bill_time(refund.success_time),
                            "公众账号ID": self.appid,
                            "商户号": self.mchid,
                            "微信订单号": order.transaction_id or "",
                            "商户订单号": order.out_trade_no,
                            "用户标识": order.openid,
                            "交易类型": "JSAPI",
                            "交易状态": "REFUND",
                            "货币种类": refund.currency,
                            "应结订单金额": "0.00",
                            "微信退款单号": refund.refund_id,
                            "商户退款单号": refund.out_refund_no,
                            "退款金额": _yuan(refund.amount),
                            "退款类型": "ORIGINAL",
                            "退款状态": "SUCCESS",
                            "订单金额": "0.00",
                            "申请退款金额": _yuan(refund.amount),
                            "商户数据包": order.attach,
                        }
                    )
                )
        summary = [
            "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额",
            f"`{len(rows)},`{_yuan(total)},`{_yuan(refunded)},`0.00,`0.00,`{_yuan(total)},`{_yuan(refunded)}",
        ]
        return "\n".join([",".join(BILL_HEADER), *rows, *summary]) + "\n"


Knob = TypeVar("Knob", tuple[float, str], tuple[int, str, str])


def _take(knobs: list[Knob], request: str) -> Knob | None:
    """The first knob whose request prefix (its last item) `request` starts with, removed from `knobs`."""
    for index, knob in enumerate(knobs):
        if request.startswith(knob[-1]):
            return knobs.pop(index)
    return None


def _yuan(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def _bill_time(at: float) -> str:
    return datetime.fromtimestamp(at, CHINA).strftime("%Y-%m-%d %H:%M:%S")
