"""A simulated cabinet that speaks the tower protocol over TCP to the gateway instead of protocol v1 on
MQTT: login (with its secret, derived from the stack secret like a simulated v1 cabinet's password), a
full report, increments when a door or a pack changes and every telemetry interval (its heartbeat),
alarms, and control requests obeyed and answered. Slots, packs charging, riders' actions
and the fault knobs are those of `SimulatedCabinet`; only the wire differs.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel

from swapflow.gateway.framing import FrameError, encode_message, read_frame
from swapflow.gateway.messages import (
    Alarm,
    AlarmReport,
    Attr,
    AttributeReport,
    BadMessage,
    ControlRequest,
    ControlResponse,
    LoginRequest,
    LoginResponse,
    Param,
    parse_message,
    txn_now,
)
from swapflow.gateway.signals import Control, Signal, SlotStatus
from swapflow.gateway.translate import ACTION_OF_CONTROL
from swapflow.identity.credentials import simulated_cabinet_login
from swapflow.protocol.v1 import BatteryReading, Command, CommandAck, EventType
from swapflow.simulator.cabinet import SimSlot, SimulatedCabinet

log = logging.getLogger(__name__)

_COMMAND_LIFETIME = timedelta(seconds=60)  # tower control requests carry no deadline; the gateway checks it


class LoginRefused(ConnectionError):
    """The gateway answered the login with result 0."""


def door_attrs(slot: SimSlot) -> list[Attr]:
    """Every signal of one door."""
    battery = slot.battery
    if slot.fault or (battery is not None and battery.fault_codes):
        status = SlotStatus.FAULT
    elif battery is None:
        status = SlotStatus.EMPTY
    else:
        status = SlotStatus.CHARGING if slot.charging else SlotStatus.FULL
    values: list[tuple[Signal, Any]] = [
        (Signal.DOOR_STATUS, 1 if slot.door_open else 0),
        (Signal.SLOT_STATUS, int(status)),
        (Signal.BATTERY_SERIAL, battery.serial if battery else ""),
    ]
    if battery is not None:
        reading = battery.reading()
        values += [
            (Signal.SOC, round(reading.soc, 1)),
            (Signal.SOH, round(reading.soh, 1)),
            (Signal.PACK_VOLTAGE, round(reading.voltage_v, 2)),
            (Signal.PACK_CURRENT, round(reading.current_a, 2)),
            (Signal.CELL_TEMPERATURE, round(reading.temperature_c, 1)),
            (Signal.CYCLE_COUNT, reading.cycle_count),
        ]
    return [Attr(id=signal, value=value, doorId=slot.slot_no) for signal, value in values]


def reading_params(reading: BatteryReading, door: int) -> list[Param]:
    """A BMS reading as control-response parameters."""
    values = [
        (Signal.BATTERY_SERIAL, reading.serial),
        (Signal.SOC, reading.soc),
        (Signal.SOH, reading.soh),
        (Signal.PACK_VOLTAGE, reading.voltage_v),
        (Signal.PACK_CURRENT, reading.current_a),
        (Signal.CELL_TEMPERATURE, reading.temperature_c),
        (Signal.CYCLE_COUNT, reading.cycle_count),
    ]
    return [Param(id=signal, value=value, doorId=door) for signal, value in values]


class TowerCabinet(SimulatedCabinet):
    """A `SimulatedCabinet` on the tower protocol. `gateway` is (host, port), default from the settings."""

    link_errors = (OSError, EOFError, FrameError, TimeoutError)

    def __init__(self, *args: Any, gateway: tuple[str, int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gateway = gateway or (self.settings.gateway.host, self.settings.gateway.port)
        self.login_refused = False
        """Set when the gateway refused the login (the cabinet keeps retrying, as firmware does)."""
        self._frames: deque[bytes] = deque()  # kept through an outage, sent in order after the login
        self._frames_ready = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._last_txn = 0

    # ----------------------------------------------------------------------------------------- running

    async def _session(self) -> None:
        """One connection to the gateway: login, full report, then frames both ways until it drops."""
        async with asyncio.timeout(10.0):
            reader, writer = await asyncio.open_connection(*self.gateway)
        helpers: list[asyncio.Task[None]] = []
        try:
            self._write(
                writer,
                LoginRequest(
                    txnNo=self._txn(),
                    devId=self.cabinet_id,
                    imsi="460000000000000",
                    hardVersion="SC-12",
                    softVersion=self.firmware,
                    protocolVersion="1.0",
                    secret=simulated_cabinet_login(self.settings, self.cabinet_id).password,
                ),
            )
            answer = await self._read(reader, 30.0)
            if not isinstance(answer, LoginResponse) or answer.result != 1:
                self.login_refused = True
                raise LoginRefused(f"login refused: {answer!r}")
            self.login_refused = False
            self._writer = writer
            # What happened while away goes first; then the full report puts the cabinet online.
            while self._frames:
                writer.write(self._frames.popleft())
            self._write(writer, self._report(full=True))
            await writer.drain()
            self._backoff = 0.5
            self.ready.set()
            helpers = [asyncio.create_task(self._heartbeat()), asyncio.create_task(self._send_frames(writer))]
            while True:
                message = await self._read(reader, None)
                if message is None:
                    raise EOFError("the gateway closed the connection")
                if isinstance(message, ControlRequest):
                    self._on_control(message)
        finally:
            self._writer = None
            self.ready.clear()
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            writer.close()

    async def _read(self, reader: asyncio.StreamReader, timeout_s: float | None) -> BaseModel | None:
        while True:
            body = await read_frame(reader, 1 << 20, timeout_s if timeout_s is not None else 1e9)
            if body is None:
                return None
            try:
                return parse_message(body)
            except BadMessage as exc:
                log.warning("%s: ignoring a bad frame from the gateway: %s", self.cabinet_id, exc)

    async def _heartbeat(self) -> None:
        """An increment with every pack's values each telemetry interval; the gateway hears we are alive."""
        await asyncio.sleep(random.uniform(0, self.telemetry_interval_s))
        while True:
            self._queue(self._report(full=False))
            await asyncio.sleep(self.telemetry_interval_s)

    async def _send_frames(self, writer: asyncio.StreamWriter) -> None:
        while True:
            if not self._frames:
                self._frames_ready.clear()
                await self._frames_ready.wait()
                continue
            writer.write(self._frames.popleft())
            await writer.drain()

    def cut_network(self) -> None:
        """Lose the link without closing it (a dead modem); the gateway notices by the silence or the reset."""
        self._link_up.clear()
        writer = self._writer
        if writer is not None:
            writer.transport.abort()

    # ------------------------------------------------------------------------------------------ reports

    def _report(self, *, full: bool, slots: list[SimSlot] | None = None) -> AttributeReport:
        attrs = [attr for slot in (slots if slots is not None else self.slots.values()) for attr in door_attrs(slot)]
        if full or slots is None:
            attrs.append(Attr(id=Signal.CABINET_TEMPERATURE, value=30.0, doorId=0))
        return AttributeReport(txnNo=self._txn(), devId=self.cabinet_id, isFull=1 if full else 0, attrList=attrs)

    def _emit(
        self,
        type_: EventType,
        slot_no: int | None,
        *,
        battery: BatteryReading | None = None,
        battery_serial: str | None = None,
    ) -> None:
        # A tower cabinet reports the slot's new signals; the gateway finds the event in the change.
        slot = self.slots.get(slot_no) if slot_no is not None else None
        if slot is None:
            return
        copies = 2 if self._fault("duplicate", forced=self.duplicate_events) else 1
        report = self._report(full=False, slots=[slot])
        for _ in range(copies):
            self._queue(report)

    def raise_alarm(
        self, alarm_id: str, *, door_id: int | None = None, battery_id: str | None = None, active: bool = True
    ) -> None:
        """Report an alarm starting (or, with `active=False`, ending)."""
        self._queue(
            AlarmReport(
                txnNo=self._txn(),
                devId=self.cabinet_id,
                alarmList=[
                    Alarm(
                        id=alarm_id,
                        alarmTime=txn_now(),
                        alarmFlag=1 if active else 0,
                        doorId=door_id,
                        batteryId=battery_id,
                    )
                ],
            )
        )

    # ---------------------------------------------------------------------------------------- commands

    def _on_control(self, request: ControlRequest) -> None:
        for param in request.paramList:
            if param.id != Signal.CABINET_CONTROL:
                continue
            try:
                action = ACTION_OF_CONTROL[Control(int(param.value))]
            except (KeyError, ValueError):
                self._queue(
                    ControlResponse(txnNo=request.txnNo, devId=self.cabinet_id, result=0, reason="unknown_control")
                )
                continue
            now = datetime.now(UTC)
            command = Command(
                command_id=str(request.txnNo),
                cabinet_id=self.cabinet_id,
                action=action,
                slot_no=param.doorId or None,
                issued_at=now,
                deadline=now + _COMMAND_LIFETIME,
            )
            # The v1 firmware's logic: a transaction acted on once, its answer repeated, faults rolled.
            self._on_command(command.model_dump_json())

    def _publish_ack(self, ack: CommandAck) -> None:
        if self._fault("drop_ack", forced=self.drop_acks):
            return
        if not ack.command_id.isdigit():
            return  # not a transaction number: no control request of ours
        params = []
        if ack.result is not None:
            slot_no = next((n for n, s in self.slots.items() if s.battery and s.battery.serial == ack.result.serial), 0)
            params = reading_params(ack.result, slot_no)
        self._queue(
            ControlResponse(
                txnNo=int(ack.command_id),
                devId=self.cabinet_id,
                result=1 if ack.ok else 0,
                reason=ack.error,
                paramList=params,
            )
        )

    # ---------------------------------------------------------------------------------------- sending

    def _queue(self, message: BaseModel) -> None:
        self._frames.append(encode_message(message))
        self._frames_ready.set()

    def _write(self, writer: asyncio.StreamWriter, message: BaseModel) -> None:
        writer.write(encode_message(message))

    def _txn(self) -> int:
        self._last_txn = max(self._last_txn + 1, txn_now())
        return self._last_txn
