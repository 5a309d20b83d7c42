"""The Temporal client as the services take it: connected on first use, and unreachable as a domain error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from swapflow.domain.errors import Unavailable

Arg = TypeVar("Arg")

TemporalConnector = Callable[[], Awaitable[Client]]
"""Returns the connected client; raises RuntimeError (as the SDK does) while the server is unreachable."""


async def connect(temporal: TemporalConnector, unavailable: str) -> Client:
    """The client, or Unavailable titled `unavailable` (what cannot be done now) if the server is unreachable."""
    try:
        return await temporal()
    except RuntimeError as exc:
        raise Unavailable(unavailable, f"workflow service unreachable: {exc}") from exc


async def start_once(
    client: Client,
    run: Callable[[Any, Arg], Awaitable[Any]],
    arg: Arg,
    *,
    workflow_id: str,
    task_queue: str,
    rerun: bool = False,
) -> None:
    """Start the workflow `workflow_id` unless it runs (then it is left running) or ran (a finished one is
    never started again, unless `rerun`: a deliberate new run under the same id): what a retried request
    or a second caller needs."""
    try:
        await client.start_workflow(
            run,
            arg,
            id=workflow_id,
            task_queue=task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE if rerun else WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
    except WorkflowAlreadyStartedError:
        pass  # it ran to the end
