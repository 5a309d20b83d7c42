"""All configuration of swapflow, read from `SWAPFLOW_*` environment variables (or a `.env` file).

The settings come in groups, one model each (`settings.swap`, `settings.payments`, `settings.gateway`, …).
A group reads its own variables: its `env_prefix` followed by the field's name, so `settings.gateway.port`
is `SWAPFLOW_GATEWAY_PORT` and `settings.swap.command_attempts` (prefix `SWAPFLOW_`) is
`SWAPFLOW_COMMAND_ATTEMPTS`.

Every unset back end falls back to its embedded default: a SQLite file in the data folder, a Temporal
dev server started by `swapflow up`, and an embedded amqtt broker.
"""

from __future__ import annotations

import json
import socket
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from swapflow.domain import timing
from swapflow.domain.safety import BatteryLimits
from swapflow.ops.config import OpsSla, WebhookChannel


class _Group(BaseSettings):
    """One group of settings; a subclass names its variables' prefix."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_", env_file=".env", extra="ignore")

    def env(self, exclude: set[str] | None = None) -> dict[str, str]:
        """This group's set values as the variables it reads them from."""
        prefix = self.model_config.get("env_prefix", "")
        return {
            f"{prefix}{name}".upper(): value if isinstance(value, str) else json.dumps(value)
            for name, value in self.model_dump(mode="json", exclude=exclude).items()
            if value is not None
        }


class TemporalSettings(_Group):
    """Where workflows run: the Temporal frontend and task queue."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_TEMPORAL_")

    address: str | None = Field(
        None, description="host:port of a Temporal frontend; default: `swapflow up` starts a dev server."
    )
    namespace: str = "default"
    task_queue: str = "swapflow"
    dev_port: int = 7233
    ui_port: int = 8233
    ui_url: str | None = Field(
        None, description="Base address of the Temporal UI, for links to a workflow; default: the dev server's UI."
    )

    @property
    def effective_ui_url(self) -> str:
        """Where a person opens the Temporal UI."""
        return self.ui_url or f"http://127.0.0.1:{self.ui_port}"

    @property
    def effective_address(self) -> str:
        """Where workers and the API reach Temporal."""
        return self.address or f"127.0.0.1:{self.dev_port}"


class MqttSettings(_Group):
    """The MQTT broker every device and service talks through."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_MQTT_")

    url: str | None = Field(
        None, description="mqtt://[user:pass@]host:port of the broker; default: embedded amqtt broker."
    )
    topic_prefix: str = "swapflow/v1"
    service_username: str = Field(
        "swapflow", description="MQTT account of the platform's services (adapter, gateway, worker, simulator)."
    )
    max_queued_messages: int = Field(
        10_000, ge=1, description="QoS 1 messages the embedded broker keeps per offline client."
    )


class EmbeddedBrokerSettings(_Group):
    """The amqtt broker `swapflow up` starts when no broker is configured."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_EMBEDDED_BROKER_")

    port: int = Field(1884, description="Port of the embedded broker (1883 is often taken).")
    auth: bool = Field(
        True,
        description="The embedded broker refuses unknown clients and enforces per-cabinet topic ACLs. "
        "An external broker enforces what its own configuration says.",
    )


class ApiSettings(_Group):
    """The HTTP API."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_API_")

    host: str = "127.0.0.1"
    port: int = 8000
    url: str | None = Field(None, description="Base URL simulated riders use; default from host/port.")

    @property
    def effective_url(self) -> str:
        """Base URL of the HTTP API."""
        return self.url or f"http://{self.host}:{self.port}"


