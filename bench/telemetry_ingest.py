"""Telemetry ingestion benchmark: N cabinets (12 slots, 9 packs each) reporting at a heartbeat interval
through a real broker into the real device adapter, with door commands flowing at the same time.

The adapter runs in its own process, exactly as `swapflow adapter` does (its Prometheus endpoint is
how this script reads it). Cabinets are simulated by a light publisher that carries many cabinets over
a few MQTT connections and builds valid protocol v1 telemetry cheaply; a few of them also answer door
commands, which go out through the real command queue (recorded in the database first, as the
worker's activity does). Prints, after a warm-up: telemetry messages/s ingested, battery readings/s,
history rows written and shed, ingest lag p99 (report timestamp → state committed), door command
round trip p99 (publish → ack at the sender, and send → ack committed by the adapter), CPU per
process and the load average.

    .venv/bin/python bench/telemetry_ingest.py --mqtt-url mqtt://127.0.0.1:1883          # 80,000 at 30 s
    .venv/bin/python bench/telemetry_ingest.py --cabinets 5000 --interval 10 --duration 30
    .venv/bin/python bench/telemetry_ingest.py --profile /tmp/adapter.txt                # py-spy the adapter

Without --mqtt-url an embedded amqtt broker runs in a third process (much slower than Mosquitto).
Without --database-url the database is a temporary SQLite file. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiomqtt  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from swapflow.db.devices import DeviceCommand
from swapflow.db.engine import Database, create_sync_engine  # noqa: E402
from swapflow.db.migrate import upgrade  # noqa: E402
from swapflow.db.network import Battery, Cabinet, City, Slot, Station
from swapflow.device_commands.queue import CommandQueue  # noqa: E402
from swapflow.domain.network import CustodianKind
from swapflow.infra.metrics import bucket_quantile
from swapflow.protocol.v1 import Channel, Command, CommandAction, cabinet_topic  # noqa: E402
from swapflow.settings import Settings  # noqa: E402

SLOTS = 12
PACKS = 9  # slots 1–9 hold packs, 10–12 are empty (as the demo network)
CABINETS_PER_STATION = 4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cabinet_id(i: int) -> str:
    return f"bench-{i:06d}"


def serial(i: int, slot_no: int) -> str:
    return f"BB{i:06d}{slot_no:02d}"


# ------------------------------------------------------------------------------------------- seeding


def seed(url: str, cabinets: int) -> None:
    """A migrated database holding the bench network, all cabinets online (as after their births)."""
    upgrade(url)
    engine = create_sync_engine(url)
    now = datetime.now(UTC)
    stations = (cabinets + CABINETS_PER_STATION - 1) // CABINETS_PER_STATION
    with engine.begin() as conn:
        conn.execute(
            insert(City),
            [{"code": "BEN", "name": "Bench", "timezone": "UTC", "currency": "CNY", "swap_price_minor": 500}],
        )
        conn.execute(
            insert(Station),
            [
                {
                    "id": f"bench-st-{s:06d}",
                    "city_code": "BEN",
                    "name": f"station {s}",
                    "lat": 31.0 + s * 1e-5,
                    "lon": 121.0,
                }
                for s in range(stations)
            ],
        )
        for start in range(0, cabinets, 5000):
            chunk = range(start, min(cabinets, start + 5000))
            conn.execute(
                insert(Cabinet),
                [
                    {
                        "id": cabinet_id(i),
                        "station_id": f"bench-st-{i // CABINETS_PER_STATION:06d}",
                        "model": "B12",
                        "slot_count": SLOTS,
                        "capability": "reporting",
                        "online": True,
                        "last_seen_at": now,
                        "firmware": "bench",
                    }
                    for i in chunk
                ],
            )
            conn.execute(
                insert(Battery),
                [
                    {
                        "serial": serial(i, n),
                        "model": "LFP-60V-32Ah",
                        "chemistry": "LFP",
                        "rated_capacity_mah": 32000,
                        "soc": 50.0,
                        "soh": 95.0,
                        "voltage_v": 56.0,
                        "temperature_c": 28.0,
                        "cycle_count": 100,
                        "status": "in_service",
                        "custodian_kind": CustodianKind.SLOT.value,
                        "custodian_ref": f"{cabinet_id(i)}/{n}",
                    }
                    for i in chunk
                    for n in range(1, PACKS + 1)
                ],
            )
            conn.execute(
                insert(Slot),
                [
                    {
                        "cabinet_id": cabinet_id(i),
                        "slot_no": n,
                        "door": "closed",
                        "charging": n <= PACKS,
                        "locked": False,
                        "battery_serial": serial(i, n) if n <= PACKS else None,
                    }
                    for i in chunk
                    for n in range(1, SLOTS + 1)
                ],
            )
    if engine.dialect.name == "postgresql":
        # Planner statistics for the freshly loaded tables, as autovacuum would gather them in production
        # (it is off on some servers, this machine's among them).
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()


# ------------------------------------------------------------------------------------------- processes


def run_adapter(settings_json: str, no_gc_tuning: bool) -> None:
    """The adapter process (spawned): the real DeviceAdapter. Temporal is not needed (no swap reserves
    a slot here), so its client connects lazily and is never used."""
    import uvloop
    from temporalio.client import Client

    from swapflow.device_adapter.adapter import DeviceAdapter, tune_gc_for_ingestion

    settings = Settings.model_validate_json(settings_json)
    if not no_gc_tuning:
        tune_gc_for_ingestion()

    async def main() -> None:
        db = Database(settings.effective_database_url, pre_ping=False)  # as `run_adapter` makes it
        temporal = await Client.connect("127.0.0.1:1", lazy=True)
        await DeviceAdapter(settings, db, temporal, telemetry_flush_s=0.5, stats_interval_s=3600).run()

    uvloop.run(main())


def run_broker(port: int) -> None:
    """An embedded amqtt broker process, when no --mqtt-url is given."""
    from swapflow.stack.broker import embedded_broker

    async def main() -> None:
        broker = embedded_broker("127.0.0.1", port)
        await broker.start()
        await asyncio.Event().wait()

    asyncio.run(main())


def run_fleet(
    settings_json: str, cabinets: int, interval_s: float, connections: int, sent: Any, late: Any, stop: Any
) -> None:
    """The fleet process (spawned): publishes until `stop` is set; counts into shared values."""
    import uvloop

    settings = Settings.model_validate_json(settings_json)
    fleet = Fleet(settings, cabinets, interval_s, connections)

    async def main() -> None:
        stopped = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                sent.value, late.value = fleet.sent, fleet.late_ticks
                await asyncio.sleep(0.5)
            stopped.set()

        watcher = asyncio.create_task(watch())
        await fleet.run(stopped)
        await watcher

    uvloop.run(main())


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(command: str) -> dict[int, float]:
    """CPU seconds of every process of this machine named `command` (the broker, PostgreSQL's server
    processes), by pid: they share the two cores with the adapter, so they are part of the figure."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == command:
                found[int(proc.name)] = cpu_seconds(int(proc.name))
        except OSError:  # exited meanwhile
            continue
    return found


