"""The worker's side of commands to cabinets: `publish` the one MQTT connection that publishes them
and hears acks, `queue` their per-slot ordering, resends and expiry, `metrics` the queue's Prometheus
metrics. It shares only the wire protocol (swapflow/protocol/) with the device adapter, which records
the acks. Nothing is imported here.
"""
