"""Delivery of device signals to Temporal workflows: in order per workflow, retried while Temporal is
briefly unavailable, and dead-lettered when no workflow can take them, so no accepted event is lost."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import timedelta

import temporalio.client
from temporalio.service import RPCError, RPCStatusCode

from swapflow.workflows.device_contract import DEVICE_SIGNAL, DeviceSignal

log = logging.getLogger(__name__)

# Statuses that a retry cannot fix. NOT_FOUND (no such or no longer running workflow) is reported
# apart because it is the common, expected case.
_PERMANENT = frozenset(
    {
        RPCStatusCode.INVALID_ARGUMENT,
        RPCStatusCode.ALREADY_EXISTS,
        RPCStatusCode.PERMISSION_DENIED,
        RPCStatusCode.FAILED_PRECONDITION,
        RPCStatusCode.OUT_OF_RANGE,
        RPCStatusCode.UNIMPLEMENTED,
        RPCStatusCode.UNAUTHENTICATED,
    }
)

DeadLetterSink = Callable[[str, bytes, str], None]
"""Called as (topic, raw payload, reason) for a signal that could not be delivered."""


class SignalSender:
    """Sends `DeviceSignal`s without making the caller wait.

    Signals to one workflow go out in the order they were submitted (a door_closed must not overtake
    its battery_inserted); signals to different workflows go out concurrently, so a slow or
    unreachable workflow holds up nobody else.
    """

    def __init__(
        self,
        temporal: temporalio.client.Client,
        dead_letter: DeadLetterSink,
        *,
        retry_for_s: float = 60.0,
        rpc_timeout_s: float = 5.0,
        on_delivered: Callable[[], None] = lambda: None,
    ) -> None:
        self._temporal = temporal
        self._dead_letter = dead_letter
        self._retry_for_s = retry_for_s
        self._rpc_timeout = timedelta(seconds=rpc_timeout_s)
        self._on_delivered = on_delivered
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Signals submitted and not yet delivered or dead-lettered."""
        return len(self._pending)

    def send(self, workflow_id: str, signal: DeviceSignal, *, topic: str, payload: bytes) -> asyncio.Task[None]:
        """Queue one signal behind earlier ones to the same workflow. The task never raises; an
        undeliverable signal becomes a dead letter carrying the device message it came from."""
        previous = self._tails.get(workflow_id)
        task = asyncio.create_task(self._deliver(previous, workflow_id, signal, topic, payload))
        self._tails[workflow_id] = task
        self._pending.add(task)
        task.add_done_callback(lambda done: self._forget(workflow_id, done))
        return task

    async def drain(self, timeout_s: float) -> None:
        """Wait up to `timeout_s` for queued signals, then cancel the rest (they are dead-lettered)."""
        if not self._pending:
            return
        _, late = await asyncio.wait(set(self._pending), timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late)

    def _forget(self, workflow_id: str, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        if self._tails.get(workflow_id) is task:
            del self._tails[workflow_id]

    async def _deliver(
        self,
        previous: asyncio.Task[None] | None,
        workflow_id: str,
        signal: DeviceSignal,
        topic: str,
        payload: bytes,
    ) -> None:
        try:
            if previous is not None:
                # Only the order matters here, not how the previous delivery ended.
                await asyncio.wait([previous])
            reason = await self._attempt(workflow_id, signal)
        except asyncio.CancelledError:
            self._dead_letter(topic, payload, f"adapter stopped before signalling {workflow_id} for {signal.kind}")
            raise
        if reason is None:
            self._on_delivered()
        else:
            self._dead_letter(topic, payload, reason)

    async def _attempt(self, workflow_id: str, signal: DeviceSignal) -> str | None:
        """Signal until it works (None) or cannot work (the dead-letter reason)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._retry_for_s
        delay = 0.1
        handle = self._temporal.get_workflow_handle(workflow_id)
        while True:
            try:
                await handle.signal(DEVICE_SIGNAL, signal, rpc_timeout=self._rpc_timeout)
                return None
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    return f"no running workflow {workflow_id} for {signal.kind}"
                if exc.status in _PERMANENT:
                    return f"signal to {workflow_id} for {signal.kind} refused: {exc.status.name}: {exc.message}"
                error: Exception = exc
            except Exception as exc:  # connection failures surface as several types; all are worth a retry
                error = exc
            if loop.time() + delay > deadline:
                return f"could not signal {workflow_id} for {signal.kind} within {self._retry_for_s:.0f}s: {error}"
            log.warning("signal to %s failed (%s); retrying in %.1fs", workflow_id, error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
