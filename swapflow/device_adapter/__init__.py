"""The device adapter: cabinets' MQTT messages in, database updates and workflow signals out.

`adapter` holds the adapter process (`DeviceAdapter`, `run_adapter`), which composes the parts:
`telemetry` the batching of cabinets' telemetry, `dead_letters` the batched writing and expiry of what
could not be accepted, `signals` the delivery of signals to workflows. `presence` holds online/offline
transitions, heartbeat expiry and reconnect reconciliation, `ingest` the telemetry writes (latest state
and history), `battery_state` a pack's charge state and readiness, `metrics` the Prometheus metrics.
Commands to cabinets are sent by the worker, through swapflow/device_commands/.
"""
