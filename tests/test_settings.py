"""The settings: every `SWAPFLOW_*` name sets the same value as before they were grouped, a `.env` file is
read, `as_env` hands a child process exactly the same settings, and `updated` drops no change silently."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from swapflow.domain import timing
from swapflow.domain.safety import BatteryLimits
from swapflow.ops.config import OpsSla, WebhookChannel
from swapflow.settings import Settings
from swapflow.workflows.alert_evaluator_contract import EvaluatorInput
from swapflow.workflows.refund_contract import RefundStart
from swapflow.workflows.reservation_contract import ReservationStart
from swapflow.workflows.settlement_contract import SettlementStart
from swapflow.workflows.swap_contract import SwapRequest
from swapflow.workflows.topup_contract import TopUpStart
from swapflow.workflows.work_order_contract import WorkOrderInput

ROOT = Path(__file__).resolve().parent.parent

# Every variable swapflow reads: its name, where its value lands, a value other than the default.
ENV_NAMES: list[tuple[str, str, str, Any]] = [
    ("SWAPFLOW_DATA_DIR", "data_dir", "/srv/swapflow", Path("/srv/swapflow")),
    ("SWAPFLOW_DATABASE_URL", "database_url", "database_url-value", "database_url-value"),
    ("SWAPFLOW_WORKER_PROCESSES", "worker_processes", "4096", 4096),
    ("SWAPFLOW_LOG_LEVEL", "log_level", "DEBUG", "DEBUG"),
    ("SWAPFLOW_TEMPORAL_ADDRESS", "temporal.address", "temporal:7233", "temporal:7233"),
    ("SWAPFLOW_TEMPORAL_NAMESPACE", "temporal.namespace", "temporal_namespace-value", "temporal_namespace-value"),
    ("SWAPFLOW_TEMPORAL_TASK_QUEUE", "temporal.task_queue", "temporal_task_queue-value", "temporal_task_queue-value"),
    ("SWAPFLOW_TEMPORAL_DEV_PORT", "temporal.dev_port", "4096", 4096),
    ("SWAPFLOW_TEMPORAL_UI_PORT", "temporal.ui_port", "4096", 4096),
    ("SWAPFLOW_TEMPORAL_UI_URL", "temporal.ui_url", "https://temporal.example", "https://temporal.example"),
    ("SWAPFLOW_MQTT_URL", "mqtt.url", "mqtt://broker:1883", "mqtt://broker:1883"),
    ("SWAPFLOW_MQTT_TOPIC_PREFIX", "mqtt.topic_prefix", "mqtt_topic_prefix-value", "mqtt_topic_prefix-value"),
    (
        "SWAPFLOW_MQTT_SERVICE_USERNAME",
        "mqtt.service_username",
        "mqtt_service_username-value",
        "mqtt_service_username-value",
    ),
    ("SWAPFLOW_MQTT_MAX_QUEUED_MESSAGES", "mqtt.max_queued_messages", "4096", 4096),
    ("SWAPFLOW_EMBEDDED_BROKER_PORT", "embedded_broker.port", "4096", 4096),
    ("SWAPFLOW_EMBEDDED_BROKER_AUTH", "embedded_broker.auth", "false", False),
    ("SWAPFLOW_API_HOST", "api.host", "api_host-value", "api_host-value"),
    ("SWAPFLOW_API_PORT", "api.port", "4096", 4096),
    ("SWAPFLOW_API_URL", "api.url", "api_url-value", "api_url-value"),
    ("SWAPFLOW_ADAPTER_CLIENT_ID", "adapter.client_id", "adapter_client_id-value", "adapter_client_id-value"),
    ("SWAPFLOW_ADAPTER_METRICS_PORT", "adapter.metrics_port", "4096", 4096),
    ("SWAPFLOW_ADAPTER_TELEMETRY_CONNECTIONS", "adapter.telemetry_connections", "4096", 4096),
    ("SWAPFLOW_GATEWAY_HOST", "gateway.host", "gateway_host-value", "gateway_host-value"),
    ("SWAPFLOW_GATEWAY_PORT", "gateway.port", "4096", 4096),
    ("SWAPFLOW_GATEWAY_MAX_FRAME_BYTES", "gateway.max_frame_bytes", "4096", 4096),
    ("SWAPFLOW_GATEWAY_LOGIN_TIMEOUT_S", "gateway.login_timeout_s", "0.5", 0.5),
    ("SWAPFLOW_GATEWAY_READ_TIMEOUT_S", "gateway.read_timeout_s", "0.5", 0.5),
    ("SWAPFLOW_GATEWAY_METRICS_PORT", "gateway.metrics_port", "4096", 4096),
    ("SWAPFLOW_GATEWAY_LOGIN_MAX_FRAME_BYTES", "gateway.login_max_frame_bytes", "2048", 2048),
    ("SWAPFLOW_GATEWAY_LOGIN_MAX_FRAMES", "gateway.login_max_frames", "4096", 4096),
    ("SWAPFLOW_GATEWAY_LOGIN_BACKOFF_S", "gateway.login_backoff_s", "0.5", 0.5),
    ("SWAPFLOW_GATEWAY_LOGIN_BACKOFF_MAX_S", "gateway.login_backoff_max_s", "0.5", 0.5),
    ("SWAPFLOW_GATEWAY_LOGIN_BACKOFF_ADDRESSES", "gateway.login_backoff_addresses", "4096", 4096),
    ("SWAPFLOW_COMMAND_ACK_TIMEOUT_S", "swap.command_ack_timeout_s", "0.5", 0.5),
    ("SWAPFLOW_COMMAND_ATTEMPTS", "swap.command_attempts", "4096", 4096),
    ("SWAPFLOW_RETURN_INSERT_TIMEOUT_S", "swap.return_insert_timeout_s", "0.5", 0.5),
    ("SWAPFLOW_CHARGED_TAKE_TIMEOUT_S", "swap.charged_take_timeout_s", "0.5", 0.5),
    ("SWAPFLOW_OFFLINE_GRACE_S", "swap.offline_grace_s", "0.5", 0.5),
    ("SWAPFLOW_READY_SOC_THRESHOLD", "swap.ready_soc_threshold", "0.5", 0.5),
    ("SWAPFLOW_MIN_SOH", "swap.min_soh", "0.5", 0.5),
    ("SWAPFLOW_RESERVATION_HOLD_S", "reservation.hold_s", "0.5", 0.5),
    ("SWAPFLOW_RESERVATION_NO_SHOW_LIMIT", "reservation.no_show_limit", "4096", 4096),
    ("SWAPFLOW_RESERVATION_NO_SHOW_WINDOW_DAYS", "reservation.no_show_window_days", "0.5", 0.5),
    ("SWAPFLOW_RESERVATION_NO_SHOW_BLOCK_S", "reservation.no_show_block_s", "0.5", 0.5),
    ("SWAPFLOW_RESERVATION_NO_SHOW_FEE_MINOR", "reservation.no_show_fee_minor", "4096", 4096),
    (
        "SWAPFLOW_BATTERY_LIMITS",
        "swap.battery_limits",
        '{"LFP-48V-20Ah": {"max_temperature_c": 50}}',
        {"LFP-48V-20Ah": BatteryLimits(max_temperature_c=50)},
    ),
    ("SWAPFLOW_DEFAULT_BATTERY_LIMITS", "swap.default_battery_limits", '{"min_soh": 65}', BatteryLimits(min_soh=65)),
    ("SWAPFLOW_PAYMENT_PENDING_TIMEOUT_S", "payments.payment_pending_timeout_s", "0.5", 0.5),
    ("SWAPFLOW_PAYMENT_POLL_INTERVAL_S", "payments.payment_poll_interval_s", "0.5", 0.5),
    ("SWAPFLOW_REFUND_EXPECTED_DAYS", "payments.refund_expected_days", "4096", 4096),
    ("SWAPFLOW_REFUND_POLL_SCHEDULE_S", "payments.refund_poll_schedule_s", "[5, 10]", [5.0, 10.0]),
    ("SWAPFLOW_NOTIFICATION_TOLERANCE_S", "payments.notification_tolerance_s", "4096", 4096),
    ("SWAPFLOW_RECONCILIATION_CRON", "payments.reconciliation_cron", "0 3 * * *", "0 3 * * *"),
    ("SWAPFLOW_RECONCILIATION_SCHEDULE", "payments.reconciliation_schedule", "false", False),
    ("SWAPFLOW_SANDBOX_PAYMENT_LATENCY_MS", "payments.sandbox_payment_latency_ms", "4096", 4096),
    ("SWAPFLOW_SANDBOX_DECLINE_RATE", "payments.sandbox_decline_rate", "0.5", 0.5),
    ("SWAPFLOW_SANDBOX_TIMEOUT_RATE", "payments.sandbox_timeout_rate", "0.5", 0.5),
    ("SWAPFLOW_SANDBOX_REFUND_PROCESSING_S", "payments.sandbox_refund_processing_s", "0.5", 0.5),
    ("SWAPFLOW_SETTLEMENT_SCHEDULES", "settlement.schedules", "false", False),
    ("SWAPFLOW_SETTLEMENT_SETTLE_AFTER_S", "settlement.settle_after_s", "0.5", 0.5),
    ("SWAPFLOW_SETTLEMENT_REMIND_AFTER_S", "settlement.remind_after_s", "0.5", 0.5),
    ("SWAPFLOW_SETTLEMENT_PAYOUT_POLL_SCHEDULE_S", "settlement.payout_poll_schedule_s", "[5, 10]", [5.0, 10.0]),
    ("SWAPFLOW_SETTLEMENT_SANDBOX_PAYOUT_DELAY_S", "settlement.sandbox_payout_delay_s", "0.5", 0.5),
    ("SWAPFLOW_SETTLEMENT_SANDBOX_PAYOUT_FAILURE_RATE", "settlement.sandbox_payout_failure_rate", "0.5", 0.5),
    ("SWAPFLOW_SETTLEMENT_DEMO_CADENCE_MINUTES", "settlement.demo_cadence_minutes", "4096", 4096),
    ("SWAPFLOW_WECHAT_MCHID", "wechat.mchid", "wechat_mchid-value", "wechat_mchid-value"),
    ("SWAPFLOW_WECHAT_APPID", "wechat.appid", "wechat_appid-value", "wechat_appid-value"),
    ("SWAPFLOW_WECHAT_PRIVATE_KEY", "wechat.private_key", "wechat_private_key-value", "wechat_private_key-value"),
    ("SWAPFLOW_WECHAT_PRIVATE_KEY_PATH", "wechat.private_key_path", "/srv/swapflow", Path("/srv/swapflow")),
    (
        "SWAPFLOW_WECHAT_CERT_SERIAL_NO",
        "wechat.cert_serial_no",
        "wechat_cert_serial_no-value",
        "wechat_cert_serial_no-value",
    ),
    ("SWAPFLOW_WECHAT_APIV3_KEY", "wechat.apiv3_key", "wechat_apiv3_key-value", "wechat_apiv3_key-value"),
    ("SWAPFLOW_WECHAT_PUBLIC_KEY", "wechat.public_key", "wechat_public_key-value", "wechat_public_key-value"),
    (
        "SWAPFLOW_WECHAT_PUBLIC_KEY_ID",
        "wechat.public_key_id",
        "wechat_public_key_id-value",
        "wechat_public_key_id-value",
    ),
    ("SWAPFLOW_WECHAT_CERT_DIR", "wechat.cert_dir", "/srv/swapflow", Path("/srv/swapflow")),
    ("SWAPFLOW_WECHAT_NOTIFY_URL", "wechat.notify_url", "wechat_notify_url-value", "wechat_notify_url-value"),
    ("SWAPFLOW_WECHAT_GATEWAY_URL", "wechat.gateway_url", "wechat_gateway_url-value", "wechat_gateway_url-value"),
    ("SWAPFLOW_WECHAT_TIMEOUT_S", "wechat.timeout_s", "0.5", 0.5),
    ("SWAPFLOW_WECHAT_TRANSFER_SCENE_ID", "wechat.transfer_scene_id", "1005", "1005"),
    ("SWAPFLOW_WECHAT_TRANSFER_BATCH_NAME", "wechat.transfer_batch_name", "partner pay", "partner pay"),
    ("SWAPFLOW_STRIPE_API_KEY", "stripe.api_key", "stripe_api_key-value", "stripe_api_key-value"),
    (
        "SWAPFLOW_STRIPE_WEBHOOK_SECRET",
        "stripe.webhook_secret",
        "stripe_webhook_secret-value",
        "stripe_webhook_secret-value",
    ),
    ("SWAPFLOW_STRIPE_API_BASE", "stripe.api_base", "stripe_api_base-value", "stripe_api_base-value"),
    ("SWAPFLOW_STRIPE_FULL_API", "stripe.full_api", "false", False),
    ("SWAPFLOW_STRIPE_REFUND_LOOKBACK_DAYS", "stripe.refund_lookback_days", "4096", 4096),
    ("SWAPFLOW_STRIPE_TIMEOUT_S", "stripe.timeout_s", "0.5", 0.5),
    (
        "SWAPFLOW_STRIPE_PUBLISHABLE_KEY",
        "stripe.publishable_key",
        "stripe_publishable_key-value",
        "stripe_publishable_key-value",
    ),
    ("SWAPFLOW_STRIPE_JS_URL", "stripe.js_url", "https://js.example/v3/", "https://js.example/v3/"),
    ("SWAPFLOW_HEARTBEAT_INTERVAL_S", "devices.heartbeat_interval_s", "0.5", 0.5),
    ("SWAPFLOW_HEARTBEAT_MISSED_LIMIT", "devices.heartbeat_missed_limit", "4096", 4096),
    ("SWAPFLOW_TELEMETRY_HISTORY_QUEUE_ROWS", "devices.telemetry_history_queue_rows", "4096", 4096),
    ("SWAPFLOW_COMMAND_RESEND_S", "devices.command_resend_s", "0.5", 0.5),
    ("SWAPFLOW_DEVICE_CLOCK_SKEW_S", "devices.device_clock_skew_s", "0.5", 0.5),
    ("SWAPFLOW_DEVICE_CLOCK_MAX_AGE_S", "devices.device_clock_max_age_s", "0.5", 0.5),
    ("SWAPFLOW_DEVICE_MAX_MESSAGE_BYTES", "devices.device_max_message_bytes", "4096", 4096),
    ("SWAPFLOW_DEVICE_RATE_PER_S", "devices.device_rate_per_s", "0.5", 0.5),
    ("SWAPFLOW_DEVICE_RATE_BURST", "devices.device_rate_burst", "4096", 4096),
    ("SWAPFLOW_DEVICE_QUEUE_PER_CABINET", "devices.device_queue_per_cabinet", "4096", 4096),
    ("SWAPFLOW_DEAD_LETTER_MAX_PAYLOAD_BYTES", "devices.dead_letter_max_payload_bytes", "2048", 2048),
    ("SWAPFLOW_DEAD_LETTER_RETENTION_DAYS", "devices.dead_letter_retention_days", "0.5", 0.5),
    ("SWAPFLOW_TOWER_SHARE", "devices.tower_share", "0.5", 0.5),
    ("SWAPFLOW_OPS_EVALUATE_INTERVAL_S", "ops.evaluate_interval_s", "0.5", 0.5),
    ("SWAPFLOW_OPS_EVALUATIONS_PER_RUN", "ops.evaluations_per_run", "4096", 4096),
    ("SWAPFLOW_OPS_OFFLINE_ALERT_AFTER_S", "ops.offline_alert_after_s", "0.5", 0.5),
    ("SWAPFLOW_OPS_NO_ACK_LOOKBACK_S", "ops.no_ack_lookback_s", "0.5", 0.5),
    ("SWAPFLOW_OPS_INGEST_LAG_ALERT_S", "ops.ingest_lag_alert_s", "0.5", 0.5),
    ("SWAPFLOW_OPS_EVENING_PEAK_START", "ops.evening_peak_start", "18:00", "18:00"),
    ("SWAPFLOW_OPS_PEAK_LEAD_MINUTES", "ops.peak_lead_minutes", "4096", 4096),
    (
        "SWAPFLOW_OPS_SLA",
        "ops.sla",
        '{"critical": {"ack_s": 60, "resolve_s": 600}}',
        {"critical": OpsSla(ack_s=60, resolve_s=600)},
    ),
    ("SWAPFLOW_OPS_WORK_ORDER_KINDS", "ops.work_order_kinds", '["door_fault"]', ["door_fault"]),
    ("SWAPFLOW_OPS_VERIFY_ACK_TIMEOUT_S", "ops.verify_ack_timeout_s", "0.5", 0.5),
    (
        "SWAPFLOW_OPS_WEBHOOKS",
        "ops.webhooks",
        '[{"name": "im", "url": "https://im.example/hook", "secret": "s"}]',
        [WebhookChannel(name="im", url="https://im.example/hook", secret="s")],
    ),
    ("SWAPFLOW_OPS_WEBHOOK_ATTEMPTS", "ops.webhook_attempts", "4096", 4096),
    ("SWAPFLOW_CONSOLE_SESSION_SECRET", "console.session_secret", "s3cret", "s3cret"),
    ("SWAPFLOW_CONSOLE_SESSION_HOURS", "console.session_hours", "8.5", 8.5),
    (
        "SWAPFLOW_CONSOLE_TILE_URL",
        "console.tile_url",
        "https://tiles.example/{z}/{x}/{y}.png",
        "https://tiles.example/{z}/{x}/{y}.png",
    ),
    ("SWAPFLOW_CONSOLE_TILE_ATTRIBUTION", "console.tile_attribution", "© tiles", "© tiles"),
    ("SWAPFLOW_CONSOLE_LIVE_POLL_S", "console.live_poll_s", "0.5", 0.5),
    ("SWAPFLOW_CONSOLE_LIVE_MAX_S", "console.live_max_s", "60", 60.0),
    ("SWAPFLOW_CONSOLE_LIVE_MAX_STREAMS", "console.live_max_streams", "4096", 4096),
    ("SWAPFLOW_RIDER_AUTH_CODE_LENGTH", "rider_auth.code_length", "8", 8),
    ("SWAPFLOW_RIDER_AUTH_CODE_TTL_S", "rider_auth.code_ttl_s", "0.5", 0.5),
    ("SWAPFLOW_RIDER_AUTH_CODE_ATTEMPTS", "rider_auth.code_attempts", "3", 3),
    ("SWAPFLOW_RIDER_AUTH_CODE_INTERVAL_S", "rider_auth.code_interval_s", "0.5", 0.5),
    ("SWAPFLOW_RIDER_AUTH_CODE_WINDOW_S", "rider_auth.code_window_s", "0.5", 0.5),
    ("SWAPFLOW_RIDER_AUTH_CODES_PER_PHONE", "rider_auth.codes_per_phone", "4096", 4096),
    ("SWAPFLOW_RIDER_AUTH_CODES_PER_ADDRESS", "rider_auth.codes_per_address", "4096", 4096),
    ("SWAPFLOW_RIDER_AUTH_ACCESS_TTL_S", "rider_auth.access_ttl_s", "0.5", 0.5),
    ("SWAPFLOW_RIDER_AUTH_REFRESH_TTL_S", "rider_auth.refresh_ttl_s", "0.5", 0.5),
    ("SWAPFLOW_RIDER_AUTH_DEV_INBOX", "rider_auth.dev_inbox", "false", False),
    ("SWAPFLOW_RIDER_AUTH_WECHAT_SECRET", "rider_auth.wechat_secret", "app-secret", "app-secret"),
    (
        "SWAPFLOW_RIDER_AUTH_WECHAT_API_BASE",
        "rider_auth.wechat_api_base",
        "http://127.0.0.1:9999",
        "http://127.0.0.1:9999",
    ),
    ("SWAPFLOW_RIDER_AUTH_WECHAT_TIMEOUT_S", "rider_auth.wechat_timeout_s", "0.5", 0.5),
    ("SWAPFLOW_RIDER_APP_SESSION_DAYS", "rider_app.session_days", "0.5", 0.5),
    ("SWAPFLOW_RIDER_APP_NEARBY_KM", "rider_app.nearby_km", "0.5", 0.5),
    ("SWAPFLOW_RIDER_APP_LIVE_POLL_S", "rider_app.live_poll_s", "0.5", 0.5),
    ("SWAPFLOW_RIDER_APP_LIVE_MAX_S", "rider_app.live_max_s", "60", 60.0),
    ("SWAPFLOW_RIDER_APP_LIVE_MAX_STREAMS", "rider_app.live_max_streams", "4096", 4096),
]


def setting(settings: Settings, path: str) -> Any:
    value: Any = settings
    for part in path.split("."):
        value = getattr(value, part)
    return value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No SWAPFLOW_* variable and no `.env` file (the working directory is an empty folder)."""
    for name in [name for name in os.environ if name.startswith("SWAPFLOW_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.mark.parametrize(("name", "path", "raw", "expected"), ENV_NAMES, ids=[row[0] for row in ENV_NAMES])
def test_each_variable_sets_its_setting(
    clean_env: pytest.MonkeyPatch, name: str, path: str, raw: str, expected: Any
) -> None:
    assert setting(Settings(), path) != expected
    clean_env.setenv(name, raw)
    assert setting(Settings(), path) == expected


def test_the_table_names_every_setting_and_every_documented_variable() -> None:
    paths = {path for _, path, _, _ in ENV_NAMES}
    fields = {name for name in Settings.model_fields if name not in Settings.groups()}
    for group, cls in Settings.groups().items():
        fields |= {f"{group}.{field}" for field in cls.model_fields}
    assert paths == fields
    documents = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
    documented = {
        name for doc in documents for name in re.findall(r"SWAPFLOW_[A-Z0-9_]*[A-Z0-9](?![A-Z0-9_])", doc.read_text())
    }
    assert documented - {name for name, _, _, _ in ENV_NAMES} == set()


def test_a_dotenv_file_is_read(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(
        "SWAPFLOW_DATA_DIR=/srv/swapflow\nSWAPFLOW_GATEWAY_PORT=9123\nSWAPFLOW_COMMAND_ATTEMPTS=4\n"
        'SWAPFLOW_WECHAT_MCHID=1900000109\nSWAPFLOW_OPS_SLA={"info": {"ack_s": 1, "resolve_s": 2}}\n'
    )
    settings = Settings()
    assert settings.data_dir == Path("/srv/swapflow")
    assert settings.gateway.port == 9123
    assert settings.swap.command_attempts == 4
    assert settings.wechat.mchid == "1900000109"
    assert settings.ops.sla == {"info": OpsSla(ack_s=1, resolve_s=2)}


def test_as_env_gives_a_child_process_the_same_settings(clean_env: pytest.MonkeyPatch) -> None:
    changed = {
        name: raw for name, _, raw, _ in ENV_NAMES if name not in ("SWAPFLOW_TEMPORAL_ADDRESS", "SWAPFLOW_MQTT_URL")
    }
    for name, raw in changed.items():
        clean_env.setenv(name, raw)
    settings = Settings()
    env = settings.as_env()
    for name in changed:
        clean_env.delenv(name)
    assert Settings() != settings
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert Settings() == settings
    assert set(env) <= {name for name, _, _, _ in ENV_NAMES}


def test_updated_changes_groups_and_refuses_unknown_names(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("SWAPFLOW_GATEWAY_HOST", "0.0.0.0")
    settings = Settings()
    changed = settings.updated(data_dir="/srv/x", gateway={"port": 9001}, swap={"command_attempts": 5})
    assert (changed.data_dir, changed.gateway.port, changed.swap.command_attempts) == (Path("/srv/x"), 9001, 5)
    assert changed.gateway.host == "0.0.0.0"  # the rest of the group is kept
    assert (settings.gateway.port, settings.swap.command_attempts) == (9000, timing.COMMAND_ATTEMPTS)
    with pytest.raises(ValueError, match="no setting or settings group 'gateway_port'"):
        settings.updated(gateway_port=9001)
    with pytest.raises(ValueError, match="settings.gateway has no field gateway_port"):
        settings.updated(gateway={"gateway_port": 9001})
    with pytest.raises(ValueError, match="greater than or equal to 1"):
        settings.updated(swap={"command_attempts": 0})


def test_the_workflow_inputs_and_the_settings_share_their_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    request = SwapRequest(order_id="o", rider_id="r", cabinet_id="c")
    for field in ("command_ack_timeout_s", "command_attempts", "return_insert_timeout_s", "charged_take_timeout_s"):
        assert getattr(request, field) == getattr(settings.swap, field)
    assert request.offline_grace_s == settings.swap.offline_grace_s
    assert request.payment_pending_timeout_s == settings.payments.payment_pending_timeout_s
    assert list(request.refund_poll_schedule_s) == settings.payments.refund_poll_schedule_s
    assert request.refund_expected_days == settings.payments.refund_expected_days
    assert TopUpStart(top_up_id="t").pending_timeout_s == settings.payments.payment_pending_timeout_s
    assert ReservationStart(reservation_id="r").hold_s == settings.reservation.hold_s
    refund = RefundStart.model_fields
    assert list(refund["poll_schedule_s"].default) == settings.payments.refund_poll_schedule_s
    assert refund["expected_days"].default == settings.payments.refund_expected_days
    settlement = SettlementStart.model_fields
    assert list(settlement["payout_poll_schedule_s"].default) == settings.settlement.payout_poll_schedule_s
    assert WorkOrderInput.model_fields["verify_ack_timeout_s"].default == settings.ops.verify_ack_timeout_s
    evaluator = EvaluatorInput()
    assert (evaluator.interval_s, evaluator.per_run, evaluator.webhook_attempts) == (
        settings.ops.evaluate_interval_s,
        settings.ops.evaluations_per_run,
        settings.ops.webhook_attempts,
    )