class AdapterSettings(_Group):
    """The device adapter: MQTT to the database and the workflows."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_ADAPTER_")

    client_id: str | None = Field(
        None, description="MQTT client id of the device adapter (persistent session); default from the host name."
    )
    metrics_port: int = Field(0, ge=0, description="Prometheus metrics of the device adapter; 0: off.")
    telemetry_connections: int = Field(
        1,
        ge=1,
        description="Broker connections the adapter takes telemetry on; more than one uses an MQTT shared "
        "subscription ($share/…, Mosquitto, EMQX), which also spreads telemetry over several adapters.",
    )

    @property
    def effective_client_id(self) -> str:
        """One id per adapter host, stable across restarts."""
        return self.client_id or f"swapflow-adapter-{socket.gethostname()}"


class GatewaySettings(_Group):
    """The tower-protocol TCP gateway, and what an unauthenticated connection may cost."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_GATEWAY_")

    host: str = Field("127.0.0.1", description="Where the tower-protocol TCP gateway listens.")
    port: int = Field(9000, description="Port of the tower-protocol TCP gateway.")
    max_frame_bytes: int = Field(65_536, ge=64, description="Larger frames are refused and the link closed.")
    login_timeout_s: float = Field(10.0, gt=0, description="A new connection must log in within this.")
    read_timeout_s: float = Field(
        90.0, gt=0, description="Silence after which a tower cabinet's link counts as dead (half-open) and is closed."
    )
    metrics_port: int = Field(0, ge=0, description="Prometheus metrics of the tower-protocol gateway; 0: off.")
    login_max_frame_bytes: int = Field(
        4096, ge=256, description="Before its login, a connection's larger frames are refused and the link closed."
    )
    login_max_frames: int = Field(
        5, ge=1, description="Frames a connection may send that are not a login before it is closed."
    )
    login_backoff_s: float = Field(
        1.0, gt=0, description="Hold on an address's next login after a failed one; doubles per failure."
    )
    login_backoff_max_s: float = Field(
        60.0, gt=0, description="Longest hold on an address's login; its failures are forgotten after this long."
    )
    login_backoff_addresses: int = Field(
        10_000, ge=1, description="Addresses whose failed logins the gateway remembers (the oldest are forgotten)."
    )


class SwapSettings(_Group):
    """A swap: every wait in it is bounded (these are the bounds), and which packs it may issue."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_")

    command_ack_timeout_s: float = Field(
        timing.COMMAND_ACK_TIMEOUT_S, description="How long a cabinet has to acknowledge a command."
    )
    command_attempts: int = Field(
        timing.COMMAND_ATTEMPTS, ge=1, description="Sends of one command (same id) within that time."
    )
    return_insert_timeout_s: float = Field(
        timing.RETURN_INSERT_TIMEOUT_S, description="How long a rider has to insert the flat pack."
    )
    charged_take_timeout_s: float = Field(
        timing.CHARGED_TAKE_TIMEOUT_S, description="How long a rider has to take the charged pack."
    )
    offline_grace_s: float = Field(
        timing.OFFLINE_GRACE_S, description="How long a swap waits for a cabinet that went offline."
    )
    ready_soc_threshold: float = Field(90.0, description="A pack is 'ready' at or above this SoC (percent).")
    min_soh: float = Field(70.0, description="Packs below this SoH are not issued to riders.")
    battery_limits: dict[str, BatteryLimits] = Field(
        default_factory=lambda: {"LFP-60V-32Ah": BatteryLimits()},
        description="Safety limits per battery model (JSON in SWAPFLOW_BATTERY_LIMITS).",
    )
    default_battery_limits: BatteryLimits = Field(
        default_factory=BatteryLimits, description="Limits of a model not listed above."
    )


class PaymentSettings(_Group):
    """Charges and refunds: their waits, the sandbox provider, the daily reconciliation."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_")

    payment_pending_timeout_s: float = Field(
        timing.PAYMENT_PENDING_TIMEOUT_S,
        description="How long a charge may stay pending (rider confirming in the app) before it is closed.",
    )
    payment_poll_interval_s: float = Field(2.0, description="How often a pending charge is asked about.")
    refund_expected_days: int = Field(
        timing.REFUND_EXPECTED_DAYS, description="Days a refund may take to land (WeChat: 1-3 business days)."
    )
    refund_poll_schedule_s: list[float] = Field(
        default_factory=lambda: list(timing.REFUND_POLL_SCHEDULE_S),
        description="Waits between refund polls; the last repeats until the refund is final.",
    )
    notification_tolerance_s: int = Field(300, description="Payment notifications older/newer than this are stale.")
    reconciliation_cron: str = Field("30 2 * * *", description="When the daily reconciliation runs (UTC).")
    reconciliation_schedule: bool = Field(True, description="Create the daily reconciliation schedule on start.")
    sandbox_payment_latency_ms: int = 0
    sandbox_decline_rate: float = Field(0.0, ge=0, le=1, description="Share of sandbox charges declined.")
    sandbox_timeout_rate: float = Field(
        0.0, ge=0, le=1, description="Share of sandbox charges whose answer is lost after the capture."
    )
    sandbox_refund_processing_s: float = Field(
        0.0, ge=0, description="How long a sandbox refund stays processing before it succeeds (0: at once)."
    )