def cpu_shares(
    before: dict[str, float | dict[int, float]], after: dict[str, float | dict[int, float]], elapsed: float
) -> dict[str, float]:
    """Percent of one core per process (or group: the processes alive at both ends) between two readings."""
    shares = {}
    for name, start in before.items():
        end = after[name]
        if isinstance(start, dict) and isinstance(end, dict):
            if not start:
                continue  # not on this machine (or an embedded broker, which is not counted)
            spent = sum(end[pid] - start[pid] for pid in start.keys() & end.keys())
        else:
            assert isinstance(start, float) and isinstance(end, float)
            spent = end - start
        shares[name] = 100 * spent / elapsed
    return shares


# ------------------------------------------------------------------------------------------- cabinets


class Fleet:
    """Many cabinets' telemetry over a few connections. Payloads are built by string templates: the
    benchmark measures the platform, not the simulator."""

    def __init__(self, settings: Settings, cabinets: int, interval_s: float, connections: int) -> None:
        self.settings = settings
        self.cabinets = cabinets
        self.interval_s = interval_s
        self.connections = connections
        self.sent = 0
        self.late_ticks = 0
        prefix = settings.mqtt.topic_prefix
        self._topics = [cabinet_topic(prefix, cabinet_id(i), Channel.TELEMETRY) for i in range(cabinets)]
        # Per cabinet, the payload with three holes: ts, seq, and the slots' varying part.
        self._heads = [f'{{"v":1,"cabinet_id":"{cabinet_id(i)}","ts":"' for i in range(cabinets)]
        self._slot_heads = [
            [
                f'{{"slot_no":{n},"door":"closed","charging":true,"battery":{{"serial":"{serial(i, n)}",'
                for n in range(1, PACKS + 1)
            ]
            for i in range(cabinets)
        ]
        self._empty = ",".join(
            f'{{"slot_no":{n},"door":"closed","charging":false}}' for n in range(PACKS + 1, SLOTS + 1)
        )

    def payload(self, i: int, seq: int) -> bytes:
        now = datetime.now(UTC).isoformat()
        soc = 40.0 + (seq % 600) / 10
        slots = ",".join(
            f'{head}"soc":{soc:.1f},"soh":95.0,"voltage_v":{55 + soc / 20:.2f},"current_a":16.0,'
            f'"temperature_c":{29 + n % 3}.5,"cycle_count":100}}}}'
            for n, head in enumerate(self._slot_heads[i])
        )
        return (
            f'{self._heads[i]}{now}","seq":{seq},"cabinet_temperature_c":30.5,"slots":[{slots},{self._empty}]}}'
        ).encode()

    async def run(self, stop: asyncio.Event) -> None:
        endpoint = self.settings.mqtt_endpoint
        clients = [
            aiomqtt.Client(endpoint.host, endpoint.port, identifier=f"bench-fleet-{k}-{uuid.uuid4().hex[:6]}")
            for k in range(self.connections)
        ]
        for client in clients:
            await client.__aenter__()
        try:
            tick_s = 0.05
            ticks = max(1, round(self.interval_s / tick_s))
            # Cabinet i reports at tick i mod ticks: an even spread, as real cabinets' clocks give.
            per_tick = [list(range(t, self.cabinets, ticks)) for t in range(ticks)]
            loop = asyncio.get_running_loop()
            start = loop.time()
            n = 0
            seq0 = int(time.time() * 1000)
            while not stop.is_set():
                due = start + n * tick_s
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -tick_s:
                    self.late_ticks += 1
                seq = seq0 + n
                for i in per_tick[n % ticks]:
                    await clients[i % self.connections].publish(self._topics[i], self.payload(i, seq), qos=0)
                    self.sent += 1
                n += 1
        finally:
            for client in clients:
                await client.__aexit__(None, None, None)


