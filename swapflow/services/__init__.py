"""What the API, the CLI and the worker call to start and drive the flows and read their state: one
module per flow, named as the flow's router is (`swaps`, `refunds`, `wallets`, `work_orders`, ...). Each
workflow's start is one function here; a service says no with the errors of swapflow.domain.errors and
imports nothing of the API."""
