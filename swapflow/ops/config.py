"""Shapes of the ops settings (in `swapflow.settings`): SLA deadlines and alert channels."""

from __future__ import annotations

from pydantic import BaseModel


class OpsSla(BaseModel):
    """How long a work order of one severity may wait for its technician's ack, and for the fix."""

    ack_s: float
    resolve_s: float


class WebhookChannel(BaseModel):
    """An alert channel: a URL that gets each alert signed (HMAC-SHA256); `template` (jinja2) shapes
    the body for IM-style channels, else the alert is sent as JSON."""

    name: str
    url: str
    secret: str
    template: str | None = None
