"""A simulated swap cabinet: a real MQTT client speaking protocol v1, with slots, doors, chargers and
the fault knobs the tests and demos turn (jammed doors, lost acks, duplicated events, a cut link).

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
from dataclasses import dataclass
from datetime import UTC, datetime

import aiomqtt
from pydantic import BaseModel, ValidationError

from swapflow.mqtt import mqtt_client
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
    cabinet_topic,
)
from swapflow.settings import Settings
from swapflow.simulator.battery import DEFAULT_SPEEDUP, SimBattery

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
    """A cabinet and its firmware. Run `run()` as a task; `ready` is set once its birth is out."""

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

        # Fault knobs.
        self.jammed_slots: set[int] = set()
        """open_door on these slots neither opens nor gets an ack (a jammed latch)."""
        self.drop_acks = False
        """Execute commands but never acknowledge them."""
        self.duplicate_events = False
        """Publish every event twice (as a flaky link with QoS 1 redelivery does)."""

        self.ready = asyncio.Event()
        """Set while connected, after the birth message is published."""
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
        self._seen_commands: OrderedDict[str, None] = OrderedDict()

    # ------------------------------------------------------------------------------------ inspection

    def topic(self, channel: Channel) -> str:
        """This cabinet's topic for a channel."""
        return cabinet_topic(self.settings.mqtt_topic_prefix, self.cabinet_id, channel)

    def door_open(self, slot_no: int) -> bool:
        """Whether the slot's door is open."""
        return self._slot(slot_no).door_open

    def battery_in(self, slot_no: int) -> SimBattery | None:
        """The pack in the slot, if any."""
        return self._slot(slot_no).battery

    def state(self, *, online: bool = True) -> CabinetState:
        """The birth message (online, with every slot) or the offline state."""
        return CabinetState(
            cabinet_id=self.cabinet_id,
            online=online,
            ts=_now(),
            firmware=self.firmware,
            slots=[slot.report() for slot in self.slots.values()] if online else None,
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
                except aiomqtt.MqttError as exc:
                    log.info("%s: broker connection lost (%s)", self.cabinet_id, exc)
                if self._link_up.is_set():  # a cut link waits for restore_network() instead
                    await asyncio.sleep(self._backoff * random.uniform(0.8, 1.2))
                    self._backoff = min(self._backoff * 2, 10.0)
        finally:
            physics.cancel()

    async def _session(self) -> None:
        will = aiomqtt.Will(
            self.topic(Channel.STATE), self.state(online=False).model_dump_json(exclude_none=True), qos=1, retain=True
        )
        async with mqtt_client(self.settings, self._client_id, will=will, keepalive=self.keepalive_s) as client:
            helpers: list[asyncio.Task[None]] = []
            try:
                # Subscribed before the birth: once it says "online" the cabinet takes commands.
                await client.subscribe(self.topic(Channel.COMMANDS), qos=1)
                await client.publish(self.topic(Channel.STATE), self._json(self.state()), qos=1, retain=True)
                self._client = client
                self._backoff = 0.5
                self.ready.set()
                helpers = [asyncio.create_task(self._telemetry(client)), asyncio.create_task(self._send_outbox(client))]
                commands = self.topic(Channel.COMMANDS)
                async for message in client.messages:
                    # Only our command topic: some brokers (amqtt) also push retained messages others asked for.
                    if message.topic.value != commands:
                        continue
                    payload = message.payload
                    self._on_command(bytes(payload) if isinstance(payload, bytes | bytearray) else str(payload))
            except asyncio.CancelledError:
                if self._client is not None:
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
            offline = self._json(self.state(online=False))
            await asyncio.wait_for(client.publish(self.topic(Channel.STATE), offline, qos=1, retain=True), 2.0)
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
            return  # a redelivery: acted on and acknowledged once already
        self._seen_commands[command.command_id] = None
        if len(self._seen_commands) > _REMEMBERED_COMMANDS:
            self._seen_commands.popitem(last=False)
        deadline = command.deadline if command.deadline.tzinfo else command.deadline.replace(tzinfo=UTC)
        if deadline < _now():
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
            if slot.slot_no in self.jammed_slots:
                log.info("%s: slot %d is jammed; open_door %s goes unanswered",
                         self.cabinet_id, slot.slot_no, command.command_id)
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
        if self.drop_acks:
            return
        ack = CommandAck(command_id=command.command_id, cabinet_id=self.cabinet_id, ok=ok, ts=_now(),
                         error=error, result=result)
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
        await self._shut_door(slot, door_close_delay_s)

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
        battery.current_a = 0.0
        self._emit(EventType.BATTERY_REMOVED, slot_no, battery_serial=battery.serial)
        await self._shut_door(slot, door_close_delay_s)
        return battery

    async def _shut_door(self, slot: SimSlot, delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)  # the rider's hand on the door
        if slot.door_open:  # a close_door command may have beaten the rider to it
            slot.door_open = False
            self._emit(EventType.DOOR_CLOSED, slot.slot_no)

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
        for _ in range(2 if self.duplicate_events else 1):
            self._send(self.topic(Channel.EVENTS), payload)

    def _send(self, topic: str, payload: bytes) -> None:
        self._outbox.append((topic, payload))
        self._outbox_filled.set()

    @staticmethod
    def _json(message: BaseModel) -> bytes:
        return message.model_dump_json(exclude_none=True).encode()
