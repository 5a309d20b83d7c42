"""The gateway's Prometheus metrics (served with swapflow.infra.metrics.serve_metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("swapflow_gateway_connections", "Open TCP connections from tower cabinets.")
CABINETS_ONLINE = Gauge("swapflow_gateway_cabinets_online", "Tower cabinets online (logged in, full report in).")
CONNECTIONS_CLOSED = Counter("swapflow_gateway_connections_closed_total", "Closed connections, by cause.", ["cause"])
FRAMES_IN = Counter("swapflow_gateway_frames_in_total", "Frames received, by message type.", ["type"])
FRAMES_OUT = Counter("swapflow_gateway_frames_out_total", "Frames sent, by message type.", ["type"])
BAD_FRAMES = Counter("swapflow_gateway_bad_frames_total", "Frames refused (dead letters), by reason.", ["reason"])
LOGINS = Counter("swapflow_gateway_logins_total", "Login requests, by result (ok, refused).", ["result"])
COMMAND_ROUND_TRIP = Histogram(
    "swapflow_gateway_command_round_trip_seconds",
    "From a control request (500) sent to its response (501).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0),
)
COMMANDS_EXPIRED = Counter("swapflow_gateway_commands_expired_total", "v1 commands past their deadline, not sent on.")