class SettlementSettings(_Group):
    """Commission settlement runs: their schedules, finance's reminders, payouts and the sandbox's."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_SETTLEMENT_")

    schedules: bool = Field(True, description="Create the settlement schedules (one per cadence) on start.")
    settle_after_s: float = Field(
        60.0, ge=0, description="A period is settled this long after it ends, so swaps finishing at its end are in."
    )
    remind_after_s: float = Field(
        86_400.0, gt=0, description="A run unapproved this long reminds finance (an alert), and again each time."
    )
    payout_poll_schedule_s: list[float] = Field(
        default_factory=lambda: [60.0, 300.0, 900.0, 1800.0, 3600.0],
        min_length=1,
        description="Waits between payout polls; the last repeats until the payout is final.",
    )
    sandbox_payout_delay_s: float = Field(30.0, ge=0, description="How long a sandbox payout processes.")
    sandbox_payout_failure_rate: float = Field(
        0.0, ge=0, le=1, description="Share of sandbox payouts that fail (the partner's account refuses them)."
    )
    demo_cadence_minutes: int = Field(
        5, ge=1, description="Length of the demo partners' settlement periods (their plans' cadence), in minutes."
    )


class WeChatSettings(_Group):
    """WeChat Pay v3; off while `mchid` is unset."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_WECHAT_")

    mchid: str | None = Field(None, description="WeChat Pay merchant id; unset: WeChat Pay is off.")
    appid: str | None = Field(None, description="App id of the mini-program / official account riders pay in.")
    private_key: str | None = Field(None, description="Merchant API private key (PEM text).")
    private_key_path: Path | None = Field(None, description="Or the file holding that PEM.")
    cert_serial_no: str | None = Field(None, description="Serial number of the merchant API certificate.")
    apiv3_key: str | None = Field(None, description="APIv3 key: decrypts notifications (AES-256-GCM).")
    public_key: str | None = Field(None, description="WeChat Pay public key (PEM) for public-key mode.")
    public_key_id: str | None = Field(None, description="Its id (PUB_KEY_ID_...); with the key above.")
    cert_dir: Path | None = Field(None, description="Platform-certificate mode: where certificates are kept.")
    notify_url: str | None = Field(None, description="Public URL of POST /v1/payments/wechat/notify.")
    gateway_url: str | None = Field(None, description="Override of https://api.mch.weixin.qq.com (tests).")
    timeout_s: float = Field(10.0, description="Read timeout of one WeChat Pay call.")
    transfer_scene_id: str | None = Field(
        None, description="Scene id of commission payouts (merchant transfers); unset: the merchant's default scene."
    )
    transfer_batch_name: str = Field(
        "swapflow commission", max_length=32, description="Name of each payout's transfer batch (at most 32)."
    )


