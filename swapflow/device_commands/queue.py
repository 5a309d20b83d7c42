"""Commands at peak: every command has an id and a deadline; commands to one slot go out in order;
an unacknowledged command is re-sent (same id: the cabinet acts once) until its ack or its deadline,
and one past its deadline is dropped, never sent late. Queue depth and round trip are metrics.

The queue lives beside the publisher in the process that sends (the worker). It hears acks on the
publisher's own connection: to stop re-sending, to time the round trip, and to hand each ack to the
activity that waits for it (`send_and_wait`), so a workflow learns of an ack without a signal. The
device adapter remains the one that records acks.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from dataclasses import dataclass

from swapflow.device_commands.metrics import CommandMetrics
from swapflow.device_commands.publish import CommandPublisher
from swapflow.domain.clock import as_utc, utcnow
from swapflow.protocol.v1 import Command, CommandAck
from swapflow.settings import Settings

log = logging.getLogger(__name__)

_TICK_S = 0.05  # how often deadlines and resends are looked at


@dataclass
class _Pending:
    command: Command
    first_sent_at: float | None = None  # loop time of the first publish
    next_send_at: float = 0.0
    sends: int = 0


class CommandQueue:
    """Sends commands for workflows. Run `run()` as a task; `send()` queues a command and publishes it
    at once unless an earlier command to the same slot is still waiting for its ack."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str = "swapflow-commands",
        metrics: CommandMetrics | None = None,
        resend_s: float | None = None,
    ) -> None:
        self.publisher = CommandPublisher(settings, name=name, on_ack=self.acknowledged)
        self.metrics = metrics or CommandMetrics()
        self._resend_s = resend_s or settings.devices.command_resend_s
        self._pending: dict[str, _Pending] = {}  # by command id, in the order submitted
        self._answers: dict[str, tuple[str, asyncio.Future[CommandAck]]] = {}  # awaited acks: (cabinet, ack)
        self._wake = asyncio.Event()

    @property
    def depth(self) -> int:
        """Commands waiting to be sent or for their ack."""
        return len(self._pending)

    async def run(self) -> None:
        """Keep the connection, re-send what is unacknowledged and expire what is late, until cancelled."""
        publisher = asyncio.create_task(self.publisher.run())
        try:
            while True:
                await self._tick()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
                # lands as its timeout fires, and this loop would then never stop.
                with suppress(TimeoutError):
                    async with asyncio.timeout(_TICK_S):
                        await self._wake.wait()
                self._wake.clear()
        finally:
            publisher.cancel()
            await asyncio.gather(publisher, return_exceptions=True)

    async def send(self, command: Command) -> None:
        """Queue a command (a repeat of a queued id is published again now: the caller's own resend).
        A command already past its deadline is dropped: the cabinet would refuse it anyway."""
        if as_utc(command.deadline) <= utcnow():
            self._expire(command.command_id, command)
            return
        pending = self._pending.get(command.command_id)
        if pending is None:
            pending = self._pending[command.command_id] = _Pending(command)
            self.metrics.queue_depth.set(len(self._pending))
        if self._first_for_slot(pending):
            await self._publish(pending)

    async def send_and_wait(self, command: Command, wait_s: float) -> CommandAck | None:
        """Queue a command and wait up to `wait_s` for its ack as heard on this connection; None if none
        came (the ack subscription is QoS 0: the caller may still find it where the adapter recorded it)."""
        entry = self._answers.get(command.command_id)
        if entry is None:
            entry = self._answers[command.command_id] = (command.cabinet_id, asyncio.get_running_loop().create_future())
        answer = entry[1]
        try:
            await self.send(command)
            async with asyncio.timeout(wait_s):
                return await asyncio.shield(answer)
        except TimeoutError:
            return None
        finally:
            if self._answers.get(command.command_id) is entry:
                del self._answers[command.command_id]

    def acknowledged(self, ack: CommandAck) -> None:
        """An ack heard on the wire: hand it to its waiter, stop re-sending, time the round trip, let the
        slot's next go."""
        entry = self._answers.get(ack.command_id)
        if entry is not None and entry[0] == ack.cabinet_id and not entry[1].done():
            entry[1].set_result(ack)
        pending = self._pending.pop(ack.command_id, None)
        if pending is None or pending.command.cabinet_id != ack.cabinet_id:
            return
        if pending.first_sent_at is not None:
            self.metrics.round_trip.observe(asyncio.get_running_loop().time() - pending.first_sent_at)
        self.metrics.queue_depth.set(len(self._pending))
        self._wake.set()

    def _first_for_slot(self, pending: _Pending) -> bool:
        # Per-slot order: an open and a close of one door must never swap places. Other slots of the
        # cabinet are not held up by a jammed one.
        key = (pending.command.cabinet_id, pending.command.slot_no)
        for other in self._pending.values():
            if other is pending:
                return True
            if (other.command.cabinet_id, other.command.slot_no) == key:
                return False
        return True

    def _expire(self, command_id: str, command: Command) -> None:
        self._pending.pop(command_id, None)
        self.metrics.expired.inc()
        self.metrics.queue_depth.set(len(self._pending))
        log.info(
            "command %s (%s to %s) expired unacknowledged at its deadline",
            command_id,
            command.action.value,
            command.cabinet_id,
        )

    async def _tick(self) -> None:
        now, loop_now = utcnow(), asyncio.get_running_loop().time()
        for command_id, pending in list(self._pending.items()):
            if as_utc(pending.command.deadline) <= now:
                self._expire(command_id, pending.command)
        for pending in list(self._pending.values()):
            if pending.next_send_at <= loop_now and self._first_for_slot(pending):
                try:
                    await self._publish(pending)
                except ConnectionError as exc:  # BrokerUnavailable: the next tick tries again
                    log.warning("command %s not sent: %s", pending.command.command_id, exc)
                    return

    async def _publish(self, pending: _Pending) -> None:
        loop_now = asyncio.get_running_loop().time()
        await self.publisher.send(pending.command)
        if pending.first_sent_at is None:
            pending.first_sent_at = loop_now
        pending.sends += 1
        pending.next_send_at = loop_now + self._resend_s
        self.metrics.sent.labels("first" if pending.sends == 1 else "resend").inc()
