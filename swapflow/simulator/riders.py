"""Simulated riders: ride, find a cabinet through the rider API, swap, repeat. They act on simulated
cabinets physically (put the flat pack in, take the charged one out) exactly when the API tells a real
rider to, unless a rider fault of the `FaultPlan` makes them do otherwise."""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from swapflow.simulator.battery import DEFAULT_SPEEDUP, SimBattery
from swapflow.simulator.cabinet import PhysicalActionError, SimulatedCabinet
from swapflow.simulator.faults import RIDER_FAULTS, FaultPlan, FaultStats

log = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "failed"})
HOT_PACK_C = 70.0
"""What a pack reads under the `hot_pack` fault: well past any safety limit."""
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class HttpFailure(Exception):
    """The API could not be reached or answered with an error; `retryable` if trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass
class RiderStats:
    """Counters shared by a group of riders."""

    done: int = 0
    failed: int = 0
    in_flight: int = 0
    no_cabinet: int = 0
    http_errors: int = 0
    stranded: int = 0
    durations_s: deque[float] = field(default_factory=lambda: deque(maxlen=1_000))

    def percentile(self, fraction: float) -> float | None:
        """A percentile of recent successful swap durations (request to completed), in seconds."""
        if not self.durations_s:
            return None
        ordered = sorted(self.durations_s)
        return ordered[min(int(fraction * len(ordered)), len(ordered) - 1)]


class SimulatedRider:
    """A rider with a pack, near a location, who swaps at the simulated cabinets they can see."""

    def __init__(
        self,
        api_url: str,
        rider_id: str,
        battery: SimBattery | None,
        lat: float,
        lon: float,
        cabinets: dict[str, SimulatedCabinet],
        http: httpx.AsyncClient,
        *,
        think_time_s: tuple[float, float] = (5.0, 20.0),
        ride_speedup: float = DEFAULT_SPEEDUP,
        stats: RiderStats | None = None,
        on_result: Callable[[dict[str, Any]], None] | None = None,
        poll_interval_s: float = 0.2,
        swap_timeout_s: float = 600.0,
        rng: random.Random | None = None,
        faults: FaultPlan | None = None,
        fault_stats: FaultStats | None = None,
        slow_insert_s: tuple[float, float] = (5.0, 15.0),
        door_wait_s: float = 5.0,
        token: str | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.rider_id = rider_id
        self.battery = battery
        self.home = (lat, lon)
        self.lat, self.lon = lat, lon
        self.cabinets = cabinets
        self.http = http
        self.think_time_s = think_time_s
        self.ride_speedup = ride_speedup
        self.stats = stats or RiderStats()
        self.on_result = on_result
        self.poll_interval_s = poll_interval_s
        self.swap_timeout_s = swap_timeout_s
        self.rng = rng or random.Random()
        self.faults = faults
        """Rider faults, rolled once per swap (see `swapflow.simulator.faults`)."""
        self.fault_stats = fault_stats or FaultStats()
        self.slow_insert_s = slow_insert_s
        """How long a `slow_insert` rider dawdles before putting the pack in: a range, drawn from."""
        self.door_wait_s = door_wait_s
        """How long a rider told to use a door waits for it to open before giving up on it."""
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        """The rider's bearer token, sent with every request."""

    async def run(self) -> None:
        """Ride and swap until cancelled, or until left without a pack. Never raises otherwise."""
        # Riders started together spread out before their first swap.
        await asyncio.sleep(self.rng.uniform(0, self.think_time_s[1]))
        while self.battery is not None:
            try:
                await self.swap_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rider %s: swap attempt crashed", self.rider_id)
            if self.battery is not None:
                await self._ride(self.rng.uniform(*self.think_time_s))
        log.warning("rider %s has no pack left and stops riding", self.rider_id)

    async def swap_once(self) -> dict[str, Any] | None:
        """One swap: pick a cabinet, start the swap, follow it, act at the doors. Returns the final swap
        as the API shows it, or None when no swap was started (no cabinet, API unreachable, refused)."""
        if self.battery is None:
            log.warning("rider %s has no pack to swap", self.rider_id)
            return None
        try:
            cabinet_id = await self._pick_cabinet()
        except HttpFailure as exc:
            log.warning("rider %s: cabinet search failed: %s", self.rider_id, exc)
            return None
        if cabinet_id is None:
            self.stats.no_cabinet += 1
            return None
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.stats.in_flight += 1
        try:
            swap = await self._start_swap(cabinet_id)
            if swap is not None:
                cabinet = self.cabinets[cabinet_id]
                if swap.get("status") not in TERMINAL:
                    cabinet.swap_started()
                swap = await self._follow(swap, cabinet)
        finally:
            self.stats.in_flight -= 1
        if swap is None:
            self.stats.failed += 1
            return None
        if swap.get("status") == "completed":
            self.stats.done += 1
            self.stats.durations_s.append(loop.time() - started)
        else:
            self.stats.failed += 1
            log.info(
                "rider %s: swap %s at %s ended %s (%s)",
                self.rider_id,
                swap.get("id"),
                cabinet_id,
                swap.get("status"),
                swap.get("failure_reason"),
            )
        if self.on_result is not None:
            self.on_result(swap)
        return swap

    async def _ride(self, real_seconds: float) -> None:
        await asyncio.sleep(real_seconds)
        if self.battery is not None:
            self.battery.discharge(real_seconds * self.ride_speedup)
        # Wander around home, so riders meet different cabinets.
        self.lat = self.home[0] + self.rng.uniform(-0.02, 0.02)
        self.lon = self.home[1] + self.rng.uniform(-0.02, 0.02)

    async def _pick_cabinet(self) -> str | None:
        found = await self._request("GET", "/v1/cabinets", params={"near": f"{self.lat},{self.lon}", "limit": 10})
        # A command-only cabinet never reports itself online: its doors are trusted to the commands.
        usable = [
            c["id"]
            for c in found
            if c.get("id") in self.cabinets
            and (c.get("online") or c.get("capability") == "command_only")
            and c.get("ready_batteries", 0) > 0
            and c.get("free_slots", 0) > 0
        ]
        # Usually the nearest, sometimes the next: real riders do not all queue at one cabinet.
        return self.rng.choice(usable[:2]) if usable else None

    async def _start_swap(self, cabinet_id: str) -> dict[str, Any] | None:
        # One key for every attempt: a retried POST must not start a second swap.
        headers = {"Idempotency-Key": uuid.uuid4().hex}
        body = {"rider_id": self.rider_id, "cabinet_id": cabinet_id}
        delay = 0.5
        for attempt in range(5):
            try:
                return await self._request("POST", "/v1/swaps", json=body, headers=headers)
            except HttpFailure as exc:
                log.warning(
                    "rider %s: starting a swap at %s failed (attempt %d): %s",
                    self.rider_id,
                    cabinet_id,
                    attempt + 1,
                    exc,
                )
                if not exc.retryable:
                    return None
            await asyncio.sleep(delay)
            delay *= 2
        return None

    async def _follow(self, swap: dict[str, Any], cabinet: SimulatedCabinet) -> dict[str, Any]:
        """Poll the swap and act at the doors until it ends (or the rider gives up waiting)."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.swap_timeout_s
        faults = self._roll_faults()
        returned: SimBattery | None = None
        tried_return = took_charged = False
        while True:
            stage, status = swap.get("stage"), swap.get("status")
            # Each door is tried once. A refused physical action is logged and left to the swap's timeout
            # and rollback, which is what a real rider would see.
            if stage == "return_door_open" and not tried_return and self.battery is not None:
                tried_return = True
                returned = await self._return_pack(cabinet, swap.get("return_slot_no"), faults)
            elif stage == "charged_door_open" and not took_charged:
                took_charged = True
                if self._inject("walk_away", faults):
                    log.info("rider %s: walks away without the charged pack (injected fault)", self.rider_id)
                else:
                    try:
                        slot_no = int(swap["charged_slot_no"])  # the stage names the charged slot
                        await self._door_opens(cabinet, slot_no)
                        self.battery = await cabinet.take_battery(slot_no, door_close_delay_s=self._hand_time())
                    except PhysicalActionError as exc:
                        log.warning("rider %s: %s", self.rider_id, exc)
            if returned is not None and self.battery is None and stage in ("compensating", "failed"):
                await self._take_back(cabinet, swap.get("return_slot_no"), returned)
            if status in TERMINAL:
                if self.battery is None:
                    self.stats.stranded += 1
                    log.warning(
                        "rider %s: swap %s ended %s and left the rider without a pack",
                        self.rider_id,
                        swap.get("id"),
                        status,
                    )
                return swap
            if loop.time() > give_up_at:
                log.warning("rider %s: gave up waiting for swap %s at stage %s", self.rider_id, swap.get("id"), stage)
                return swap
            await asyncio.sleep(self.poll_interval_s)
            try:
                swap = await self._request("GET", f"/v1/swaps/{swap['id']}")
            except HttpFailure as exc:
                log.warning("rider %s: polling swap %s failed: %s", self.rider_id, swap.get("id"), exc)

    def _roll_faults(self) -> frozenset[str]:
        """The rider faults that will strike this swap (each is counted once it takes effect)."""
        if self.faults is None:
            return frozenset()
        return frozenset(name for name in RIDER_FAULTS if self.faults.roll(name, self.rng))

    def _inject(self, name: str, faults: frozenset[str]) -> bool:
        """Whether fault `name` strikes now; counted when it does."""
        if name not in faults:
            return False
        self.fault_stats.count(name)
        return True

    async def _return_pack(self, cabinet: SimulatedCabinet, slot_no: Any, faults: frozenset[str]) -> SimBattery | None:
        """Put the flat pack into the return slot, or not, as this swap's faults say. Returns the rider's
        own pack when it went into the cabinet, None when the rider still holds it."""
        if self._inject("no_insert", faults):
            log.info("rider %s: walks away without returning the pack (injected fault)", self.rider_id)
            return None
        if self.battery is None:
            raise RuntimeError(f"rider {self.rider_id} returns a pack without holding one")
        if self._inject("slow_insert", faults):
            await asyncio.sleep(self.rng.uniform(*self.slow_insert_s))
        pack = self.battery
        if self._inject("wrong_pack", faults):
            # A pack that is not ours; the rider keeps theirs in the bag.
            pack = SimBattery(f"FAKE-{self.rng.getrandbits(32):08x}", soc=round(self.rng.uniform(5, 30), 1))
        elif self._inject("hot_pack", faults):
            pack.temperature_c = HOT_PACK_C
        try:
            await self._door_opens(cabinet, slot_no)
            await cabinet.insert_battery(slot_no, pack, door_close_delay_s=self._hand_time())
        except PhysicalActionError as exc:
            log.warning("rider %s: %s", self.rider_id, exc)
            return None
        if pack is not self.battery:
            return None
        self.battery = None
        return pack

    async def _door_opens(self, cabinet: SimulatedCabinet, slot_no: Any) -> None:
        """Give the door a moment to open. A command-only cabinet cannot confirm its door, so the API
        sends the rider to it as soon as the command is out; a real rider waits for the latch to pop."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.door_wait_s
        while not cabinet.door_open(slot_no) and loop.time() < deadline:
            await asyncio.sleep(0.05)

    def _hand_time(self) -> float:
        """How long a rider takes to shut the door after handling the pack."""
        return self.rng.uniform(0.1, 0.5)

    async def _take_back(self, cabinet: SimulatedCabinet, slot_no: Any, mine: SimBattery) -> None:
        """After a failed swap, take our own pack back if its door has been opened for us."""
        if isinstance(slot_no, int) and cabinet.door_open(slot_no) and cabinet.battery_in(slot_no) is mine:
            self.battery = await cabinet.take_battery(slot_no)

    async def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON from the API; HttpFailure on any failure."""
        try:
            headers = {**self.headers, **kwargs.pop("headers", {})}
            response = await self.http.request(method, f"{self.api_url}{path}", headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            self.stats.http_errors += 1
            raise HttpFailure(f"{method} {path}: {exc!r}", retryable=True) from exc
        if response.status_code >= 400:
            self.stats.http_errors += 1
            detail = response.text[:300]
            raise HttpFailure(
                f"{method} {path}: {response.status_code} {detail}", retryable=response.status_code in _RETRYABLE_STATUS
            )
        return response.json()
