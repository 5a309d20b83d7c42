"""The device adapter: cabinets' MQTT messages in, database updates and workflow signals out.

`adapter` holds the adapter process (`DeviceAdapter`, `run_adapter`), a small composer over parts that
each own their state: `connections` the broker connections, `topics` a topic parsed once into a route,
`routing` the per-cabinet queues, rate limits and lanes that hand each message to its path, `handlers`
a cabinet's state, events and acks, `telemetry` the batching of cabinets' telemetry, `battery_reports`
the packs' own reports and their routing to swaps, `storage` the writes with retries and the record that
catches duplicates, `dead_letters` the batched writing and expiry of what could not be accepted,
`signals` the delivery of signals to workflows, `heartbeats` the expiry of silent cabinets. `payloads`
holds the checks a message must pass, `presence` online/offline transitions and reconnect
reconciliation, `ingest` the telemetry writes (latest state and history), `authority`, `reconcile` and
`clock` who may report a pack, late facts against custody and device clocks, `battery_state` a pack's
charge state and readiness, `metrics` the Prometheus metrics and the log line's counters.
Commands to cabinets are sent by the worker, through swapflow/device_commands/.
"""
