"""Temporal workflows: deterministic orchestration of swaps, refunds, top-ups, reconciliation, work orders
and alert evaluation."""