async def answer_commands(settings: Settings, responders: int, stop: asyncio.Event) -> None:
    """The first `responders` cabinets' firmware as far as commands go: every command acked at once."""
    endpoint = settings.mqtt_endpoint
    prefix = settings.mqtt.topic_prefix
    async with aiomqtt.Client(endpoint.host, endpoint.port, identifier=f"bench-doors-{uuid.uuid4().hex[:6]}") as client:
        await client.subscribe([(cabinet_topic(prefix, cabinet_id(i), Channel.COMMANDS), 1) for i in range(responders)])
        async for message in client.messages:
            command = json.loads(bytes(message.payload))  # type: ignore[arg-type]
            ack = {
                "v": 1,
                "command_id": command["command_id"],
                "cabinet_id": command["cabinet_id"],
                "ok": True,
                "ts": datetime.now(UTC).isoformat(),
            }
            await client.publish(cabinet_topic(prefix, command["cabinet_id"], Channel.ACKS), json.dumps(ack), qos=1)
            if stop.is_set():
                return


async def send_command(db: Database, queue: CommandQueue, cab: str) -> None:
    """One door command as the worker's activity sends it: recorded, then queued and published. No
    workflow waits for it, so the adapter records its ack and signals nobody."""
    now = datetime.now(UTC)
    command = Command(
        command_id=f"bench-{uuid.uuid4().hex[:12]}",
        cabinet_id=cab,
        action=CommandAction.OPEN_DOOR,
        slot_no=random.randint(PACKS + 1, SLOTS),
        issued_at=now,
        deadline=now + timedelta(seconds=10),
    )
    async with db.transaction() as session:
        session.add(
            DeviceCommand(
                id=command.command_id,
                cabinet_id=cab,
                slot_no=command.slot_no,
                action=command.action.value,
                workflow_id=None,
                sent_at=now,
                deadline_at=command.deadline,
            )
        )
    await queue.send(command)


