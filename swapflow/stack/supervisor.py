"""`swapflow up`: brings the whole stack up on the embedded defaults (or on the configured back ends),
prints where everything is and a live one-line summary, and stops it all cleanly on Ctrl-C."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass

import httpx

from swapflow.db.engine import create_sync_engine
from swapflow.db.migrate import upgrade
from swapflow.demo.accounts import seed_demo_accounts
from swapflow.demo.network import seed_demo_network
from swapflow.identity.credentials import (
    authenticates,
    provision_embedded_stack,
    provision_simulated_tower_cabinets,
)
from swapflow.settings import Settings
from swapflow.stack.processes import ManagedProcess, find_binary, port_is_free, swapflow_command, wait_for_port


@dataclass(frozen=True)
class UpOptions:
    simulate: bool = False
    riders: int = 20
    faults: str = ""
    seed: bool = True


class Stack:
    """The processes of one running stack, started in dependency order and stopped in reverse."""

    def __init__(self, settings: Settings, options: UpOptions) -> None:
        self.settings = settings
        self.options = options
        self.logs = settings.data_dir / "logs"
        self.processes: list[ManagedProcess] = []

    def _process(self, name: str, argv: list[str]) -> ManagedProcess:
        process = ManagedProcess(name, argv, self.logs / f"{name}.log", env=self.settings.as_env())
        self.processes.append(process)
        return process

    def _check_ports(self) -> None:
        s = self.settings
        wanted = [("API", s.api.host, s.api.port), ("tower gateway", s.gateway.host, s.gateway.port)]
        if s.temporal.address is None:
            wanted += [("Temporal", "127.0.0.1", s.temporal.dev_port), ("Temporal UI", "127.0.0.1", s.temporal.ui_port)]
        if s.mqtt.url is None:
            wanted.append(("MQTT broker", "127.0.0.1", s.embedded_broker.port))
        taken = [f"{what} port {port}" for what, host, port in wanted if not port_is_free(host, port)]
        if taken:
            raise SystemExit(
                f"swapflow up: already in use: {', '.join(taken)}. Is another stack running? "
                "Set SWAPFLOW_API_PORT / SWAPFLOW_TEMPORAL_DEV_PORT / SWAPFLOW_TEMPORAL_UI_PORT / "
                "SWAPFLOW_EMBEDDED_BROKER_PORT / SWAPFLOW_GATEWAY_PORT to other ports."
            )

    async def start(self) -> None:
        """Start every part, waiting for each dependency to listen before starting what needs it."""
        s = self.settings
        self._check_ports()
        s.data_dir.mkdir(parents=True, exist_ok=True)
        temporal = broker = None
        if s.temporal.address is None:
            temporal = self._process(
                "temporal",
                [
                    find_binary("temporal"),
                    "server",
                    "start-dev",
                    "--ip",
                    "127.0.0.1",
                    "--port",
                    str(s.temporal.dev_port),
                    "--ui-port",
                    str(s.temporal.ui_port),
                    "--db-filename",
                    str((s.data_dir / "temporal.db").resolve()),
                    "--log-level",
                    "warn",
                    "--ui-disable-news-fetch",
                    # WAL with NORMAL sync survives a crash of any process and writes half as often: the
                    # dev server's throughput on its SQLite file goes from ~40 to ~60 empty workflows/s here.
                    "--sqlite-pragma",
                    "journal_mode=wal",
                    "--sqlite-pragma",
                    "synchronous=normal",
                ],
            )
            await temporal.start()
        if s.mqtt.url is None:
            broker = self._process("broker", swapflow_command("broker"))
            await broker.start()
        # Migrations and the demo network while the servers boot.
        await asyncio.to_thread(self._prepare_database)
        if temporal is not None:
            await wait_for_port("127.0.0.1", s.temporal.dev_port, timeout_s=60, process=temporal)
        if broker is not None:
            await wait_for_port("127.0.0.1", s.embedded_broker.port, timeout_s=30, process=broker)
        workers = [f"worker-{n}" if n > 1 else "worker" for n in range(1, s.worker_processes + 1)]
        for name in (*workers, "adapter", "gateway", "api"):
            await self._process(name, swapflow_command(name.split("-")[0])).start()
        api = self.processes[-1]
        await wait_for_port(s.api.host, s.api.port, timeout_s=60, process=api)
        if self.options.simulate:
            await self._process(
                "simulator",
                swapflow_command("simulate", "--riders", str(self.options.riders), "--faults", self.options.faults),
            ).start()

    def _prepare_database(self) -> None:
        url = self.settings.effective_database_url
        upgrade(url)
        engine = create_sync_engine(url)
        try:
            if self.options.seed:
                seed_demo_network(engine, tower_share=self.settings.devices.tower_share)
                seed_demo_accounts(engine, self.settings.data_dir)
            if authenticates(self.settings):
                # The service account and the simulated cabinets' credentials (derived from the stack secret).
                provision_embedded_stack(engine, self.settings)
            # The gateway asks tower cabinets for their secrets whatever the broker does.
            provision_simulated_tower_cabinets(engine, self.settings)
        finally:
            engine.dispose()

    async def stop(self) -> None:
        """Stop the processes in reverse order of starting."""
        for process in reversed(self.processes):
            await process.stop()

    def exited(self) -> list[ManagedProcess]:
        return [p for p in self.processes if p.exited]


def banner(settings: Settings) -> str:
    """Where everything is."""
    api = settings.api.effective_url
    lines = [
        "swapflow is up",
        f"  API            {api}",
        f"  API docs       {api}/docs",
        f"  console        {api}/console  (sign in with a token of {(settings.data_dir / 'tokens.json').resolve()})",
        f"  rider's phone  {api}/app  (sign in with a rider's token of the same file)",
        f"  Temporal       {settings.temporal.effective_address}"
        + ("  (dev server)" if settings.temporal.address is None else ""),
    ]
    if settings.temporal.address is None:
        lines.append(f"  Temporal UI    http://127.0.0.1:{settings.temporal.ui_port}")
    lines += [
        f"  MQTT broker    {settings.effective_mqtt_url}" + ("  (embedded)" if settings.mqtt.url is None else ""),
        f"  tower gateway  tcp://{settings.gateway.host}:{settings.gateway.port}",
        f"  database       {settings.effective_database_url}",
        f"  logs           {(settings.data_dir / 'logs').resolve()}",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


async def summary_line(http: httpx.AsyncClient) -> str:
    """swaps done / failed / in flight, cabinets online."""
    try:
        stats = (await http.get("/v1/stats")).json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"(API not answering: {type(exc).__name__})"
    return (
        f"swaps done {stats['swaps_completed']} | failed {stats['swaps_failed']} | "
        f"in flight {stats['swaps_in_flight']} | cabinets online {stats['cabinets_online']}/"
        f"{stats['cabinets_total']} | dead letters {stats['dead_letters']}"
    )


async def run_up(settings: Settings, options: UpOptions) -> int:
    """Run the stack until cancelled (Ctrl-C) or until a part dies; returns the exit status."""
    stack = Stack(settings, options)
    status = 0
    interactive = sys.stdout.isatty()
    try:
        await stack.start()
        print(banner(settings), flush=True)
        async with httpx.AsyncClient(base_url=settings.api.effective_url, timeout=5.0) as http:
            tick = 0
            while not stack.exited():
                line = await summary_line(http)
                if interactive:
                    print(f"\r\033[K{line}", end="", flush=True)
                elif tick % 5 == 0:
                    print(line, flush=True)
                tick += 1
                await asyncio.sleep(2.0)
            for process in stack.exited():
                print(f"\n{process.name} exited with {process.returncode}; see {process.log_path}", flush=True)
            status = 1
    except asyncio.CancelledError:
        pass
    finally:
        print("\nstopping…", flush=True)
        await asyncio.shield(stack.stop())
        print("stopped.", flush=True)
    return status
