"""Alert channels: signed webhooks. The body is the alert as JSON, or what the channel's jinja2
template makes of it (IM-style channels); the signature is HMAC-SHA256 over `<timestamp>.<body>`
with the channel's secret, so a receiver can check both origin and freshness."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import datetime
from typing import Any

import httpx
from jinja2 import Environment, StrictUndefined

from swapflow.db.ops import Alert
from swapflow.ops.config import WebhookChannel

SIGNATURE_HEADER = "X-Swapflow-Signature"
TIMESTAMP_HEADER = "X-Swapflow-Timestamp"
EVENT_HEADER = "X-Swapflow-Event"

_templates = Environment(undefined=StrictUndefined, autoescape=False)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, timestamp + "." + body)."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether `signature` is ours for this timestamp and body (constant-time compare)."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def alert_document(alert: Alert, event: str, city_code: str | None) -> dict[str, Any]:
    """The alert as channels see it."""
    return {
        "event": event,
        "id": alert.id,
        "kind": alert.kind,
        "severity": alert.severity,
        "status": alert.status,
        "cabinet_id": alert.cabinet_id,
        "slot_no": alert.slot_no,
        "battery_serial": alert.battery_serial,
        "city_code": city_code,
        "message": alert.message,
        "occurrences": alert.occurrences,
        "created_at": _iso(alert.created_at),
        "resolved_at": _iso(alert.resolved_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def render_body(channel: WebhookChannel, document: dict[str, Any]) -> bytes:
    """The request body for a channel."""
    if channel.template is None:
        return json.dumps(document, separators=(",", ":")).encode()
    return _templates.from_string(channel.template).render(alert=document).encode()


async def post_signed(
    http: httpx.AsyncClient, channel: WebhookChannel, body: bytes, event: str, timestamp: str
) -> httpx.Response:
    """POST the body to the channel with its signature headers."""
    return await http.post(
        channel.url,
        content=body,
        headers={
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            EVENT_HEADER: event,
            SIGNATURE_HEADER: sign(channel.secret, timestamp, body),
        },
    )
