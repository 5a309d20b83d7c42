"""The Temporal client as the services take it: connected on first use, and unreachable as a domain error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio.client import Client

from swapflow.domain.errors import Unavailable

TemporalConnector = Callable[[], Awaitable[Client]]
"""Returns the connected client; raises RuntimeError (as the SDK does) while the server is unreachable."""


async def connect(temporal: TemporalConnector, unavailable: str) -> Client:
    """The client, or Unavailable titled `unavailable` (what cannot be done now) if the server is unreachable."""
    try:
        return await temporal()
    except RuntimeError as exc:
        raise Unavailable(unavailable, f"workflow service unreachable: {exc}") from exc
