"""Device identity on real brokers: the embedded amqtt broker with swapflow's identity plugins, and a
Mosquitto started here from the files `swapflow cabinets provision` writes. Each refuses unknown
clients and wrong passwords, and keeps a cabinet to its own topics. (CI's Mosquitto on :1883 is
anonymous and cannot be reconfigured, so this file starts brokers of its own.)"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
import pytest
from sqlalchemy.orm import Session

from swapflow.db.engine import create_sync_engine
from swapflow.identity.credentials import Login, ProvisioningError, ensure_service_account, provision_cabinet
from swapflow.identity.mosquitto import listeners, write_mosquitto_files
from swapflow.identity.passwords import hash_password, verify_password
from swapflow.infra.mqtt import mqtt_client
from swapflow.protocol.v1 import Channel, cabinet_topic
from swapflow.settings import Settings
from swapflow.stack.broker import embedded_broker
from swapflow.stack.broker_auth import auth_plugins
from tests.conftest import free_port

CABINET_A = "cab-sh-001-1"
CABINET_B = "cab-sh-002-1"
SERVICE = Login("swapflow", "service-secret-for-tests")
MOSQUITTO = shutil.which("mosquitto") or next(
    (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
)


@dataclass
class Identities:
    settings: Settings
    """Where the platform's services connect."""
    a: Login
    b: Login
    device_port: int
    """Where cabinets connect."""

    def topic(self, cabinet_id: str, channel: Channel) -> str:
        return cabinet_topic(self.settings.mqtt.topic_prefix, cabinet_id, channel)


def provision(database_url: str) -> tuple[Login, Login]:
    engine = create_sync_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            ensure_service_account(session, SERVICE)
            secret_a = provision_cabinet(session, CABINET_A)
            secret_b = provision_cabinet(session, CABINET_B)
    finally:
        engine.dispose()
    assert secret_a and secret_b
    return Login(CABINET_A, secret_a), Login(CABINET_B, secret_b)


@pytest.fixture
async def amqtt_identities(settings: Settings) -> AsyncIterator[Identities]:
    """The embedded broker enforcing identity from the test's database."""
    a, b = provision(settings.effective_database_url)
    port = free_port()
    broker = embedded_broker(
        "127.0.0.1", port, auth_plugins(settings.effective_database_url, settings.mqtt.topic_prefix, [SERVICE.username])
    )
    await broker.start()
    try:
        yield Identities(settings.updated(mqtt={"url": f"mqtt://127.0.0.1:{port}"}), a, b, port)
    finally:
        await broker.shutdown()