class StripeSettings(_Group):
    """Stripe; off while `api_key` is unset."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_STRIPE_")

    api_key: str | None = Field(None, description="Stripe secret key; unset: Stripe is off.")
    webhook_secret: str | None = Field(None, description="Signing secret of the Stripe webhook endpoint.")
    api_base: str | None = Field(None, description="Override of https://api.stripe.com (localstripe).")
    full_api: bool = Field(
        True,
        description="The server offers Stripe's whole API (search, `created` list filters); off for "
        "localstripe, which lacks them (then objects are listed and filtered here).",
    )
    refund_lookback_days: int = Field(
        120, description="How far back refunds are listed to find one by our key (Stripe cannot search refunds)."
    )
    timeout_s: float = Field(20.0, description="Timeout of one Stripe call.")
    publishable_key: str | None = Field(
        None, description="Stripe publishable key, handed to the rider's page for Stripe.js (saving a card)."
    )
    js_url: str = Field(
        "https://js.stripe.com/v3/",
        description="Where the rider's card page loads Stripe.js from (Stripe's own: cards never touch our "
        "servers; localstripe's in tests).",
    )


class DeviceSettings(_Group):
    """The device network: heartbeats, command resends, clocks, and what one device may cost."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_")

    heartbeat_interval_s: float = Field(
        10.0, gt=0, description="How often cabinets publish telemetry (their heartbeat)."
    )
    heartbeat_missed_limit: int = Field(
        3, ge=1, description="A cabinet unheard for this many heartbeat intervals is marked offline."
    )
    telemetry_history_queue_rows: int = Field(
        200_000, ge=0, description="History rows waiting to be written before new ones are shed (backpressure)."
    )
    command_resend_s: float = Field(
        1.5,
        gt=0,
        description="Unacknowledged commands are re-sent this often, until acknowledged or past their deadline.",
    )
    device_clock_skew_s: float = Field(
        300.0, ge=0, description="A device message stamped further ahead than this is taken as received now."
    )
    device_clock_max_age_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="A device event or report stamped further back than this is taken as "
        "received now (a pack keeps its reports through an outage, not for ever).",
    )
    device_max_message_bytes: int = Field(
        65_536, ge=1024, description="Larger device messages are refused (by the adapter, and by the brokers)."
    )
    device_rate_per_s: float = Field(
        20.0,
        gt=0,
        description="Messages a second one cabinet (or pack) may send, sustained; beyond that and its "
        "burst they are dropped, counted as a dead letter, and an alert is raised.",
    )
    device_rate_burst: int = Field(200, ge=1, description="Messages one cabinet may send at once above its rate.")
    device_queue_per_cabinet: int = Field(
        1000, ge=1, description="Events, acks and states of one cabinet waiting for the adapter; more are dropped."
    )
    dead_letter_max_payload_bytes: int = Field(4096, ge=0, description="How much of a dead letter's payload is kept.")
    dead_letter_retention_days: float = Field(30.0, gt=0, description="Dead letters last seen before this go.")
    tower_share: float = Field(
        0.125, ge=0, le=1, description="Share of the demo network's reporting cabinets that speak the tower protocol."
    )


class OpsSettings(_Group):
    """Operations: alert rules, work orders and their SLAs, where alerts are pushed."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_OPS_")

    evaluate_interval_s: float = Field(
        timing.OPS_EVALUATE_INTERVAL_S, gt=0, description="How often the alert rules run."
    )
    evaluations_per_run: int = Field(
        timing.OPS_EVALUATIONS_PER_RUN, ge=1, description="Evaluations before the evaluator continues-as-new."
    )
    offline_alert_after_s: float = Field(120.0, description="A cabinet offline this long raises an alert.")
    no_ack_lookback_s: float = Field(900.0, description="Unacknowledged door commands this recent raise alerts.")
    ingest_lag_alert_s: float = Field(120.0, description="Online cabinets silent this long mean ingest lags.")
    evening_peak_start: str = Field("17:30", description="Local time the evening peak starts (HH:MM).")
    peak_lead_minutes: int = Field(90, description="How long before the peak a cabinet must hold a ready pack.")
    sla: dict[str, OpsSla] = Field(
        default_factory=lambda: {
            "critical": OpsSla(ack_s=600, resolve_s=3600),
            "warning": OpsSla(ack_s=1800, resolve_s=4 * 3600),
            "info": OpsSla(ack_s=4 * 3600, resolve_s=24 * 3600),
        },
        description="Ack and resolve deadlines of a work order per severity (JSON in SWAPFLOW_OPS_SLA).",
    )
    work_order_kinds: list[str] = Field(
        default_factory=lambda: ["cabinet_offline", "door_fault", "door_no_ack", "slot_fault"],
        description="Alert kinds that open a work order.",
    )
    verify_ack_timeout_s: float = Field(
        timing.VERIFY_ACK_TIMEOUT_S, description="How long the verification's test command may take."
    )
    webhooks: list[WebhookChannel] = Field(
        default_factory=list, description="Where alerts are pushed (JSON list in SWAPFLOW_OPS_WEBHOOKS)."
    )
    webhook_attempts: int = Field(
        timing.OPS_WEBHOOK_ATTEMPTS, ge=1, description="Attempts per alert and channel, with backoff."
    )


class ConsoleSettings(_Group):
    """The operators' web console under /console: its session cookie and its map."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_CONSOLE_")

    session_secret: str | None = Field(
        None,
        description="Key signing the console's session cookies; unset: a random key kept in the data folder.",
    )
    session_hours: float = Field(12.0, gt=0, description="A console sign-in lasts this long.")
    tile_url: str | None = Field(
        None,
        description="Map tile URL template ({z}/{x}/{y}), e.g. an internal tile server; unset: markers on a "
        "plain background (the console fetches nothing from the internet).",
    )
    tile_attribution: str = Field("", description="Attribution the tile server asks to be shown with its tiles.")
    live_poll_s: float = Field(2.0, gt=0, description="How often a live console page's values are read again.")
    live_max_s: float = Field(
        3600.0, gt=0, description="A live page's event stream ends after this; the browser reconnects."
    )
    live_max_streams: int = Field(
        200, ge=1, description="Live pages one API process serves at once; more are refused (503) until one ends."
    )


