"""Simulated technicians: each polls its assigned work orders through the ops API with its own token,
accepts them, travels and "repairs" the simulated cabinet (brings its link back, frees a jammed door,
clears a slot fault), then resolves. The work-order workflow verifies the repair against the live state;
a repair it rejects comes back as accepted, and the technician goes again."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import httpx
from sqlalchemy import select

from swapflow.db.engine import Database
from swapflow.db.identity import Operator
from swapflow.db.network import Cabinet, Station
from swapflow.db.ops import Technician
from swapflow.domain.ops import OperatorRole
from swapflow.settings import Settings
from swapflow.simulator.cabinet import PhysicalActionError, SimulatedCabinet

log = logging.getLogger(__name__)


class SimulatedTechnician:
    """One technician working through their work orders."""

    def __init__(
        self,
        api_url: str,
        technician_id: str,
        token: str,
        cabinets: dict[str, SimulatedCabinet],
        http: httpx.AsyncClient,
        *,
        poll_interval_s: float = 3.0,
        repair_time_s: tuple[float, float] = (3.0, 15.0),
        rng: random.Random | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.technician_id = technician_id
        self.cabinets = cabinets
        self.http = http
        self.headers = {"Authorization": f"Bearer {token}"}
        self.poll_interval_s = poll_interval_s
        self.repair_time_s = repair_time_s
        self.rng = rng or random.Random()
        self.working: set[str] = set()
        self.resolved = 0

    async def run(self) -> None:
        """Poll and work until cancelled. Never raises otherwise."""
        async with asyncio.TaskGroup() as jobs:
            while True:
                try:
                    orders = await self._call("GET", "/v1/ops/work-orders", params={"assigned": "me"})
                except (httpx.HTTPError, ValueError) as exc:
                    log.info("technician %s: cannot list work orders (%s)", self.technician_id, exc)
                    orders = []
                for order in orders:
                    if order["id"] in self.working:
                        continue
                    if order["status"] in ("dispatched", "accepted"):
                        self.working.add(order["id"])
                        jobs.create_task(self._work(order))
                await asyncio.sleep(self.poll_interval_s)

    async def _work(self, order: dict[str, Any]) -> None:
        try:
            if order["status"] == "dispatched":
                await self._call("POST", f"/v1/ops/work-orders/{order['id']}/accept")
            await asyncio.sleep(self.rng.uniform(*self.repair_time_s))
            await self.take_away_a_pack_that_is_not_ours(order["cabinet_id"], order["slot_no"])
            self.repair(order["cabinet_id"], order["slot_no"])
            await asyncio.sleep(1.0)  # the repaired cabinet reports itself before the verification looks
            await self._call(
                "POST", f"/v1/ops/work-orders/{order['id']}/resolve", json={"note": f"repaired by {self.technician_id}"}
            )
            self.resolved += 1
        except (httpx.HTTPError, ValueError) as exc:
            log.info("technician %s: work order %s: %s", self.technician_id, order["id"], exc)
        finally:
            self.working.discard(order["id"])

    async def take_away_a_pack_that_is_not_ours(self, cabinet_id: str, slot_no: int | None) -> None:
        """A pack in the slot that the platform does not know (its scan answers 404) leaves with the technician."""
        cabinet = self.cabinets.get(cabinet_id)
        pack = cabinet.battery_in(slot_no) if cabinet is not None and slot_no is not None else None
        if cabinet is None or slot_no is None or pack is None:
            return
        scan = await self.http.get(f"{self.api_url}/v1/batteries/{pack.serial}", headers=self.headers)
        if scan.status_code == 404:
            cabinet.open_with_service_key(slot_no)
            try:
                await cabinet.take_battery(slot_no)
            except PhysicalActionError as exc:  # taken meanwhile
                log.info("technician %s: %s", self.technician_id, exc)

    def repair(self, cabinet_id: str, slot_no: int | None) -> None:
        """What a technician does on site: restore the cabinet's link, free the door, clear the fault."""
        cabinet = self.cabinets.get(cabinet_id)
        if cabinet is None:
            return
        cabinet.restore_network()
        slots = [slot_no] if slot_no is not None else list(cabinet.slots)
        for number in slots:
            cabinet.jammed_slots.discard(number)
            if number in cabinet.slots:
                cabinet.slots[number].fault = None

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = await self.http.request(method, f"{self.api_url}{path}", headers=self.headers, **kwargs)
        if response.status_code >= 400:
            raise ValueError(f"{method} {path}: {response.status_code} {response.text[:200]}")
        return response.json()


async def build_technicians(
    settings: Settings,
    db: Database,
    cabinets: dict[str, SimulatedCabinet],
    http: httpx.AsyncClient,
    tokens: dict[str, str],
) -> list[SimulatedTechnician]:
    """A simulated technician for each technician account with a token, in the simulated cabinets' cities."""
    if not cabinets or not tokens:
        return []
    async with db.sessions() as session:
        cities = set(
            (
                await session.scalars(
                    select(Station.city_code)
                    .join(Cabinet, Cabinet.station_id == Station.id)
                    .where(Cabinet.id.in_(list(cabinets)))
                )
            ).all()
        )
        rows = (
            await session.scalars(
                select(Technician)
                .join(Operator, Operator.id == Technician.operator_id)
                .where(Operator.role == OperatorRole.TECHNICIAN, Operator.active.is_(True))
                .order_by(Technician.operator_id)
            )
        ).all()
    return [
        SimulatedTechnician(
            settings.api.effective_url,
            t.operator_id,
            tokens[t.operator_id],
            cabinets,
            http,
            rng=random.Random(t.operator_id),
        )
        for t in rows
        if t.operator_id in tokens and t.city_code in cities
    ]
