"""Tower-protocol gateway benchmark: N simulated tower cabinets on TCP, the gateway, and the embedded
broker with device identity enforced, all in one process on free ports (a temporary SQLite database).

Prints how long the fleet took to come online (login + full report → v1 birth), the frames the gateway
took in per second while every cabinet reported at the given interval, and the round trip of v1 door
commands (publish on the cabinet's `commands` topic → 500 → 501 → v1 ack received), p50/p99, measured
while the reports flow.

    ./dev python bench/tower_gateway.py --cabinets 200 --interval 2 --commands 500

Loopback only; bounded by --seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import REGISTRY
from sqlalchemy import select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swapflow.db.engine import Database, create_sync_engine  # noqa: E402
from swapflow.db.migrate import upgrade  # noqa: E402
from swapflow.db.network import Cabinet
from swapflow.demo.network import seed_demo_network
from swapflow.gateway.server import TowerGateway  # noqa: E402
from swapflow.identity.credentials import provision_embedded_stack  # noqa: E402
from swapflow.infra.mqtt import mqtt_client
from swapflow.protocol.v1 import Channel, Command, CommandAck, CommandAction, cabinet_topic  # noqa: E402
from swapflow.settings import Settings  # noqa: E402
from swapflow.simulator.fleet import build_cabinets  # noqa: E402
from swapflow.stack.broker import embedded_broker, settings_plugins  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def frames_in() -> float:
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "swapflow_gateway_frames_in"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


async def main(args: argparse.Namespace) -> None:
    data = Path(tempfile.mkdtemp(prefix="swapflow-bench-tower-"))
    settings = Settings().updated(
        data_dir=data,
        database_url=f"sqlite:///{data / 'bench.db'}",
        mqtt={"url": None},
        embedded_broker={"port": free_port()},
        gateway={"host": "127.0.0.1", "port": free_port(), "read_timeout_s": max(30.0, 3 * args.interval)},
    )
    upgrade(settings.effective_database_url)
    engine = create_sync_engine(settings.effective_database_url)
    stations = max(1, -(-args.cabinets // 4))  # four demo cities
    seed_demo_network(engine, stations_per_city=stations, riders_per_city=1, command_only_share=0.0, tower_share=1.0)
    provision_embedded_stack(engine, settings)
    engine.dispose()

    broker = embedded_broker("127.0.0.1", settings.embedded_broker.port, settings_plugins(settings))
    await broker.start()
    db = Database(settings.effective_database_url)
    gateway = TowerGateway(settings, db)
    tasks = [asyncio.create_task(gateway.serve())]
    await gateway.ready.wait()
    async with db.sessions() as session:
        ids = list(await session.scalars(select(Cabinet.id).order_by(Cabinet.id).limit(args.cabinets)))
    cabinets = await build_cabinets(settings, db, cabinet_ids=ids, telemetry_interval_s=args.interval)
    started = time.perf_counter()
    tasks += [asyncio.create_task(c.run()) for c in cabinets.values()]
    await asyncio.wait_for(asyncio.gather(*(c.ready.wait() for c in cabinets.values())), args.seconds)
    online_s = time.perf_counter() - started
    print(f"{len(cabinets)} tower cabinets online through the gateway in {online_s:.2f} s")

    prefix = settings.mqtt.topic_prefix
    pending: dict[str, float] = {}
    round_trips: list[float] = []
    done = asyncio.Event()
    async with mqtt_client(settings, f"bench-{uuid.uuid4().hex[:8]}") as client:
        await client.subscribe(cabinet_topic(prefix, "+", Channel.ACKS), qos=1)

        async def acks() -> None:
            async for message in client.messages:
                ack = CommandAck.model_validate_json(message.payload if isinstance(message.payload, bytes) else b"")
                sent = pending.pop(ack.command_id, None)
                if sent is not None:
                    round_trips.append(time.perf_counter() - sent)
                    if len(round_trips) >= args.commands:
                        done.set()

        reader = asyncio.create_task(acks())
        frames_before, t0 = frames_in(), time.perf_counter()
        ids = list(cabinets)
        for n in range(args.commands):
            cabinet_id = ids[n % len(ids)]
            now = datetime.now(UTC)
            command = Command(
                command_id=uuid.uuid4().hex[:20],
                cabinet_id=cabinet_id,
                action=CommandAction.OPEN_DOOR if n % 2 == 0 else CommandAction.CLOSE_DOOR,
                slot_no=12,
                issued_at=now,
                deadline=now + timedelta(seconds=10),
            )
            pending[command.command_id] = time.perf_counter()
            await client.publish(cabinet_topic(prefix, cabinet_id, Channel.COMMANDS), command.model_dump_json(), qos=1)
            await asyncio.sleep(1 / args.rate)
        try:
            await asyncio.wait_for(done.wait(), 15)
        except TimeoutError:
            pass
        elapsed = time.perf_counter() - t0
        reader.cancel()
    frames_rate = (frames_in() - frames_before) / elapsed
    print(
        f"gateway frames in: {frames_rate:.0f}/s (reports every {args.interval:g} s from each cabinet, "
        f"plus control responses)"
    )
    if round_trips:
        ordered = sorted(round_trips)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        print(
            f"v1 command → tower 500/501 → v1 ack: {len(ordered)}/{args.commands} acked, "
            f"p50 {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms at {args.rate:g} commands/s"
        )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await broker.shutdown()
    await db.dispose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cabinets", type=int, default=100)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between a cabinet's reports")
    parser.add_argument("--commands", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="commands per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="bound on bringing the fleet online")
    asyncio.run(main(parser.parse_args()))