@pytest.fixture
def mosquitto_identities(settings: Settings, tmp_path: Path) -> Iterator[Identities]:
    """A Mosquitto of this test's own, configured with the generated password and ACL files."""
    if MOSQUITTO is None:
        pytest.skip("no mosquitto binary here (CI's Mosquitto on :1883 is anonymous and cannot be reconfigured)")
    a, b = provision(settings.effective_database_url)
    engine = create_sync_engine(settings.effective_database_url)
    try:
        passwords, acl = write_mosquitto_files(engine, tmp_path / "mosquitto", settings.mqtt.topic_prefix)
    finally:
        engine.dispose()
    device_port, service_port = free_port(), free_port()
    config = tmp_path / "mosquitto.conf"
    # Run as root, Mosquitto would drop to its own user, who cannot read the test's private files.
    user = "user root\n" if os.geteuid() == 0 else ""
    config.write_text(
        listeners(passwords.parent, f"{device_port} 127.0.0.1", f"{service_port} 127.0.0.1")
        + f"persistence false\n{user}"
    )
    assert acl.parent == passwords.parent
    process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_port(device_port, process)
        _wait_for_port(service_port, process)
        yield Identities(settings.updated(mqtt={"url": f"mqtt://127.0.0.1:{service_port}"}), a, b, device_port)
    finally:
        process.terminate()
        process.wait(10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    import socket
    import time

    for _ in range(100):
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {process.stderr.read().decode() if process.stderr else ''}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("mosquitto did not start listening")


@pytest.fixture(params=["amqtt", "mosquitto"])
def identities(request: pytest.FixtureRequest) -> Identities:
    return request.getfixturevalue(f"{request.param}_identities")


def client(identities: Identities, login: Login | None, client_id: str | None = None) -> aiomqtt.Client:
    """A client of the services' listener (the service account) or of the cabinets' (anyone else),
    under its own client id unless `client_id` claims another."""
    if login is None:
        return aiomqtt.Client("127.0.0.1", identities.device_port, identifier=f"anon-{uuid.uuid4().hex[:8]}")
    if login == SERVICE:
        return mqtt_client(identities.settings, client_id or f"swapflow-test-{uuid.uuid4().hex[:8]}", login=login)
    return aiomqtt.Client(
        "127.0.0.1",
        identities.device_port,
        identifier=client_id or login.username,
        username=login.username,
        password=login.password,
    )


async def receive_until(messages: aiomqtt.Client, marker: str, timeout_s: float = 5.0) -> list[str]:
    """Topics received up to and including `marker`."""
    seen: list[str] = []
    async with asyncio.timeout(timeout_s):
        async for message in messages.messages:
            seen.append(message.topic.value)
            if message.topic.value == marker:
                return seen
    return seen


# --------------------------------------------------------------------------------------------- login


def test_password_hash_is_mosquitto_format_and_checks_the_password() -> None:
    stored = hash_password("s3cret")
    assert stored.startswith("$7$101$")
    assert verify_password("s3cret", stored) and not verify_password("other", stored)
    assert not verify_password("s3cret", "$6$not$ours")


async def test_client_without_credentials_is_refused(identities: Identities) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with client(identities, None):
            pass


async def test_unknown_client_is_refused(identities: Identities) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with client(identities, Login("cab-nowhere-1", "guess")):
            pass


async def test_wrong_password_is_refused(identities: Identities) -> None:
    with pytest.raises(aiomqtt.MqttError):
        async with client(identities, Login(CABINET_A, identities.b.password)):
            pass


# ---------------------------------------------------------------------------------------------- topics


async def test_cabinet_publishes_on_its_own_topics_and_reads_its_own_commands(identities: Identities) -> None:
    async with client(identities, SERVICE) as platform, client(identities, identities.a) as cabinet:
        await platform.subscribe(identities.topic("+", Channel.EVENTS), qos=1)
        await cabinet.subscribe(identities.topic(CABINET_A, Channel.COMMANDS), qos=1)
        await cabinet.publish(identities.topic(CABINET_A, Channel.EVENTS), b"{}", qos=1)
        assert await receive_until(platform, identities.topic(CABINET_A, Channel.EVENTS)) == [
            identities.topic(CABINET_A, Channel.EVENTS)
        ]
        await platform.publish(identities.topic(CABINET_A, Channel.COMMANDS), b"{}", qos=1)
        assert identities.topic(CABINET_A, Channel.COMMANDS) in await receive_until(
            cabinet, identities.topic(CABINET_A, Channel.COMMANDS)
        )


async def test_cabinet_cannot_publish_on_another_cabinets_topics(identities: Identities) -> None:
    async with client(identities, SERVICE) as platform, client(identities, identities.a) as cabinet:
        await platform.subscribe(identities.topic("+", Channel.EVENTS), qos=1)
        await platform.subscribe(identities.topic("+", Channel.STATE), qos=1)
        await cabinet.publish(identities.topic(CABINET_B, Channel.STATE), b'{"forged": true}', qos=1)
        await cabinet.publish(identities.topic(CABINET_B, Channel.EVENTS), b'{"forged": true}', qos=1)
        # Sent after the forgeries on the same connection: once it is in, they would have been too.
        await cabinet.publish(identities.topic(CABINET_A, Channel.EVENTS), b"{}", qos=1)
        seen = await receive_until(platform, identities.topic(CABINET_A, Channel.EVENTS))
    assert seen == [identities.topic(CABINET_A, Channel.EVENTS)]


async def test_cabinet_cannot_read_another_cabinets_commands(identities: Identities) -> None:
    async with client(identities, SERVICE) as platform, client(identities, identities.a) as cabinet:
        await cabinet.subscribe(identities.topic(CABINET_B, Channel.COMMANDS), qos=1)
        await cabinet.subscribe(identities.topic("+", Channel.COMMANDS), qos=1)
        await cabinet.subscribe(identities.topic(CABINET_A, Channel.COMMANDS), qos=1)
        await platform.publish(identities.topic(CABINET_B, Channel.COMMANDS), b'{"secret": true}', qos=1)
        await platform.publish(identities.topic(CABINET_A, Channel.COMMANDS), b"{}", qos=1)
        seen = await receive_until(cabinet, identities.topic(CABINET_A, Channel.COMMANDS))
    assert identities.topic(CABINET_B, Channel.COMMANDS) not in seen


# ------------------------------------------------------------------------------------------ client ids


async def connect_claiming(identities: Identities, login: Login, client_id: str) -> None:
    """Connect as `login` under `client_id` for a moment; the broker may refuse (amqtt) or rename
    (Mosquitto) it, either of which is fine."""
    try:
        async with client(identities, login, client_id):
            await asyncio.sleep(0.5)
    except aiomqtt.MqttError:
        pass


async def test_a_cabinet_cannot_take_over_a_platform_clients_session(identities: Identities) -> None:
    platform_id = f"swapflow-adapter-{uuid.uuid4().hex[:8]}"
    async with client(identities, SERVICE, platform_id) as platform, client(identities, identities.a) as cabinet:
        await platform.subscribe(identities.topic("+", Channel.EVENTS), qos=1)
        await connect_claiming(identities, identities.b, platform_id)
        await cabinet.publish(identities.topic(CABINET_A, Channel.EVENTS), b"{}", qos=1)
        assert await receive_until(platform, identities.topic(CABINET_A, Channel.EVENTS)) == [
            identities.topic(CABINET_A, Channel.EVENTS)
        ]


async def test_a_cabinet_cannot_take_over_another_cabinets_session(identities: Identities) -> None:
    async with client(identities, SERVICE) as platform, client(identities, identities.b) as victim:
        await victim.subscribe(identities.topic(CABINET_B, Channel.COMMANDS), qos=1)
        await connect_claiming(identities, identities.a, CABINET_B)
        await platform.publish(identities.topic(CABINET_B, Channel.COMMANDS), b"{}", qos=1)
        assert await receive_until(victim, identities.topic(CABINET_B, Channel.COMMANDS)) == [
            identities.topic(CABINET_B, Channel.COMMANDS)
        ]


async def test_a_cabinet_under_its_own_id_is_refused_nothing(amqtt_identities: Identities) -> None:
    async with client(amqtt_identities, amqtt_identities.a) as cabinet:
        await cabinet.publish(amqtt_identities.topic(CABINET_A, Channel.EVENTS), b"{}", qos=1)


async def test_on_the_embedded_broker_a_cabinet_claiming_another_client_id_is_refused(
    amqtt_identities: Identities,
) -> None:
    for claimed in (CABINET_B, "swapflow-adapter-x", f"{CABINET_A}-2"):
        with pytest.raises(aiomqtt.MqttError):
            async with client(amqtt_identities, amqtt_identities.a, claimed):
                pass


def test_no_cabinet_may_be_provisioned_under_the_platforms_client_id_prefix(settings: Settings) -> None:
    engine = create_sync_engine(settings.effective_database_url)
    try:
        with Session(engine) as session, pytest.raises(ProvisioningError, match="platform's"):
            provision_cabinet(session, "swapflow-adapter-host")
    finally:
        engine.dispose()
