"""A faulty or hostile cabinet's flood: junk on every topic it may publish on (invalid JSON, wrong types,
acks for unknown commands, states that make no sense, replayed events, telemetry from far in the
future, reports of unknown packs, payloads far over any limit). For tests and benchmarks that check a
device costs only itself; bounded in count, paced in rate, sent to the configured (loopback) broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import aiomqtt

from swapflow.protocol.v1 import Channel, battery_topic, cabinet_topic

_HUGE = 1_000_000  # bytes of the oversized payloads


def junk(prefix: str, cabinet_id: str, n: int) -> list[tuple[str, bytes]]:
    """`n` junk messages (topic, payload) from `cabinet_id`, the kinds taking turns."""

    def at(channel: Channel) -> str:
        return cabinet_topic(prefix, cabinet_id, channel)

    now = datetime.now(UTC).isoformat()
    replayed = {
        "v": 1,
        "event_id": "replayed",
        "cabinet_id": cabinet_id,
        "ts": now,
        "type": "door_opened",
        "slot_no": 1,
    }
    kinds = [
        (at(Channel.EVENTS), b"{not json"),
        (at(Channel.EVENTS), json.dumps({"v": 1, "event_id": 7, "cabinet_id": cabinet_id, "ts": "soon"}).encode()),
        (
            at(Channel.ACKS),
            json.dumps({"v": 1, "command_id": "never-sent", "cabinet_id": cabinet_id, "ok": True, "ts": now}).encode(),
        ),
        (at(Channel.STATE), json.dumps({"v": 1, "cabinet_id": cabinet_id, "online": "maybe"}).encode()),
        (at(Channel.EVENTS), json.dumps(replayed).encode()),
        (
            at(Channel.TELEMETRY),
            json.dumps(
                {"v": 1, "cabinet_id": cabinet_id, "seq": 1, "ts": "2099-01-01T00:00:00Z", "slots": []}
            ).encode(),
        ),
        (battery_topic(prefix, "BAT-NOWHERE"), b"[]"),
        (at(Channel.EVENTS), b"\xff" * 64),
    ]
    messages = [kinds[i % len(kinds)] for i in range(n)]
    # A few payloads far over any limit, as in a real flood.
    for i in range(0, n, max(1, n // 5)):
        messages[i] = (at(Channel.EVENTS), b"x" * _HUGE)
    return messages


async def flood(
    connect: Callable[[], aiomqtt.Client], messages: list[tuple[str, bytes]], rate_per_s: float, deadline_s: float
) -> int:
    """Publish `messages` (QoS 0) at `rate_per_s` on a connection from `connect` until they are sent or
    `deadline_s` has passed; returns how many went out. A broker may close the link of a client that
    sends what it refuses: the flood comes back, as a misbehaving cabinet would."""
    began = time.monotonic()
    pending = iter(messages)
    sent = 0
    while time.monotonic() - began < deadline_s:
        try:
            async with connect() as client:
                for topic, payload in pending:
                    elapsed = time.monotonic() - began
                    if elapsed > deadline_s:
                        return sent
                    await asyncio.sleep(max(0.0, sent / rate_per_s - elapsed))
                    await client.publish(topic, payload, qos=0)
                    sent += 1
                return sent
        except aiomqtt.MqttError:
            await asyncio.sleep(0.1)
    return sent
