"""Connections every swapflow process shares: MQTT, Temporal, Prometheus metrics."""