class RiderAuthSettings(_Group):
    """Riders signing themselves up and in: one-time codes by SMS, WeChat mini-program login, their tokens.
    The mini-program's app id is `SWAPFLOW_WECHAT_APPID` (the one riders pay in)."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_RIDER_AUTH_")

    code_length: int = Field(6, ge=4, le=10, description="Digits of a sign-in code.")
    code_ttl_s: float = Field(300.0, gt=0, description="A sign-in code is good for this long.")
    code_attempts: int = Field(5, ge=1, description="Wrong tries a code takes before it is dead.")
    code_interval_s: float = Field(30.0, ge=0, description="Least time between two codes sent to one phone.")
    code_window_s: float = Field(3600.0, gt=0, description="The window the per-phone and per-address counts are over.")
    codes_per_phone: int = Field(5, ge=1, description="Codes one phone may be sent within the window.")
    codes_per_address: int = Field(20, ge=1, description="Codes one client address may ask for within the window.")
    access_ttl_s: float = Field(3600.0, gt=0, description="A rider's access token lasts this long.")
    refresh_ttl_s: float = Field(30 * 86400.0, gt=0, description="A refresh token lasts this long (each one issued).")
    dev_inbox: bool | None = Field(
        None,
        description="Keep the codes' SMS in the database for GET /v1/dev/sms-inbox; unset: on for the embedded "
        "stack (no SWAPFLOW_DATABASE_URL), off otherwise.",
    )
    wechat_secret: str | None = Field(None, description="AppSecret of the mini-program; unset: WeChat sign-in is off.")
    wechat_api_base: str = Field(
        "https://api.weixin.qq.com", description="Where code2session is asked (a fake in tests)."
    )
    wechat_timeout_s: float = Field(10.0, gt=0, description="Timeout of one code2session call.")


class RiderAppSettings(_Group):
    """The riders' phone page under /app: its sign-in and its live swap page (its map uses the console's
    tile settings)."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_RIDER_APP_")

    session_days: float = Field(30.0, gt=0, description="A rider's sign-in on the phone page lasts this long.")
    nearby_km: float = Field(10.0, gt=0, le=500, description="How far around the rider the page lists cabinets.")
    live_poll_s: float = Field(
        0.25, gt=0, description="How often a live swap page reads its swap again (a stage shows within this)."
    )
    live_max_s: float = Field(
        900.0, gt=0, description="A live swap page's event stream ends after this; the browser reconnects."
    )
    live_max_streams: int = Field(
        1000, ge=1, description="Live swap pages one API process serves at once; more are refused (503) until one ends."
    )


class ReservationSettings(_Group):
    """Riders' reservations of a charged pack: how long one is held, and the no-show rule."""

    model_config = SettingsConfigDict(env_prefix="SWAPFLOW_RESERVATION_")

    hold_s: float = Field(timing.RESERVATION_HOLD_S, gt=0, description="How long a reserved pack is held.")
    no_show_limit: int = Field(
        3, ge=0, description="No-shows within the window that stop a rider reserving for a while (0: never)."
    )
    no_show_window_days: float = Field(30.0, gt=0, description="The window no-shows are counted in.")
    no_show_block_s: float = Field(
        7 * 86400.0, ge=0, description="How long a rider may not reserve after the no-show that reached the limit."
    )
    no_show_fee_minor: int = Field(
        0, ge=0, description="Fee recorded against a no-show, in the rider's city's minor units (0: none)."
    )