async def send_commands(db: Database, queue: CommandQueue, responders: int, rate: float, stop: asyncio.Event) -> None:
    """Door commands at `rate` per second (Poisson arrivals) to the answering cabinets."""
    pending: set[asyncio.Task[None]] = set()
    while not stop.is_set():
        await asyncio.sleep(random.expovariate(rate))
        task = asyncio.create_task(send_command(db, queue, cabinet_id(random.randrange(responders))))
        pending.add(task)
        task.add_done_callback(pending.discard)


# ------------------------------------------------------------------------------------------- metrics


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for got, v in samples.get(name, []) if all(got.get(k) == want for k, want in labels.items()))


def window_quantile(before: dict, after: dict, name: str, q: float) -> float | None:
    """The q-quantile of what a histogram observed between two scrapes."""

    def buckets(s: dict) -> dict[float, float]:
        return {float(labels["le"]): v for labels, v in s.get(f"{name}_bucket", [])}

    b0, b1 = buckets(before), buckets(after)
    return bucket_quantile([(le, b1[le] - b0.get(le, 0.0)) for le in b1], q)


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1000:.0f} ms"


def top_frames(raw: Path, limit: int = 15) -> list[tuple[str, float]]:
    """The frames where the profiled process spent its samples (self time), from py-spy's raw output."""
    own: Counter[str] = Counter()
    total_samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total_samples += samples
        own[stack.split(";")[-1]] += samples
    return [(frame, n / total_samples) for frame, n in own.most_common(limit)]


def print_profile(raw: Path) -> None:
    if raw.exists():
        print(f"\nadapter profile (py-spy, self time, {raw}):")
        for frame, share in top_frames(raw):
            print(f"  {share * 100:5.1f}%  {frame}")


# ------------------------------------------------------------------------------------------- main


def cpu_readings(
    adapter: multiprocessing.process.BaseProcess, fleet: multiprocessing.process.BaseProcess
) -> dict[str, float | dict[int, float]]:
    """CPU seconds so far of each process the load runs through (servers only when local)."""
    return {
        "adapter": cpu_seconds(adapter.pid or 0),
        "fleet publisher": cpu_seconds(fleet.pid or 0),
        "bench (door commands)": cpu_seconds(os.getpid()),
        "broker (mosquitto)": server_cpu("mosquitto"),
        "PostgreSQL (all processes)": server_cpu("postgres"),
    }


