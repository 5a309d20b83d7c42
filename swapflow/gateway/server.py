"""The tower-protocol TCP gateway: one session per connection. A cabinet logs in (100/101) with the id
it is registered under; once it has also sent a full report (300, isFull=1) it is online, and from then
on the gateway speaks protocol v1 for it on MQTT, over a connection of its own whose last-will is the
cabinet's offline state: the birth, telemetry after every report, door/battery events from the
report's changes, fault events from alarms (400), and acks (from 501) for the commands it relays from
the cabinet's v1 `commands` topic as control requests (500). When the link closes, or stays silent
past `gateway_read_timeout_s` (a half-open link), it publishes the offline state.

A login proves the cabinet's provisioned secret (the login's `secret`, checked against the stored hash
of `swapflow cabinets provision`); a refused one is answered with 0, dead-lettered with the peer's
address and closes its own connection, never a live session of the cabinet. Failed logins hold the
next logins from the same address (`LoginThrottle`). A connection has one deadline to log in, and
before it may send only a few small frames: whoever has not proved an identity costs little.

Bad input never reaches beyond its own connection: a frame that cannot be parsed or translated is
stored as a dead letter (topic `tower/<devId or peer>`) and answered with nothing; a frame whose length
cannot be trusted (oversized, cut short) also closes that connection, since the next frame's start is
lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import OrderedDict
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime

import aiomqtt
from prometheus_client import REGISTRY
from pydantic import BaseModel, ValidationError
from sqlalchemy import select

from swapflow.db.devices import DeadLetter
from swapflow.db.engine import Database
from swapflow.db.identity import CabinetCredential
from swapflow.db.network import Cabinet
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.network import CabinetProtocol, CredentialRole
from swapflow.gateway import metrics
from swapflow.gateway.framing import FrameError, encode_message, read_frame
from swapflow.gateway.messages import (
    FROM_CABINET,
    AlarmReport,
    AlarmResponse,
    AttributeReport,
    AttributeResponse,
    BadMessage,
    ControlResponse,
    LoginRequest,
    LoginResponse,
    parse_message,
    txn_now,
)
from swapflow.gateway.translate import CabinetView, PendingCommand, TranslationError
from swapflow.identity.passwords import hash_password, new_secret, verify_password
from swapflow.infra.metrics import serve_metrics
from swapflow.infra.mqtt import mqtt_client
from swapflow.protocol.v1 import CabinetEvent, Channel, Command, cabinet_topic
from swapflow.settings import Settings

log = logging.getLogger(__name__)

_MAX_DEAD_LETTER_PAYLOAD = 64 * 1024
_MAX_PRE_LOGIN_DEAD_LETTER_PAYLOAD = 1024  # what an unknown peer sent is kept as a sample only
_NO_CREDENTIAL = hash_password(new_secret())  # compared with when there is none: a refusal costs the same
_PUBLISH_TIMEOUT_S = 5.0
_WRITE_TIMEOUT_S = 5.0


_BEFORE_LOGIN = "a tower session's cabinet, view or broker connection used before its login"


class SessionClosed(Exception):
    """The connection has to close; the message says why (logged), `cause` labels the metric."""

    def __init__(self, message: str, cause: str) -> None:
        super().__init__(message)
        self.cause = cause


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _Failures:
    count: int
    last_at: float
    next_at: float  # when the address's next login may be checked


class LoginThrottle:
    """Failed logins per address (host, without the port), to slow down guessing: after n failures the
    address's next login is held until `gateway_login_backoff_s` × 2^(n-1) after the last one (at most
    `gateway_login_backoff_max_s`), and logins held at once are released one hold apart; a login that
    would be held longer than the cap is refused unchecked. An address's failures are forgotten once the
    cap has passed without one, and only the `gateway_login_backoff_addresses` latest addresses are kept.
    Times are the caller's monotonic clock."""

    def __init__(self, settings: Settings) -> None:
        self._base_s = settings.gateway.login_backoff_s
        self._max_s = settings.gateway.login_backoff_max_s
        self._capacity = settings.gateway.login_backoff_addresses
        self._addresses: OrderedDict[str, _Failures] = OrderedDict()

    def __len__(self) -> int:
        return len(self._addresses)

    def _hold(self, failures: _Failures) -> float:
        return min(self._max_s, self._base_s * 2 ** (failures.count - 1))

    def _current(self, address: str, now: float) -> _Failures | None:
        failures = self._addresses.get(address)
        if failures is not None and now >= failures.next_at and now - failures.last_at >= self._max_s:
            del self._addresses[address]
            return None
        return failures

    def reserve(self, address: str, *, now: float) -> float | None:
        """How long to hold the address's login before checking it (the slot is then taken), or None
        to refuse it unchecked."""
        failures = self._current(address, now)
        if failures is None:
            return 0.0
        at = max(now, failures.next_at)
        if at - now > self._max_s:
            return None
        failures.next_at = at + self._hold(failures)
        return at - now

    def failed(self, address: str, *, now: float) -> float:
        """Count a failed login; returns the hold on the address's next one."""
        failures = self._current(address, now) or _Failures(count=0, last_at=now, next_at=now)
        failures.count += 1
        failures.last_at = now
        hold = self._hold(failures)
        failures.next_at = max(failures.next_at, now + hold)
        self._addresses[address] = failures
        self._addresses.move_to_end(address)
        while len(self._addresses) > self._capacity:
            self._addresses.popitem(last=False)
        return hold


