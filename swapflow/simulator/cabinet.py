"""A simulated swap cabinet: a real MQTT client speaking protocol v1, with slots, doors, chargers and
the fault knobs the tests and demos turn (jammed doors, lost acks, duplicated events, a cut link), set
by hand or rolled from a `FaultPlan`.

A cabinet is either reporting (birth, telemetry, events, acks) or, like legacy hardware, command-only:
it obeys commands and says nothing, and the packs in its slots report themselves on their own topic.

Many cabinets share one process and one event loop; each has its own broker connection.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
import uuid
from collections import OrderedDict, deque
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import aiomqtt
from pydantic import BaseModel, ValidationError

from swapflow.domain.clock import as_utc
from swapflow.identity.credentials import client_login
from swapflow.infra.mqtt import mqtt_client
from swapflow.protocol.v1 import (
    BatteryReading,
    CabinetEvent,
    CabinetState,
    Channel,
    Command,
    CommandAck,
    CommandAction,
    EventType,
    SlotReport,
    Telemetry,
    battery_topic,
    cabinet_topic,
)
from swapflow.settings import Settings
from swapflow.simulator.battery import DEFAULT_SPEEDUP, SimBattery
from swapflow.simulator.faults import FaultPlan, FaultStats

log = logging.getLogger(__name__)

_REMEMBERED_COMMANDS = 1_000  # command ids kept to recognise a redelivered command


class PhysicalActionError(RuntimeError):
    """A rider tried something the hardware does not allow (a closed door, an occupied slot…)."""


@dataclass
class SimSlot:
    """One slot: its door, lock, fault and the pack in it."""

    slot_no: int
    battery: SimBattery | None = None
    door_open: bool = False
    locked: bool = False
    fault: str | None = None
    # Command-only cabinets: when (loop time) the pack in the slot reports itself next, and whether that
    # report announces its arrival (which the `duplicate` fault may send twice).
    report_at: float | None = None
    report_announces: bool = False

    @property
    def charging(self) -> bool:
        """The charger runs for a closed, healthy slot holding a pack that is not full."""
        return (
            self.battery is not None
            and not self.door_open
            and not self.locked
            and self.fault is None
            and not self.battery.fault_codes
            and not self.battery.is_full
        )

    def report(self) -> SlotReport:
        """The slot as telemetry and the birth message describe it."""
        return SlotReport(
            slot_no=self.slot_no,
            door="open" if self.door_open else "closed",
            battery=self.battery.reading() if self.battery else None,
            charging=self.charging,
            fault=self.fault,
        )


def _now() -> datetime:
    return datetime.now(UTC)


class SimulatedCabinet:
    """A cabinet and its firmware. Run `run()` as a task; `ready` is set once it is connected (and, for a
    reporting cabinet, its birth is out)."""

    link_errors: tuple[type[Exception], ...] = (aiomqtt.MqttError,)
    """What ends one connection (`_session`) and is retried with backoff; other protocols name theirs."""

    def __init__(
        self,
        settings: Settings,
        cabinet_id: str,
        slots: dict[int, SimBattery | None],
        *,
        telemetry_interval_s: float = 10.0,
        charge_speedup: float = DEFAULT_SPEEDUP,
        firmware: str = "1.4.2",
        keepalive_s: int = 15,
        physics_interval_s: float = 1.0,
        command_only: bool = False,
        battery_report_interval_s: float = 5.0,
        insert_report_delay_s: float = 1.0,
        faults: FaultPlan | None = None,
        fault_stats: FaultStats | None = None,
        rng: random.Random | None = None,
        offline_delay_s: tuple[float, float] = (0.0, 3.0),
    ) -> None:
        self.settings = settings
        self.cabinet_id = cabinet_id
        self.slots = {n: SimSlot(n, battery) for n, battery in sorted(slots.items())}
        self.telemetry_interval_s = telemetry_interval_s
        self.charge_speedup = charge_speedup
        """Simulated seconds of charging per real second; settable while running."""
        self.firmware = firmware
        self.keepalive_s = keepalive_s
        self.physics_interval_s = physics_interval_s
        self.command_only = command_only
        """Legacy mode: receive and obey commands, publish nothing of the cabinet's own (no birth, will,
        telemetry, events or acks); the packs in the slots report on their own topics instead."""
        self.battery_report_interval_s = battery_report_interval_s
        """Command-only mode: how often each pack in a slot reports itself."""
        self.insert_report_delay_s = insert_report_delay_s
        """Command-only mode: how soon a pack just put in reports itself."""

        # Fault knobs, set by hand (tests) or rolled from `faults` (the simulated fleet).
        self.jammed_slots: set[int] = set()
        """open_door on these slots neither opens nor gets an ack (a jammed latch)."""
        self.drop_acks = False
        """Execute commands but never acknowledge them."""
        self.duplicate_events = False
        """Publish every event twice (as a flaky link with QoS 1 redelivery does)."""
        self.faults = faults
        """Faults rolled per command, per message and per swap (see `swapflow.simulator.faults`)."""
        self.fault_stats = fault_stats or FaultStats()
        """Every fault injected here, knobs included."""
        self.offline_delay_s = offline_delay_s
        """How long after a swap starts an `offline` fault cuts the link: a range, drawn from."""
        self._rng = rng or random.Random()

        self.ready = asyncio.Event()
        """Set while connected, after the birth message is published (command-only: once subscribed)."""
        self.commands_received = 0
        """Valid commands for this cabinet that reached it, expired and repeated ones included."""
        self._backoff = 0.5
        self._client_id = f"sim-{cabinet_id}-{uuid.uuid4().hex[:8]}"
        self._client: aiomqtt.Client | None = None
        self._link_up = asyncio.Event()
        self._link_up.set()
        # Events and acks wait here, in order, while the link is down: firmware keeps what it saw.
        self._outbox: deque[tuple[str, bytes]] = deque()
        self._outbox_filled = asyncio.Event()
        self._event_counter = 0
        # Starts from the clock so seq keeps increasing across restarts of the simulator.
        self._seq = time.time_ns() // 1_000_000
        self._seen_commands: OrderedDict[str, CommandAck | None] = OrderedDict()
        self._reports_rescheduled = asyncio.Event()
        self._outage: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------------------------ inspection

    def topic(self, channel: Channel) -> str:
        """This cabinet's topic for a channel."""
        return cabinet_topic(self.settings.mqtt.topic_prefix, self.cabinet_id, channel)

    def door_open(self, slot_no: int) -> bool:
        """Whether the slot's door is open."""
        return self._slot(slot_no).door_open

    def battery_in(self, slot_no: int) -> SimBattery | None:
        """The pack in the slot, if any."""
        return self._slot(slot_no).battery

    def state(self, *, online: bool = True, reason: str | None = None) -> CabinetState:
        """The birth message (online, with every slot) or the offline state (`reason` "shutdown" on a
        clean stop; none in the last-will)."""
        return CabinetState(
            cabinet_id=self.cabinet_id,
            online=online,
            ts=_now(),
            firmware=self.firmware,
            slots=[slot.report() for slot in self.slots.values()] if online else None,
            reason=reason,
        )

    # ----------------------------------------------------------------------------------------- running

    async def run(self) -> None:
        """Stay connected until cancelled (reconnecting with backoff), obey commands, send telemetry and
        charge packs. On cancellation publish the offline state, then disconnect cleanly."""
        physics = asyncio.create_task(self._physics())
        try:
            while True:
                await self._link_up.wait()
                try:
                    await self._session()
                except self.link_errors as exc:
                    log.info("%s: connection lost (%s)", self.cabinet_id, exc)
                if self._link_up.is_set():  # a cut link waits for restore_network() instead
                    await asyncio.sleep(self._backoff * random.uniform(0.8, 1.2))
                    self._backoff = min(self._backoff * 2, 10.0)
        finally:
            physics.cancel()
            if self._outage is not None:
                self._outage.cancel()

    async def _session(self) -> None:
        # A command-only cabinet has nothing to say about itself, not even that it went away.
        will = (
            None
            if self.command_only
            else aiomqtt.Will(
                self.topic(Channel.STATE),
                self.state(online=False).model_dump_json(exclude_none=True),
                qos=1,
                retain=True,
            )
        )
        login = client_login(self.settings, self.cabinet_id)  # each cabinet its own identity
        # A broker that checks identity takes a cabinet only under its own id.
        client_id = self._client_id if login is None else self.cabinet_id
        async with mqtt_client(self.settings, client_id, will=will, keepalive=self.keepalive_s, login=login) as client:
            helpers: list[asyncio.Task[None]] = []
            try:
                # Subscribed before the birth: once it says "online" the cabinet takes commands.
                await client.subscribe(self.topic(Channel.COMMANDS), qos=1)
                if not self.command_only:
                    await client.publish(self.topic(Channel.STATE), self._json(self.state()), qos=1, retain=True)
                self._client = client
                self._backoff = 0.5
                self.ready.set()
                reports = self._battery_reports() if self.command_only else self._telemetry(client)
                helpers = [asyncio.create_task(reports), asyncio.create_task(self._send_outbox(client))]
                commands = self.topic(Channel.COMMANDS)
                async for message in client.messages:
                    # Only our command topic: some brokers (amqtt) also push retained messages others asked for.
                    if message.topic.value != commands:
                        continue
                    payload = message.payload
                    self._on_command(bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload))
            except asyncio.CancelledError:
                if self._client is not None and not self.command_only:
                    await self._say_goodbye(client)
                raise
            finally:
                self._client = None
                self.ready.clear()
                for helper in helpers:
                    helper.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)

    async def _say_goodbye(self, client: aiomqtt.Client) -> None:
        # A clean DISCONNECT discards the last-will, so the offline state is published by hand.
        try:
            offline = self._json(self.state(online=False, reason="shutdown"))
            async with asyncio.timeout(2.0):
                await client.publish(self.topic(Channel.STATE), offline, qos=1, retain=True)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.info("%s: offline state not published (%s)", self.cabinet_id, exc)

    def cut_network(self) -> None:
        """Lose the broker link without a DISCONNECT (a dead modem): the broker publishes the last-will.
        The cabinet keeps working and keeps its events until `restore_network()`."""
        self._link_up.clear()
        client = self._client
        if client is not None:
            # aiomqtt has no way to drop a link uncleanly; shutting the socket is what a dead link does.
            sock = client._client.socket()  # noqa: SLF001
            if isinstance(sock, socket.socket):
                sock.shutdown(socket.SHUT_RDWR)

    def restore_network(self) -> None:
        """Bring the link back: the cabinet reconnects, publishes its birth and sends what it kept."""
        self._link_up.set()

    def swap_started(self) -> None:
        """A rider has started a swap here. Rolls the `offline` fault: on a hit the cabinet drops off the
        network shortly after (mid-swap, see `offline_delay_s`) for the plan's `offline_seconds`, then
        comes back and announces itself again. Does nothing while an outage is already under way."""
        if self.faults is None or not self._link_up.is_set() or (self._outage and not self._outage.done()):
            return
        if self._fault("offline"):
            self._outage = asyncio.create_task(self._go_offline(self.faults.offline_seconds))

    async def _go_offline(self, seconds: float) -> None:
        await asyncio.sleep(self._rng.uniform(*self.offline_delay_s))
        log.info("%s: injected fault: offline for %.0fs", self.cabinet_id, seconds)
        self.cut_network()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.restore_network()

    async def _physics(self) -> None:
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(self.physics_interval_s)
            now = loop.time()
            simulated = (now - last) * self.charge_speedup
            last = now
            for slot in self.slots.values():
                if slot.battery is None:
                    continue
                if slot.charging:
                    slot.battery.charge(simulated)
                else:
                    slot.battery.rest(simulated)

    async def _telemetry(self, client: aiomqtt.Client) -> None:
        # Spread the first report so a fleet started together does not publish in lockstep.
        await asyncio.sleep(random.uniform(0, self.telemetry_interval_s))
        while True:
            self._seq += 1
            telemetry = Telemetry(
                cabinet_id=self.cabinet_id,
                ts=_now(),
                seq=self._seq,
                slots=[slot.report() for slot in self.slots.values()],
                cabinet_temperature_c=30.0,
            )
            try:
                # QoS 0: the next report supersedes a lost one.
                await client.publish(self.topic(Channel.TELEMETRY), self._json(telemetry), qos=0)
            except aiomqtt.MqttError as exc:
                log.debug("%s: telemetry not sent (%s)", self.cabinet_id, exc)
            await asyncio.sleep(self.telemetry_interval_s)

    async def _battery_reports(self) -> None:
        """Command-only mode: each pack in a slot reports itself every `battery_report_interval_s`, and
        `insert_report_delay_s` after it was put in. Runs while connected: a pack's periodic report is
        not worth keeping through an outage, its next one says the same."""
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            for slot in self.slots.values():
                if slot.battery is None:
                    continue
                if slot.report_at is None:  # spread the first reports: a fleet started together is not in lockstep
                    slot.report_at = now + self._rng.uniform(0, self.battery_report_interval_s)
                if slot.report_at <= now:
                    self._report_battery(slot.battery, slot, announces=slot.report_announces)
                    slot.report_at, slot.report_announces = now + self.battery_report_interval_s, False
            due = [
                slot.report_at
                for slot in self.slots.values()
                if slot.battery is not None and slot.report_at is not None
            ]
            self._reports_rescheduled.clear()
            with suppress(TimeoutError):
                async with asyncio.timeout(max(min(due, default=now + self.battery_report_interval_s) - now, 0.0)):
                    await self._reports_rescheduled.wait()

    def _report_battery(self, battery: SimBattery, slot: SimSlot | None, *, announces: bool) -> None:
        """Publish the pack's own report: in `slot`, or out of any cabinet. A report that announces a
        change (put in, taken out) may be duplicated like an event."""
        telemetry = battery.telemetry(
            cabinet_id=self.cabinet_id if slot else None, slot_no=slot.slot_no if slot else None
        )
        # Nulls kept: "cabinet_id": null is how a pack says it is out of any cabinet.
        payload = telemetry.model_dump_json().encode()
        copies = 2 if announces and self._fault("duplicate", forced=self.duplicate_events) else 1
        for _ in range(copies):
            self._send(battery_topic(self.settings.mqtt.topic_prefix, battery.serial), payload)

    async def _send_outbox(self, client: aiomqtt.Client) -> None:
        while True:
            if not self._outbox:
                self._outbox_filled.clear()
                await self._outbox_filled.wait()
                continue
            topic, payload = self._outbox[0]
            try:
                await client.publish(topic, payload, qos=1)
            except aiomqtt.MqttError as exc:
                # Kept for the next attempt (possibly a duplicate then: the platform dedupes).
                log.info("%s: publish failed (%s); will retry", self.cabinet_id, exc)
                await asyncio.sleep(0.5)
                continue
            self._outbox.popleft()

    # ---------------------------------------------------------------------------------------- commands

    def _on_command(self, payload: bytes | str) -> None:
        try:
            command = Command.model_validate_json(payload)
        except ValidationError as exc:
            log.warning("%s: ignoring an invalid command: %s", self.cabinet_id, exc.errors()[:1])
            return
        if command.cabinet_id != self.cabinet_id:
            log.warning("%s: ignoring a command for %s", self.cabinet_id, command.cabinet_id)
            return
        self.commands_received += 1
        if command.command_id in self._seen_commands:
            # A redelivery: acted on once already. Its ack is sent again, since the first may be lost.
            earlier = self._seen_commands[command.command_id]
            if earlier is not None:
                self._publish_ack(earlier)
            return
        self._seen_commands[command.command_id] = None
        if len(self._seen_commands) > _REMEMBERED_COMMANDS:
            self._seen_commands.popitem(last=False)
        if as_utc(command.deadline) < _now():
            log.info("%s: ignoring expired command %s", self.cabinet_id, command.command_id)
            return
        self._execute(command)

    def _execute(self, command: Command) -> None:
        action = command.action
        if command.slot_no is None:
            self._ack(command, ok=False, error="slot_no_required")
            return
        slot = self.slots.get(command.slot_no)
        if slot is None:
            self._ack(command, ok=False, error="unknown_slot")
            return
        if action is CommandAction.OPEN_DOOR:
            if self._fault("jam", forced=slot.slot_no in self.jammed_slots):
                log.info(
                    "%s: slot %d is jammed; open_door %s goes unanswered",
                    self.cabinet_id,
                    slot.slot_no,
                    command.command_id,
                )
                return
            if slot.locked:
                self._ack(command, ok=False, error="slot_locked")
                return
            was_open, slot.door_open = slot.door_open, True
            self._ack(command, ok=True)
            if not was_open:
                self._emit(EventType.DOOR_OPENED, slot.slot_no)
        elif action is CommandAction.CLOSE_DOOR:
            was_open, slot.door_open = slot.door_open, False
            self._ack(command, ok=True)
            if was_open:
                self._emit(EventType.DOOR_CLOSED, slot.slot_no)
        elif action is CommandAction.READ_BMS:
            if slot.battery is None:
                self._ack(command, ok=False, error="slot_empty")
            else:
                self._ack(command, ok=True, result=slot.battery.reading())
        else:
            slot.locked = action is CommandAction.LOCK_SLOT
            self._ack(command, ok=True)

    def _ack(
        self, command: Command, *, ok: bool, error: str | None = None, result: BatteryReading | None = None
    ) -> None:
        if self.command_only:
            return
        ack = CommandAck(
            command_id=command.command_id, cabinet_id=self.cabinet_id, ok=ok, ts=_now(), error=error, result=result
        )
        self._seen_commands[command.command_id] = ack
        self._publish_ack(ack)

    def _publish_ack(self, ack: CommandAck) -> None:
        if self._fault("drop_ack", forced=self.drop_acks):
            return
        self._send(self.topic(Channel.ACKS), self._json(ack))

    # ---------------------------------------------------------------------------------- physical world

    async def insert_battery(self, slot_no: int, battery: SimBattery, *, door_close_delay_s: float = 0.0) -> None:
        """A rider puts a pack into the slot behind an open door, then shuts the door: events
        battery_inserted (with the pack's BMS reading) and door_closed."""
        slot = self._slot(slot_no)
        if not slot.door_open:
            raise PhysicalActionError(f"{self.cabinet_id} slot {slot_no}: the door is closed")
        if slot.battery is not None:
            raise PhysicalActionError(f"{self.cabinet_id} slot {slot_no}: already holds {slot.battery.serial}")
        slot.battery = battery
        self._emit(EventType.BATTERY_INSERTED, slot_no, battery=battery.reading())
        if self.command_only:
            slot.report_at = asyncio.get_running_loop().time() + self.insert_report_delay_s
            slot.report_announces = True
            self._reports_rescheduled.set()
        await self._shut_door(slot, door_close_delay_s)

    def open_with_service_key(self, slot_no: int) -> None:
        """A technician opens the door by hand (a locked slot too): event door_opened."""
        slot = self._slot(slot_no)
        if not slot.door_open:
            slot.door_open = True
            self._emit(EventType.DOOR_OPENED, slot_no)

    async def take_battery(self, slot_no: int, *, door_close_delay_s: float = 0.0) -> SimBattery:
        """A rider takes the pack out of the slot behind an open door, then shuts the door: events
        battery_removed and door_closed. Returns the pack."""
        slot = self._slot(slot_no)
        if not slot.door_open:
            raise PhysicalActionError(f"{self.cabinet_id} slot {slot_no}: the door is closed")
        battery = slot.battery
        if battery is None:
            raise PhysicalActionError(f"{self.cabinet_id} slot {slot_no}: the slot is empty")
        slot.battery = None
        slot.report_at, slot.report_announces = None, False
        battery.current_a = 0.0
        self._emit(EventType.BATTERY_REMOVED, slot_no, battery_serial=battery.serial)
        if self.command_only:
            # Kept in the outbox through an outage: this one report is the evidence the pack left.
            self._report_battery(battery, None, announces=True)
        await self._shut_door(slot, door_close_delay_s)
        return battery

    async def _shut_door(self, slot: SimSlot, delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)  # the rider's hand on the door
        if slot.door_open:  # a close_door command may have beaten the rider to it
            slot.door_open = False
            self._emit(EventType.DOOR_CLOSED, slot.slot_no)
        if slot.charging and slot.battery is not None:  # the charger takes the pack as the door shuts
            slot.battery.current_a = slot.battery.charger_current()

    def _slot(self, slot_no: int) -> SimSlot:
        slot = self.slots.get(slot_no)
        if slot is None:
            raise PhysicalActionError(f"{self.cabinet_id} has no slot {slot_no}")
        return slot

    # ---------------------------------------------------------------------------------------- sending

    def _emit(
        self,
        type_: EventType,
        slot_no: int | None,
        *,
        battery: BatteryReading | None = None,
        battery_serial: str | None = None,
    ) -> None:
        if self.command_only:
            return  # legacy hardware has no event channel
        self._event_counter += 1
        event = CabinetEvent(
            event_id=f"{self.cabinet_id}-{self._event_counter}-{uuid.uuid4().hex[:6]}",
            cabinet_id=self.cabinet_id,
            ts=_now(),
            type=type_,
            slot_no=slot_no,
            battery=battery,
            battery_serial=battery_serial,
        )
        payload = self._json(event)
        for _ in range(2 if self._fault("duplicate", forced=self.duplicate_events) else 1):
            self._send(self.topic(Channel.EVENTS), payload)

    def _fault(self, name: str, *, forced: bool = False) -> bool:
        """Whether to inject fault `name` now: forced by a knob, or rolled from the plan. Counted."""
        hit = forced or (self.faults is not None and self.faults.roll(name, self._rng))
        if hit:
            self.fault_stats.count(name)
        return hit

    def _send(self, topic: str, payload: bytes) -> None:
        self._outbox.append((topic, payload))
        self._outbox_filled.set()

    @staticmethod
    def _json(message: BaseModel) -> bytes:
        return message.model_dump_json(exclude_none=True).encode()
