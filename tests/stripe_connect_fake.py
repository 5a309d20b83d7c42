"""A local fake of the Stripe Connect transfer endpoints swapflow's payouts use, for the real `stripe` SDK.

localstripe (the stand-in for payments) has no Transfer resource, so this speaks the small part of the
Stripe API that `stripe_payouts` calls and checks what the SDK sends as Stripe would, and stricter: the
secret key as a Bearer token, a `Stripe-Version`, form-encoded bodies with the documented fields, an
`Idempotency-Key` on every create (replayed for the same parameters, refused for others). It keeps the
platform's balance and connected accounts, records every request, lets a test play the platform's
dashboard (`reverse`), and fails, delays, or goes offline on demand.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

API_KEY = "sk_test_swapflow_connect"


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]  # flattened as sent: metadata[swapflow_key] → value
    headers: dict[str, str]  # lower-case names


@dataclass
class FakeTransfer:
    id: str
    amount: int
    currency: str
    destination: str
    transfer_group: str | None
    description: str | None
    metadata: dict[str, str]
    created: int = field(default_factory=lambda: int(time.time()))
    reversals: list[dict[str, Any]] = field(default_factory=list)

    @property
    def amount_reversed(self) -> int:
        return sum(int(reversal["amount"]) for reversal in self.reversals)


def _error(status: int, kind: str, message: str, **extra: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"type": kind, "message": message, **extra}}


class StripeConnectFake:
    """The fake server. `start()` / `stop()`; `settings_values()` configures swapflow's Stripe group."""

    def __init__(self) -> None:
        self.accounts: set[str] = set()
        self.balance: dict[str, int] = {}  # the platform's available balance, minor units per currency
        self.transfers: dict[str, FakeTransfer] = {}
        self.requests: list[RecordedRequest] = []
        self._idempotency: dict[str, tuple[tuple[str, dict[str, str]], int, dict[str, Any]]] = {}
        self._failures: list[tuple[str, int, dict[str, Any]]] = []  # (request prefix, status, answer)
        self._delays: list[tuple[str, float]] = []  # (request prefix, seconds)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._offline_port = 0

    # ---- life ----

    def start(self, port: int = 0) -> str:
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

    def settings_values(self) -> dict[str, Any]:
        """The `settings.stripe` fields of a platform talking to this fake."""
        return {"api_key": API_KEY, "api_base": self.url, "timeout_s": 1.0}

    # ---- knobs ----

    def connected_account(self) -> str:
        """A new connected account transfers may go to."""
        account = f"acct_{secrets.token_hex(8)}"
        self.accounts.add(account)
        return account

    def reverse(self, transfer_id: str, amount: int | None = None) -> FakeTransfer:
        """The platform takes (part of) a transfer back, as from the dashboard."""
        with self._lock:
            transfer = self.transfers[transfer_id]
            taken = transfer.amount - transfer.amount_reversed if amount is None else amount
            transfer.reversals.append(
                {
                    "id": f"trr_{secrets.token_hex(12)}",
                    "object": "transfer_reversal",
                    "amount": taken,
                    "currency": transfer.currency,
                    "transfer": transfer.id,
                    "created": int(time.time()),
                    "metadata": {},
                }
            )
            self.balance[transfer.currency] = self.balance.get(transfer.currency, 0) + taken
            return transfer

    def fail_next(self, status: int, kind: str, message: str = "injected", *, request: str = "") -> None:
        """The next request whose "METHOD /path" starts with `request` is answered with this error and has
        no effect."""
        self._failures.append((request, *_error(status, kind, message)))

    def delay_next_answer(self, seconds: float, *, request: str = "") -> None:
        """The next request (narrowed as for `fail_next`) takes effect, then its answer is held back
        `seconds` (and lost by a client that waits less)."""
        self._delays.append((request, seconds))

    def go_offline(self) -> None:
        """Stop listening (connections are refused), keeping every transfer."""
        self._offline_port = int(self.url.rsplit(":", 1)[1])
        self.stop()
        self._server = None

    def come_back(self) -> None:
        """Listen again on the same port."""
        assert self._server is None, "the fake is not offline"
        self.start(self._offline_port)

    # ---- the server side ----

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length).decode() if length else ""
        request = RecordedRequest(
            method=method,
            path=parts.path,
            query={name: values[0] for name, values in parse_qs(parts.query).items()},
            form={name: values[0] for name, values in parse_qs(body, keep_blank_values=True).items()},
            headers={name.lower(): value for name, value in handler.headers.items()},
        )
        self.requests.append(request)
        target = f"{method} {parts.path}"
        failure = next((knob for knob in self._failures if target.startswith(knob[0])), None)
        if failure is not None:
            self._failures.remove(failure)
            self._reply(handler, failure[1], failure[2])
            return
        delayed = next((knob for knob in self._delays if target.startswith(knob[0])), None)
        if delayed is not None:
            self._delays.remove(delayed)
        delay = delayed[1] if delayed else 0.0
        with self._lock:
            status, answer = self._checked(request)
        if delay:
            time.sleep(delay)
        self._reply(handler, status, answer)

    def _checked(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            return _error(401, "invalid_request_error", "Invalid API Key provided")
        if not request.headers.get("stripe-version"):
            return _error(400, "invalid_request_error", "a Stripe-Version header is expected")
        if request.method == "POST":
            if request.headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
                return _error(400, "invalid_request_error", "the body must be form-encoded")
            key = request.headers.get("idempotency-key")
            if not key:  # Stripe does not insist; swapflow must always send one
                return _error(400, "invalid_request_error", "swapflow sends an Idempotency-Key with every create")
            remembered = self._idempotency.get(key)
            if remembered is not None:
                sent, status, answer = remembered
                if sent != (request.path, request.form):
                    return _error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used with the same parameters they were first "
                        "used with.",
                    )
                return status, answer
            status, answer = self._route(request)
            self._idempotency[key] = ((request.path, request.form), status, answer)
            return status, answer
        return self._route(request)

    def _route(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        if request.path == "/v1/transfers" and request.method == "POST":
            return self._create_transfer(request.form)
        if request.path == "/v1/transfers" and request.method == "GET":
            return 200, self._list_transfers(request.query)
        found = re.fullmatch(r"/v1/transfers/(tr_\w+)", request.path)
        if found and request.method == "GET":
            transfer = self.transfers.get(found.group(1))
            if transfer is None:
                return _error(
                    404, "invalid_request_error", f"No such transfer: '{found.group(1)}'", code="resource_missing"
                )
            return 200, self._transfer_json(transfer)
        return _error(404, "invalid_request_error", f"Unrecognized request URL ({request.method}: {request.path})")

    def _create_transfer(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        allowed = {"amount", "currency", "destination", "transfer_group", "description"}
        unknown = [name for name in form if name not in allowed and not name.startswith("metadata[")]
        if unknown:
            return _error(400, "invalid_request_error", f"Received unknown parameter: {unknown[0]}", param=unknown[0])
        for name in ("amount", "currency", "destination"):
            if not form.get(name):
                return _error(400, "invalid_request_error", f"Missing required param: {name}.", param=name)
        if not form["amount"].isdigit() or int(form["amount"]) <= 0:
            return _error(400, "invalid_request_error", "Invalid positive integer", param="amount")
        if not re.fullmatch(r"[a-z]{3}", form["currency"]):
            return _error(400, "invalid_request_error", "Invalid currency", param="currency")
        if form["destination"] not in self.accounts:
            return _error(
                400,
                "invalid_request_error",
                f"No such destination: '{form['destination']}'",
                param="destination",
                code="resource_missing",
            )
        amount, currency = int(form["amount"]), form["currency"]
        if self.balance.get(currency, 0) < amount:
            return _error(
                400,
                "invalid_request_error",
                "You have insufficient available funds in your Stripe account.",
                code="balance_insufficient",
            )
        self.balance[currency] -= amount
        transfer = FakeTransfer(
            id=f"tr_{secrets.token_hex(12)}",
            amount=amount,
            currency=currency,
            destination=form["destination"],
            transfer_group=form.get("transfer_group"),
            description=form.get("description"),
            metadata={
                name[len("metadata[") : -1]: value for name, value in form.items() if name.startswith("metadata[")
            },
        )
        self.transfers[transfer.id] = transfer
        return 200, self._transfer_json(transfer)

    def _list_transfers(self, query: dict[str, str]) -> dict[str, Any]:
        chosen = [
            transfer
            for transfer in sorted(self.transfers.values(), key=lambda t: t.created, reverse=True)
            if query.get("transfer_group") in (None, transfer.transfer_group)
            and query.get("destination") in (None, transfer.destination)
        ]
        limit = int(query.get("limit", "10"))
        return {
            "object": "list",
            "url": "/v1/transfers",
            "has_more": len(chosen) > limit,
            "data": [self._transfer_json(transfer) for transfer in chosen[:limit]],
        }

    def _transfer_json(self, transfer: FakeTransfer) -> dict[str, Any]:
        return {
            "id": transfer.id,
            "object": "transfer",
            "amount": transfer.amount,
            "amount_reversed": transfer.amount_reversed,
            "balance_transaction": f"txn_{transfer.id[3:]}",
            "created": transfer.created,
            "currency": transfer.currency,
            "description": transfer.description,
            "destination": transfer.destination,
            "destination_payment": f"py_{transfer.id[3:]}",
            "livemode": False,
            "metadata": transfer.metadata,
            "reversals": {
                "object": "list",
                "url": f"/v1/transfers/{transfer.id}/reversals",
                "has_more": False,
                "total_count": len(transfer.reversals),
                "data": list(reversed(transfer.reversals)),
            },
            "reversed": transfer.amount_reversed >= transfer.amount,
            "source_transaction": None,
            "source_type": "card",
            "transfer_group": transfer.transfer_group,
        }

    @staticmethod
    def _reply(handler: BaseHTTPRequestHandler, status: int, answer: dict[str, Any]) -> None:
        text = json.dumps(answer).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(text)))
            handler.send_header("Request-Id", f"req_{secrets.token_hex(8)}")
            handler.end_headers()
            handler.wfile.write(text)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting: the answer is lost
            pass


@pytest.fixture
def stripe_connect() -> Iterator[StripeConnectFake]:
    """A fresh Stripe Connect fake on a free port, with a platform balance of 1,000,000.00 in EUR and CNY."""
    fake = StripeConnectFake()
    fake.balance = {"eur": 100_000_000, "cny": 100_000_000}
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
