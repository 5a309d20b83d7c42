"""Temporal workflows: deterministic orchestration of swaps (and later refunds, settlements, work orders)."""
