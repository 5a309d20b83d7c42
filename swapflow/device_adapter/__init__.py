"""The device adapter: cabinets' MQTT messages in, database updates and workflow signals out.

`adapter` holds the adapter process (`DeviceAdapter`, `run_adapter`), `signals` the delivery of
signals to workflows, `commands` the publishing of commands to cabinets. Nothing is imported here, so
the worker can use `commands` without loading the adapter.
"""
