"""The database: tables by area (network, swaps, money, pricing, devices, identity, ops) on one metadata
(schema.py), engines and sessions, and the migrations."""
