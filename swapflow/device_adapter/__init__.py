"""The device adapter: cabinets' MQTT messages in, database updates and workflow signals out.

`adapter` holds the adapter process (`DeviceAdapter`, `run_adapter`), `signals` the delivery of
signals to workflows, `presence` online/offline transitions, heartbeat expiry and reconnect
reconciliation, `ingest` the batched telemetry writes (latest state and history), `battery_state` a
pack's charge state and readiness, `metrics` the Prometheus metrics. Commands to cabinets are sent by
the worker, through swapflow/device_commands/.
"""
