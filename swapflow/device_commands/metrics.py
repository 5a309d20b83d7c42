"""The command queue's Prometheus metrics (served by swapflow/metrics.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from swapflow.infra.metrics import LATENCY_BUCKETS


class CommandMetrics:
    """What the sending side of commands (the command queue) exposes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge(
            "swapflow_commands_queue_depth", "Commands waiting to be sent or for their ack", registry=r
        )
        self.round_trip = Histogram(
            "swapflow_commands_round_trip_seconds",
            "From a command's first publish to its first ack",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sent = Counter(
            "swapflow_commands_sent", "Command publishes, first sends and resends", ["attempt"], registry=r
        )
        self.expired = Counter(
            "swapflow_commands_expired", "Commands dropped unacknowledged at their deadline", registry=r
        )
