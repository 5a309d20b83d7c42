"""The device adapter's Prometheus metrics (served by swapflow/infra/metrics.py) and the counters of its log line."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from swapflow.infra.metrics import LATENCY_BUCKETS, reason_label


class AdapterMetrics:
    """What the device adapter exposes. Each instance has its own registry, so several adapters (tests)
    can live in one process."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.messages = Counter("swapflow_adapter_messages", "MQTT messages received, by kind", ["kind"], registry=r)
        self.dead_letters = Counter("swapflow_adapter_dead_letters", "Dead letters, by reason", ["reason"], registry=r)
        self.ingest_lag = Histogram(
            "swapflow_adapter_ingest_lag_seconds",
            "From a telemetry report's timestamp to its state being written",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.history_rows = Counter("swapflow_adapter_history_rows", "History rows written", registry=r)
        self.history_shed = Counter(
            "swapflow_adapter_history_rows_shed", "History rows dropped because ingestion fell behind", registry=r
        )
        self.history_backlog = Gauge(
            "swapflow_adapter_history_backlog_rows", "History rows waiting to be written", registry=r
        )
        self.telemetry_stale = Counter(
            "swapflow_adapter_telemetry_stale",
            "Telemetry dropped as a duplicate or older than what was applied",
            registry=r,
        )
        self.command_round_trip = Histogram(
            "swapflow_adapter_command_round_trip_seconds",
            "From a command's first send to its ack being processed",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commands_outstanding = Gauge(
            "swapflow_adapter_commands_outstanding",
            "Commands sent, not acknowledged and not yet past their deadline",
            registry=r,
        )
        self.cabinets_online = Gauge("swapflow_adapter_cabinets_online", "Cabinets online", registry=r)
        self.presence_transitions = Counter(
            "swapflow_adapter_presence_transitions",
            "Online/offline transitions recorded, by cause",
            ["cause"],
            registry=r,
        )
        self.clock_clamped = Counter(
            "swapflow_adapter_device_clock_clamped",
            "Device timestamps beyond the allowed skew, taken as the receive time, by direction (future, past)",
            ["direction"],
            registry=r,
        )
        self.forged_reports = Counter(
            "swapflow_adapter_forged_pack_reports",
            "Pack reports refused as sent by a cabinet that does not hold the pack",
            registry=r,
        )

    def dead_letter(self, reason: str) -> None:
        """Count one dead letter under its reason's label."""
        self.dead_letters.labels(reason_label(reason)).inc()


@dataclass
class AdapterStats:
    """Counters for the log line and for tests."""

    messages: int = 0
    dead_letters: int = 0
    signals: int = 0
    duplicates: int = 0
    stale: int = 0

    def count_dead_letter(self) -> None:
        self.dead_letters += 1

    def count_signal(self) -> None:
        self.signals += 1

    def count_stale(self) -> None:
        self.stale += 1