class TowerGateway:
    """Accepts tower cabinets' connections. Run `serve()` as a task; `ready` is set once listening, and
    `port` is then the port (useful with port 0)."""

    def __init__(self, settings: Settings, db: Database, *, host: str | None = None, port: int | None = None) -> None:
        self.settings = settings
        self.db = db
        self.host = host if host is not None else settings.gateway.host
        self.port = port if port is not None else settings.gateway.port
        self.prefix = settings.mqtt.topic_prefix
        self.ready = asyncio.Event()
        self.views: dict[str, CabinetView] = {}
        """What each cabinet reported, kept across its connections."""
        self.sessions: dict[str, asyncio.Task[None]] = {}
        """The running session of each logged-in cabinet."""
        self.throttle = LoginThrottle(settings)
        self._server: asyncio.Server | None = None

    async def serve(self) -> None:
        """Listen until cancelled; then close every connection (each publishes its offline state)."""
        self._server = await asyncio.start_server(self._connection, self.host, self.port, limit=2**20)
        self.port = self._server.sockets[0].getsockname()[1]
        self.ready.set()
        log.info("tower gateway listening on %s:%d", self.host, self.port)
        try:
            async with self._server:
                await self._server.serve_forever()
        finally:
            self.ready.clear()
            sessions = list(self.sessions.values())
            for task in sessions:
                task.cancel()
            await asyncio.gather(*sessions, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = TowerSession(self, reader, writer)
        metrics.CONNECTIONS.inc()
        try:
            await session.run()
        except asyncio.CancelledError:
            # Ended by a newer connection of the cabinet or by shutdown, after cleaning up. asyncio's
            # server would log a cancelled connection task as an error, so it ends normally here.
            pass
        finally:
            metrics.CONNECTIONS.dec()

    async def claim(self, cabinet_id: str) -> None:
        """Make the current task the cabinet's session, ending an earlier one first (a cabinet that
        reconnects before its old link timed out): the old one's offline state goes out before the new
        birth, never after it."""
        current = asyncio.current_task()
        if current is None:
            raise RuntimeError("a tower session is claimed from outside a task")
        old = self.sessions.get(cabinet_id)
        self.sessions[cabinet_id] = current
        if old is not None and old is not current and not old.done():
            old.cancel("replaced by a new connection")
            await asyncio.gather(old, return_exceptions=True)

    def release(self, cabinet_id: str) -> None:
        """The current task's session of the cabinet has ended."""
        if self.sessions.get(cabinet_id) is asyncio.current_task():
            del self.sessions[cabinet_id]

    async def login_refusal(self, login: LoginRequest) -> str | None:
        """Why the login is refused, or None when it names a registered tower cabinet and carries that
        cabinet's secret (checked against the stored hash; the digests compared in constant time)."""
        async with self.db.sessions() as session:
            cabinet = await session.get(Cabinet, login.devId)
            credential = await session.scalar(
                select(CabinetCredential).where(
                    CabinetCredential.cabinet_id == login.devId, CabinetCredential.role == CredentialRole.CABINET
                )
            )
        matches = verify_password(login.secret or "", credential.password_hash if credential else _NO_CREDENTIAL)
        if cabinet is None or cabinet.protocol != CabinetProtocol.TOWER:
            return f"{login.devId!r} is no registered tower cabinet"
        if credential is None:
            return f"{login.devId!r} has no provisioned secret"
        if not login.secret:
            return f"no secret for {login.devId!r}"
        return None if matches else f"wrong secret for {login.devId!r}"

    async def dead_letter(
        self, source: str, payload: bytes, reason: str, label: str, limit: int = _MAX_DEAD_LETTER_PAYLOAD
    ) -> None:
        """Keep a frame that could not be accepted, for an operator (the adapter's `dead_letters` table,
        topic `tower/<source>`), its first `limit` bytes. Never raises."""
        metrics.BAD_FRAMES.labels(label).inc()
        topic = f"tower/{source}"
        text = DeadLetter.text(payload, limit)
        log.warning("dead letter on %s: %s", topic, reason)

        try:
            async with self.db.transaction() as session:
                session.add(
                    DeadLetter(
                        topic=DeadLetter.text(topic, 300),
                        payload=text,
                        reason=DeadLetter.text(reason, 2000),
                        received_at=utcnow(),
                    )
                )
        except Exception:
            log.exception("could not store dead letter on %s (%s); payload: %r", topic, reason, text)


class TowerSession:
    """One TCP connection, from login to close."""

    def __init__(self, gateway: TowerGateway, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.gateway = gateway
        self.settings = gateway.settings
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.host = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        """The peer's address without the port: what failed logins are counted by."""
        self.cabinet_id: str | None = None
        self.view: CabinetView | None = None
        self.mqtt: aiomqtt.Client | None = None
        self.online = False
        self._held: list[CabinetEvent] = []
        self._last_txn = 0
        self._refused_before_login = 0

    @property
    def source(self) -> str:
        return self.cabinet_id or self.peer

    # ----------------------------------------------------------------------------------------- running

    def _replaced(self) -> bool:
        """Whether a newer connection of this session's cabinet has taken its place."""
        return self.cabinet_id is not None and self.gateway.sessions.get(self.cabinet_id) is not asyncio.current_task()

    async def run(self) -> None:
        """Serve the connection until it closes; never raises (but for cancellation)."""
        cause = "closed"
        try:
            login = await self._login()
            if login is None:
                cause = "eof"
                return
            await self._serve(login)
        except SessionClosed as exc:
            cause = exc.cause
            log.info("tower %s: closing: %s", self.source, exc)
        except asyncio.CancelledError:
            cause = "replaced" if self._replaced() else "shutdown"
            raise
        except aiomqtt.MqttError as exc:
            cause = "mqtt"
            log.warning("tower %s: MQTT link lost (%s); closing the cabinet's connection", self.source, exc)
        except (ConnectionError, OSError) as exc:
            cause = "eof"
            log.info("tower %s: connection lost (%s)", self.source, exc)
        except Exception:
            cause = "error"
            log.exception("tower %s: session failed", self.source)
        finally:
            metrics.CONNECTIONS_CLOSED.labels(cause).inc()
            self.writer.close()
            with suppress(Exception):
                async with asyncio.timeout(1.0):
                    await self.writer.wait_closed()

    async def _login(self) -> LoginRequest | None:
        """Frames until a login, all within one deadline (frames that keep the link busy do not extend
        it). Anything else valid before it is refused and closes the connection."""
        timeout_s = self.settings.gateway.login_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    message = await self._next(None, self.settings.gateway.login_max_frame_bytes)
                    if message is None:
                        return None
                    if isinstance(message, LoginRequest):
                        return message
                    kind = int(getattr(message, "messageType", 0))
                    await self._refuse(
                        message.model_dump_json().encode(), f"message type {kind} before login", "not_logged_in"
                    )
                    raise SessionClosed("spoke before logging in", "not_logged_in")
        except TimeoutError:
            raise SessionClosed(f"no login within {timeout_s:g}s", "login_timeout") from None

    async def _authenticate(self, login: LoginRequest) -> None:
        """Check the login, once its address's failed logins allow. A refused login is answered with 0,
        dead-lettered (without its secret) and closes this connection; no live session is touched."""
        hold = self.gateway.throttle.reserve(self.host, now=time.monotonic())
        if hold is None:
            metrics.LOGINS.labels("throttled").inc()
            await self._send(LoginResponse(txnNo=login.txnNo, devId=login.devId, result=0))
            raise SessionClosed(
                f"login as {login.devId!r} refused unchecked: too many failures from {self.host}", "login_throttled"
            )
        if hold > 0:
            metrics.LOGINS.labels("held").inc()
            await asyncio.sleep(hold)
        refusal = await self.gateway.login_refusal(login)
        if refusal is None:
            return
        self.gateway.throttle.failed(self.host, now=time.monotonic())
        metrics.LOGINS.labels("refused").inc()
        await self._send(LoginResponse(txnNo=login.txnNo, devId=login.devId, result=0))
        await self.gateway.dead_letter(
            self.peer,
            login.model_dump_json(exclude={"secret"}).encode(),
            f"login refused from {self.peer}: {refusal}",
            "login",
        )
        raise SessionClosed(f"login as {login.devId!r} refused: {refusal}", "login_refused")

    async def _serve(self, login: LoginRequest) -> None:
        await self._authenticate(login)
        cabinet_id = login.devId
        self.cabinet_id = cabinet_id
        await self.gateway.claim(cabinet_id)
        try:
            self.view = self.gateway.views.setdefault(cabinet_id, CabinetView(cabinet_id))
            self.view.firmware = login.softVersion or self.view.firmware
            state_topic = self._topic(Channel.STATE)
            will = aiomqtt.Will(state_topic, self.view.offline().model_dump_json(exclude_none=True), qos=1, retain=True)
            # A connection of its own per cabinet: its last-will speaks for the cabinet if the gateway dies.
            async with mqtt_client(self.settings, f"gw-{cabinet_id}-{uuid.uuid4().hex[:8]}", will=will) as mqtt:
                await mqtt.subscribe(self._topic(Channel.COMMANDS), qos=1)
                self.mqtt = mqtt
                metrics.LOGINS.labels("ok").inc()
                await self._send(LoginResponse(txnNo=login.txnNo, devId=cabinet_id, result=1))
                log.info("tower %s logged in from %s (firmware %s)", cabinet_id, self.peer, login.softVersion)
                commands = asyncio.create_task(self._commands(mqtt))
                try:
                    await self._frames()
                finally:
                    commands.cancel()
                    await asyncio.gather(commands, return_exceptions=True)
                    if self.online:
                        self.online = False
                        metrics.CABINETS_ONLINE.dec()
                        await self._publish_offline(mqtt)
        finally:
            self.gateway.release(cabinet_id)

    async def _publish_offline(self, mqtt: aiomqtt.Client) -> None:
        # A clean MQTT disconnect discards the will: the offline state is published by hand, with a
        # reason, so the platform takes its timestamp as the moment the link closed and can tell it
        # is older than the birth of a newer connection even if it arrives after it.
        if self.view is None:
            raise RuntimeError(_BEFORE_LOGIN)
        reason = "replaced" if self._replaced() else "link_closed"
        offline = self.view.offline(reason).model_dump_json(exclude_none=True)
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT_S):
                await asyncio.shield(mqtt.publish(self._topic(Channel.STATE), offline, qos=1, retain=True))
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning("tower %s: offline state not published (%s); the will covers it", self.source, exc)

    async def _frames(self) -> None:
        while True:
            message = await self._next(self.settings.gateway.read_timeout_s, self.settings.gateway.max_frame_bytes)
            if message is None:
                raise SessionClosed("the cabinet closed the connection", "eof")
            await self._handle(message)

    async def _next(self, timeout_s: float | None, max_bytes: int) -> BaseModel | None:
        """The next valid message from the cabinet (None at end of stream). Bad frames are refused;
        SessionClosed when the framing is lost or the link is silent too long."""
        while True:
            try:
                body = await read_frame(self.reader, max_bytes, timeout_s)
            except TimeoutError:
                raise SessionClosed(
                    f"no complete frame for {timeout_s:g}s (half-open or stuck link)", "read_timeout"
                ) from None
            except FrameError as exc:
                await self._refuse(exc.data, f"bad frame: {exc}", exc.reason)
                if exc.fatal:
                    raise SessionClosed(str(exc), exc.reason) from None
                continue
            if body is None:
                return None
            try:
                message = parse_message(body)
            except BadMessage as exc:
                metrics.FRAMES_IN.labels("invalid").inc()
                await self._refuse(body, str(exc), exc.reason)
                continue
            metrics.FRAMES_IN.labels(str(int(message.messageType))).inc()
            if message.messageType not in FROM_CABINET:
                await self._refuse(
                    body,
                    f"message type {int(message.messageType)} flows from the platform to cabinets, not back",
                    "wrong_direction",
                )
                continue
            if self.cabinet_id is not None and message.devId != self.cabinet_id:
                await self._refuse(
                    body,
                    f"devId {message.devId!r} does not match the logged-in cabinet {self.cabinet_id!r}",
                    "wrong_device",
                )
                continue
            return message

    async def _refuse(self, payload: bytes, reason: str, label: str) -> None:
        """A frame not taken in: a dead letter. Before a login (a peer of unknown identity) only the first
        is stored, truncated, the rest counted; past `gateway_login_max_frames` the connection closes."""
        if self.cabinet_id is not None:
            await self.gateway.dead_letter(self.source, payload, reason, label)
            return
        self._refused_before_login += 1
        if self._refused_before_login == 1:
            await self.gateway.dead_letter(
                self.source, payload, reason, label, limit=_MAX_PRE_LOGIN_DEAD_LETTER_PAYLOAD
            )
        else:
            metrics.BAD_FRAMES.labels(label).inc()
        if self._refused_before_login > self.settings.gateway.login_max_frames:
            raise SessionClosed(f"{self._refused_before_login} frames refused before a login", "login_junk")

    async def _handle(self, message: BaseModel) -> None:
        if self.view is None or self.cabinet_id is None:
            raise RuntimeError(_BEFORE_LOGIN)
        if isinstance(message, AttributeReport):
            await self._on_report(message)
        elif isinstance(message, AlarmReport):
            events = self.view.apply_alarms(message, _now())
            await self._send(AlarmResponse(txnNo=message.txnNo, devId=self.cabinet_id))
            await self._publish_events(events)
        elif isinstance(message, ControlResponse):
            await self._on_control_response(message)
        elif isinstance(message, LoginRequest):
            # A repeated login on a live connection: answered, nothing else changes.
            await self._send(LoginResponse(txnNo=message.txnNo, devId=self.cabinet_id, result=1))

    async def _on_report(self, report: AttributeReport) -> None:
        if self.view is None or self.cabinet_id is None or self.mqtt is None:
            raise RuntimeError(_BEFORE_LOGIN)
        at = _now()
        try:
            events = self.view.apply_report(report, at)
        except TranslationError as exc:
            await self.gateway.dead_letter(
                self.source, report.model_dump_json().encode(), f"invalid tower report: {exc}", "bad_value"
            )
            await self._send(AttributeResponse(txnNo=report.txnNo, devId=self.cabinet_id, result=0))
            return
        await self._send(AttributeResponse(txnNo=report.txnNo, devId=self.cabinet_id))
        if not self.online and report.isFull == 1:
            # Online from here: the birth first, then what happened while the cabinet was away.
            await self.mqtt.publish(self._topic(Channel.STATE), _json(self.view.birth(at)), qos=1, retain=True)
            self.online = True
            metrics.CABINETS_ONLINE.inc()
            held, self._held = self._held, []
            await self._publish_events(held)
        await self._publish_events(events)
        if self.online:
            telemetry = self.view.telemetry(at, report.txnNo)
            await self.mqtt.publish(self._topic(Channel.TELEMETRY), _json(telemetry), qos=0)

    async def _publish_events(self, events: list[CabinetEvent]) -> None:
        if not self.online:
            self._held.extend(events)  # a v1 cabinet, too, sends what it saw offline after its birth
            return
        if self.mqtt is None:
            raise RuntimeError(_BEFORE_LOGIN)
        for event in events:
            await self.mqtt.publish(self._topic(Channel.EVENTS), _json(event), qos=1)

    # ---------------------------------------------------------------------------------------- commands

    async def _commands(self, mqtt: aiomqtt.Client) -> None:
        topic = self._topic(Channel.COMMANDS)
        async for message in mqtt.messages:
            if message.topic.value != topic:
                continue  # some brokers (amqtt) push retained messages other clients asked for
            payload = message.payload
            try:
                command = Command.model_validate_json(payload if isinstance(payload, bytes | str) else b"")
            except ValidationError as exc:
                log.warning("tower %s: ignoring an invalid command: %s", self.source, exc.errors()[:1])
                continue
            if command.cabinet_id == self.cabinet_id:
                await self._relay(command)

    async def _relay(self, command: Command) -> None:
        """Send a v1 command on as a control request; a redelivered one is acked again (if answered) or
        re-sent with its transaction number (the cabinet acts on a transaction once)."""
        if self.view is None or self.mqtt is None:
            raise RuntimeError(_BEFORE_LOGIN)
        pending = self.view.commands.get(command.command_id)
        if pending is not None and pending.ack is not None:
            await self.mqtt.publish(self._topic(Channel.ACKS), _json(pending.ack), qos=1)
            return
        if as_utc(command.deadline) < _now():
            metrics.COMMANDS_EXPIRED.inc()
            log.info("tower %s: command %s is past its deadline; not sent", self.source, command.command_id)
            return
        if pending is None:
            pending = PendingCommand(command, self._txn(), time.perf_counter())
            self.view.remember(pending)
        await self._send(self.view.control_request(command, pending.txn_no))

    async def _on_control_response(self, response: ControlResponse) -> None:
        if self.view is None or self.mqtt is None:
            raise RuntimeError(_BEFORE_LOGIN)
        pending = self.view.ack(response, _now())
        if pending is None or pending.ack is None:
            await self.gateway.dead_letter(
                self.source,
                response.model_dump_json().encode(),
                f"control response for unknown transaction {response.txnNo}",
                "unknown_transaction",
            )
            return
        metrics.COMMAND_ROUND_TRIP.observe(time.perf_counter() - pending.sent_at)
        await self.mqtt.publish(self._topic(Channel.ACKS), _json(pending.ack), qos=1)

    # ------------------------------------------------------------------------------------------ helpers

    def _topic(self, channel: Channel) -> str:
        if self.cabinet_id is None:
            raise RuntimeError(_BEFORE_LOGIN)
        return cabinet_topic(self.gateway.prefix, self.cabinet_id, channel)

    def _txn(self) -> int:
        """A transaction number of our own: the clock in ms, unique within the connection."""
        self._last_txn = max(self._last_txn + 1, txn_now())
        return self._last_txn

    async def _send(self, message: BaseModel) -> None:
        self.writer.write(encode_message(message))
        metrics.FRAMES_OUT.labels(str(int(getattr(message, "messageType", 0)))).inc()
        try:
            async with asyncio.timeout(_WRITE_TIMEOUT_S):
                await self.writer.drain()
        except TimeoutError:
            raise SessionClosed("the cabinet does not read what it is sent", "write_timeout") from None


def _json(message: BaseModel) -> bytes:
    return message.model_dump_json(exclude_none=True).encode()


async def run_gateway(settings: Settings) -> None:
    """The `gateway` process: serve tower cabinets until cancelled."""
    serve_metrics(REGISTRY, settings.gateway.metrics_port)
    db = Database(settings.effective_database_url, pool_size=2)
    try:
        await TowerGateway(settings, db).serve()
    finally:
        await db.dispose()
