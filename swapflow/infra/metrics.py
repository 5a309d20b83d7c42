"""Prometheus metrics, shared by the processes that serve them (device adapter, tower-protocol gateway):
one registry per component, served over HTTP on a settings port, and quantiles read back from
histograms for benchmarks and log lines."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, start_http_server

LATENCY_BUCKETS = (
    0.002,
    0.005,
    0.01,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Seconds: fine around the targets that matter (200 ms door round trip, 2 s ingest lag)."""


def serve_metrics(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> WSGIServer | None:
    """Serve `registry` at http://host:port/metrics on a daemon thread; port 0 serves nothing. Returns
    the server, whose `shutdown()` stops it."""
    if port == 0:
        return None
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


def bucket_quantile(buckets: Iterable[tuple[float, float]], q: float) -> float | None:
    """The q-quantile (0..1) of a histogram from its cumulative (upper bound, count) buckets, by linear
    interpolation within the bucket it falls in (as PromQL's histogram_quantile). None when empty."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] == 0:
        return None
    rank = q * ordered[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, cumulative in ordered:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower_bound
            share = (rank - lower_count) / (cumulative - lower_count) if cumulative > lower_count else 1.0
            return lower_bound + (bound - lower_bound) * share
        lower_bound, lower_count = bound, cumulative
    return lower_bound


def histogram_quantile(histogram: Histogram, q: float) -> float | None:
    """The q-quantile of an unlabelled histogram in this process."""
    buckets = [
        (float(s.labels["le"]), s.value)
        for metric in histogram.collect()
        for s in metric.samples
        if s.name.endswith("_bucket")
    ]
    return bucket_quantile(buckets, q)


_VOLATILE = re.compile(r"'[^']*'|\S*[\d_-]\S*")


def reason_label(reason: str) -> str:
    """A dead-letter reason as a label of bounded cardinality: its head, without ids, numbers or quoted
    values ("cabinet cab-sh-001-1 has no slot 99" -> "cabinet … has no slot …")."""
    head = reason.split(":", 1)[0]
    return " ".join(_VOLATILE.sub("…", head).split())[:60] or "other"
