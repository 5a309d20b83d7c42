"""Payment notifications from the providers: WeChat Pay's notify calls and Stripe's webhooks.

Each is verified on its raw body (signature, and a timestamp within ±`notification_tolerance_s`), recorded
once, and answered in the provider's own terms: success is 204 (WeChat) / 200 (Stripe); a failure is a
problem document with a 4xx/5xx status, which for WeChat also carries `{"code": "FAIL", "message": ...}`.
A 5xx makes the provider send the notification again. An authentic notification whose content is not in the
provider's documented shape is answered 400 and recorded (status `malformed`), never acted on.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from swapflow.api.deps import DatabaseDep, SettingsDep, TemporalDep
from swapflow.api.problems import problem_response, problem_responses
from swapflow.db.engine import Database
from swapflow.payments.notifications import (
    NotificationMalformed,
    NotificationNotDelivered,
    NotificationRejected,
    process_notification,
    record_malformed,
)
from swapflow.payments.provider import PaymentMethod, ProviderError
from swapflow.payments.stripe import StripeProvider
from swapflow.payments.stripe import provider_from_settings as stripe_from_settings
from swapflow.payments.wechat import WeChatPayProvider
from swapflow.payments.wechat import provider_from_settings as wechat_from_settings
from swapflow.services.temporal import TemporalConnector
from swapflow.settings import Settings

router = APIRouter(prefix="/v1/payments", tags=["payments"])
log = logging.getLogger(__name__)

NotifyingProvider = WeChatPayProvider | StripeProvider


def notifying_provider(request: Request, settings: Settings, method: PaymentMethod) -> NotifyingProvider | None:
    """The provider that verifies `method`'s notifications, built once per app; None when not configured."""
    cache: dict[PaymentMethod, NotifyingProvider | None] | None = getattr(
        request.app.state, "notifying_providers", None
    )
    if cache is None:
        cache = request.app.state.notifying_providers = {}
    if method not in cache:
        factory = wechat_from_settings if method is PaymentMethod.WECHAT else stripe_from_settings
        cache[method] = factory(settings, None)
    return cache[method]


async def _receive(
    request: Request, method: PaymentMethod, settings: Settings, db: Database, temporal: TemporalConnector, ok: Response
) -> Response:
    def fail(status: int, title: str, detail: str) -> JSONResponse:
        # WeChat reads {"code": "FAIL", "message": ...}: both fit in one problem document.
        extensions: dict[str, Any] = {"code": "FAIL", "message": detail} if method is PaymentMethod.WECHAT else {}
        return problem_response(status, title, detail, instance=request.url.path, **extensions)

    provider = notifying_provider(request, settings, method)
    if provider is None:
        # Nothing here to receive it: for the sender, as if the endpoint did not exist.
        return fail(404, "Provider not configured", f"{method.value} payments are not configured here")
    body = await request.body()
    try:
        note = provider.verify_notification(request.headers, body)
    except NotificationRejected as exc:
        if exc.stale:
            return fail(400, "Stale notification", exc.reason)
        return fail(401, "Notification not authentic", exc.reason)
    except NotificationMalformed as exc:  # authentic, so kept; a retry of it is answered the same
        await record_malformed(db, method, exc)
        log.warning("%s notification %s is malformed: %s", method.value, exc.notification_id, exc.reason)
        return fail(400, "Malformed notification", exc.reason)
    try:
        outcome = await process_notification(note, provider, db, temporal)
    except ProviderError as exc:  # the state could not be re-read: let the provider send it again
        log.warning("%s notification %s: provider state not re-read: %s", method.value, note.notification_id, exc)
        return fail(503, "Provider unavailable", f"could not re-read the provider's state: {exc}")
    except NotificationNotDelivered as exc:  # nothing was recorded: the provider will send it again
        log.warning("%s notification %s: %s", method.value, note.notification_id, exc)
        return fail(503, "Workflow unavailable", f"could not pass the notification on: {exc}")
    log.info(
        "%s notification %s (%s, %s): %s", method.value, note.notification_id, note.event_type, note.key, outcome.value
    )
    return ok


NOTIFICATION_PROBLEMS = problem_responses(400, 401, 404, 503)
"""Stale or malformed, not authentic, provider not configured here, not recorded yet (sent again)."""


@router.post(
    "/wechat/notify",
    status_code=204,
    responses={204: {"description": "Accepted (or a duplicate)."}, **NOTIFICATION_PROBLEMS},
)
async def wechat_notify(request: Request, settings: SettingsDep, db: DatabaseDep, temporal: TemporalDep) -> Response:
    """WeChat Pay v3 notification (payment or refund): verified, decrypted, recorded once."""
    return await _receive(request, PaymentMethod.WECHAT, settings, db, temporal, Response(status_code=204))


@router.post("/stripe/webhook", responses=NOTIFICATION_PROBLEMS)
async def stripe_webhook(request: Request, settings: SettingsDep, db: DatabaseDep, temporal: TemporalDep) -> Response:
    """Stripe webhook event: signature-checked, recorded once."""
    return await _receive(request, PaymentMethod.STRIPE, settings, db, temporal, JSONResponse({"received": True}))