async def bench(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="swapflow-telemetry-bench-"))
    url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
    processes: list[multiprocessing.Process] = []
    spawn = multiprocessing.get_context("spawn")
    mqtt_url = args.mqtt_url
    if not mqtt_url:
        port = free_port()
        broker = spawn.Process(target=run_broker, args=(port,), daemon=True)
        broker.start()
        processes.append(broker)
        mqtt_url = f"mqtt://127.0.0.1:{port}"
        await asyncio.sleep(2.0)
    started = time.monotonic()
    print(
        f"seeding {args.cabinets:,} cabinets ({args.cabinets * SLOTS:,} slots) into {url.split('://')[0]} …", flush=True
    )
    await asyncio.to_thread(seed, url, args.cabinets)
    print(f"  seeded in {time.monotonic() - started:.0f}s", flush=True)

    metrics_port = free_port()
    run = uuid.uuid4().hex[:8]
    settings = Settings().updated(
        data_dir=workdir,
        database_url=url,
        mqtt={"url": mqtt_url, "topic_prefix": f"swapflow-bench-{run}/v1"},
        adapter={
            "client_id": f"bench-adapter-{run}",
            "metrics_port": metrics_port,
            "telemetry_connections": args.adapter_connections,
        },
        devices={"heartbeat_interval_s": args.interval},
    )
    adapter = spawn.Process(target=run_adapter, args=(settings.model_dump_json(), args.no_gc_tuning), daemon=True)
    adapter.start()
    processes.append(adapter)
    db = Database(url)
    queue = CommandQueue(settings, name="bench-commands")
    stop = asyncio.Event()
    sent_value, late_value, fleet_stop = spawn.Value("q", 0), spawn.Value("q", 0), spawn.Event()
    fleet = spawn.Process(
        target=run_fleet,
        daemon=True,
        args=(
            settings.model_dump_json(),
            args.cabinets,
            args.interval,
            args.connections,
            sent_value,
            late_value,
            fleet_stop,
        ),
    )
    profiler = None
    try:
        for _ in range(100):
            try:
                scrape(metrics_port)
                break
            except OSError:
                await asyncio.sleep(0.2)
        tasks = [
            asyncio.create_task(queue.run()),
            asyncio.create_task(answer_commands(settings, args.responders, stop)),
        ]
        await asyncio.wait_for(queue.publisher.connected.wait(), 10)
        await asyncio.sleep(1.0)  # the responders' subscription
        load_before = os.getloadavg()
        fleet.start()
        processes.append(fleet)
        tasks.append(asyncio.create_task(send_commands(db, queue, args.responders, args.commands_per_s, stop)))
        print(
            f"running {args.duration:.0f}s: {args.cabinets:,} cabinets every {args.interval:g}s "
            f"(≈{args.cabinets / args.interval:,.0f} msg/s, {args.cabinets * PACKS / args.interval:,.0f} "
            f"readings/s) over {args.connections} connections, {args.commands_per_s:g} door commands/s; "
            f"warm-up {args.warmup:.0f}s",
            flush=True,
        )
        await asyncio.sleep(args.warmup)
        before, t0 = scrape(metrics_port), time.monotonic()
        cpu0 = cpu_readings(adapter, fleet)
        sent0 = sent_value.value
        queue_rtt_before = [
            (float(s.labels["le"]), s.value)
            for m in queue.metrics.round_trip.collect()
            for s in m.samples
            if s.name.endswith("_bucket")
        ]
        if args.profile:
            py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            profiler = await asyncio.create_subprocess_exec(
                py_spy,
                "record",
                "--pid",
                str(adapter.pid),
                "--duration",
                str(int(args.duration - args.warmup)),
                "--rate",
                "50",
                "--format",
                "raw",
                "--output",
                args.profile,
                "--nonblocking",
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        remaining = args.duration - args.warmup
        while remaining > 0:
            step = min(10.0, remaining)
            await asyncio.sleep(step)
            remaining -= step
            now = scrape(metrics_port)
            elapsed = time.monotonic() - t0
            print(
                f"  {elapsed:5.0f}s  telemetry in {total(now, 'swapflow_adapter_messages_total', kind='telemetry') - total(before, 'swapflow_adapter_messages_total', kind='telemetry'):>9,.0f}"  # noqa: E501
                f"  lag p99 {ms(window_quantile(before, now, 'swapflow_adapter_ingest_lag_seconds', 0.99))}"
                f"  history backlog {total(now, 'swapflow_adapter_history_backlog_rows'):,.0f}"
                f"  shed {total(now, 'swapflow_adapter_history_rows_shed_total'):,.0f}",
                flush=True,
            )
        after, elapsed = scrape(metrics_port), time.monotonic() - t0
        cpu1 = cpu_readings(adapter, fleet)
        sent = sent_value.value - sent0
        stop.set()
        load_after = os.getloadavg()
    finally:
        stop.set()
        fleet_stop.set()
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()
        if profiler is not None:
            await asyncio.wait_for(profiler.wait(), 60)
        for process in processes:
            process.terminate()
            process.join(10)
        await db.dispose()

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    telemetry = delta("swapflow_adapter_messages_total", kind="telemetry")
    stale = delta("swapflow_adapter_telemetry_stale_total")
    queue_rtt_after = [
        (float(s.labels["le"]), s.value)
        for m in queue.metrics.round_trip.collect()
        for s in m.samples
        if s.name.endswith("_bucket")
    ]
    queue_rtt = bucket_quantile([(le, v - dict(queue_rtt_before).get(le, 0.0)) for le, v in queue_rtt_after], 0.99)
    print()
    print(
        f"cabinets {args.cabinets:,} × {SLOTS} slots, interval {args.interval:g}s, {elapsed:.0f}s measured after "
        f"{args.warmup:.0f}s warm-up; broker {mqtt_url}; database {url.split(':')[0]}; "
        f"{args.adapter_connections} adapter telemetry connections"
    )
    print(f"  telemetry published          {sent / elapsed:10,.0f} msg/s   (late publisher ticks: {late_value.value})")
    print(f"  telemetry received           {telemetry / elapsed:10,.0f} msg/s")
    print(f"  battery readings ingested    {(telemetry - stale) * PACKS / elapsed:10,.0f} /s   (latest state)")
    print(
        f"  history rows written         {delta('swapflow_adapter_history_rows_total') / elapsed:10,.0f} /s   "
        f"shed {delta('swapflow_adapter_history_rows_shed_total'):,.0f}, backlog at end "
        f"{total(after, 'swapflow_adapter_history_backlog_rows'):,.0f}"
    )
    print(
        f"  ingest lag p50 / p99         {ms(window_quantile(before, after, 'swapflow_adapter_ingest_lag_seconds', 0.5))}"  # noqa: E501
        f" / {ms(window_quantile(before, after, 'swapflow_adapter_ingest_lag_seconds', 0.99))}"
    )
    print(
        f"  door commands acked          {delta('swapflow_adapter_command_round_trip_seconds_count'):,.0f}  "
        f"(expired unacked: {queue.metrics.expired._value.get():.0f})"
    )
    print(
        f"  door round trip p99          {ms(queue_rtt)} publish → ack at the sender;  "
        f"{ms(window_quantile(before, after, 'swapflow_adapter_command_round_trip_seconds', 0.99))} "
        f"send → ack committed by the adapter"
    )
    print(f"  dead letters                 {delta('swapflow_adapter_dead_letters_total'):,.0f}")
    for name, share in cpu_shares(cpu0, cpu1, elapsed).items():
        print(f"  CPU {name:<25} {share:6.0f} %")
    print(
        f"  load average (1 min)         {load_before[0]:.2f} before, {load_after[0]:.2f} after "
        f"({os.cpu_count()} cores)"
    )
    if args.profile:
        print_profile(Path(args.profile))
    shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cabinets", type=int, default=80_000)
    parser.add_argument("--interval", type=float, default=30.0, help="heartbeat (telemetry) interval, seconds")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load, warm-up included")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--connections", type=int, default=4, help="MQTT connections carrying the fleet")
    parser.add_argument(
        "--adapter-connections",
        type=int,
        default=4,
        help="telemetry connections of the adapter (a shared subscription when more than 1)",
    )
    parser.add_argument("--responders", type=int, default=50, help="cabinets that answer door commands")
    parser.add_argument("--commands-per-s", type=float, default=20.0)
    parser.add_argument("--mqtt-url", default=os.environ.get("SWAPFLOW_MQTT_URL"))
    parser.add_argument("--database-url", default=os.environ.get("SWAPFLOW_DATABASE_URL"))
    parser.add_argument(
        "--no-gc-tuning", action="store_true", help="run the adapter with Python's default garbage collector thresholds"
    )
    parser.add_argument("--profile", metavar="PATH", help="record the adapter with py-spy (raw) into PATH")
    args = parser.parse_args()
    if args.warmup >= args.duration:
        parser.error("--warmup must be shorter than --duration")
    try:
        import uvloop

        uvloop.run(bench(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
