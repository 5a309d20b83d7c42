"""The device adapter: cabinets' MQTT messages in, database updates and workflow signals out.

`adapter` holds the adapter process (`DeviceAdapter`, `run_adapter`), `signals` the delivery of
signals to workflows, `presence` online/offline transitions, heartbeat expiry and reconnect
reconciliation, `ingest` the batched telemetry writes (latest state and history), `battery_state` a
pack's charge state and readiness, `metrics` the Prometheus metrics, `commands` the publishing of
commands to cabinets and `command_queue` their ordering, resends and expiry. Nothing is imported here,
so the worker can use `commands` without loading the adapter.
"""
