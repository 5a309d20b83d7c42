"""Temporal activities: every piece of I/O a workflow needs (database, cabinets, payment providers)."""