class Settings(_Group):
    """All settings: the stack's own (data folder, database, worker processes, log level) and one field per
    group. Build changed copies with `updated`, which refuses names no group has."""

    data_dir: Path = Field(Path(".swapflow"), description="Where the embedded stack keeps its state.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite file in data_dir.")
    worker_processes: int = Field(
        1,
        ge=1,
        description="Worker processes `swapflow up` starts on the task queue. A worker runs its workflows "
        "and their local activities on one Python thread: on a machine with spare cores, more processes take more "
        "swaps a second.",
    )
    log_level: str = "INFO"

    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    embedded_broker: EmbeddedBrokerSettings = Field(default_factory=EmbeddedBrokerSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    adapter: AdapterSettings = Field(default_factory=AdapterSettings)
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    swap: SwapSettings = Field(default_factory=SwapSettings)
    payments: PaymentSettings = Field(default_factory=PaymentSettings)
    settlement: SettlementSettings = Field(default_factory=SettlementSettings)
    wechat: WeChatSettings = Field(default_factory=WeChatSettings)
    stripe: StripeSettings = Field(default_factory=StripeSettings)
    devices: DeviceSettings = Field(default_factory=DeviceSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)
    rider_auth: RiderAuthSettings = Field(default_factory=RiderAuthSettings)
    rider_app: RiderAppSettings = Field(default_factory=RiderAppSettings)
    reservation: ReservationSettings = Field(default_factory=ReservationSettings)

    @classmethod
    def groups(cls) -> dict[str, type[_Group]]:
        """The groups by field name."""
        found: dict[str, type[_Group]] = {}
        for name, field in cls.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, _Group):
                found[name] = field.annotation
        return found

    def updated(self, **changes: Any) -> Settings:
        """A copy with some settings changed, validated: a group's changes as a dict
        (`updated(gateway={"port": 9001}, data_dir=path)`). An unknown group or field raises, so a change
        cannot be silently dropped."""
        groups = self.groups()
        data = self.model_dump()
        for key, value in changes.items():
            if key in groups:
                unknown = set(value) - set(groups[key].model_fields)
                if unknown:
                    raise ValueError(f"settings.{key} has no field {', '.join(sorted(unknown))}")
                data[key] = {**data[key], **value}
            elif key in type(self).model_fields:
                data[key] = value
            else:
                raise ValueError(f"no setting or settings group {key!r}")
        return type(self).model_validate(data)

    def as_env(self) -> dict[str, str]:
        """These settings as SWAPFLOW_* variables, so child processes run with exactly them."""
        env = self.env(exclude=set(self.groups()))
        for name in self.groups():
            group: _Group = getattr(self, name)
            env.update(group.env())
        return env

    @property
    def effective_database_url(self) -> str:
        """The configured database URL, or the embedded SQLite file."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'swapflow.db').resolve()}"

    @property
    def effective_mqtt_url(self) -> str:
        """Where every MQTT client connects."""
        return self.mqtt.url or f"mqtt://127.0.0.1:{self.embedded_broker.port}"

    @property
    def mqtt_endpoint(self) -> MqttEndpoint:
        """The broker URL split into what an MQTT client needs."""
        parts = urlsplit(self.effective_mqtt_url)
        if parts.scheme not in ("mqtt", "tcp", "mqtts"):
            raise ValueError(f"SWAPFLOW_MQTT_URL must be mqtt://host:port, got {self.effective_mqtt_url!r}")
        return MqttEndpoint(
            host=parts.hostname or "127.0.0.1",
            port=parts.port or (8883 if parts.scheme == "mqtts" else 1883),
            username=parts.username,
            password=parts.password,
            tls=parts.scheme == "mqtts",
        )


class MqttEndpoint(BaseModel):
    """Connection parameters of the MQTT broker."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
