"""A simulated LFP swap pack (60 V, 32 Ah) with a BMS: state of charge, health, voltage, temperature
and cycle count that behave plausibly under charge, rest and load.

Every method takes *simulated* seconds; callers multiply real time by their speed-up factor, so a
demo shows a full charge in minutes.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime

from swapflow.protocol.v1 import BatteryReading, BatteryTelemetry

DEFAULT_SPEEDUP = 60.0
"""Simulated seconds per real second in demos: a 0→100 % charge (~2.8 h) takes ~3 minutes."""

CAPACITY_AH = 32.0
CC_CURRENT_A = 16.0  # 0.5 C: what a swap cabinet's charger delivers per slot
CV_KNEE_SOC = 80.0  # constant current up to here, then constant voltage with a tapering current
CV_CUTOFF_A = 0.8  # the charger terminates when the taper falls to this current (0.025 C)
RIDE_CURRENT_A = 16.0  # average draw of a delivery scooter: about two hours of riding per pack
INTERNAL_RESISTANCE_OHM = 0.06
AMBIENT_C = 25.0
HEAT_C_PER_A = 0.45  # steady-state rise above ambient per amp of current
THERMAL_TIME_CONSTANT_S = 900.0
SOH_LOSS_PER_CYCLE = 0.006  # LFP: ~3,000 full cycles to 80 % health
_MAX_STEP_S = 30.0  # integration step; keeps the CV taper smooth at any speed-up

# Open-circuit voltage of the 20-cell LFP pack by state of charge: steep at both ends, flat between.
_OCV_SOC = (0.0, 5.0, 10.0, 30.0, 70.0, 90.0, 100.0)
_OCV_V = (50.0, 53.0, 54.5, 56.5, 58.5, 61.0, 66.0)


def open_circuit_voltage(soc: float) -> float:
    """Pack voltage at rest for a state of charge (percent), interpolated from the LFP curve."""
    soc = min(max(soc, 0.0), 100.0)
    i = min(bisect_right(_OCV_SOC, soc), len(_OCV_SOC) - 1)
    lo_soc, hi_soc, lo_v, hi_v = _OCV_SOC[i - 1], _OCV_SOC[i], _OCV_V[i - 1], _OCV_V[i]
    return lo_v + (hi_v - lo_v) * (soc - lo_soc) / (hi_soc - lo_soc)


@dataclass
class SimBattery:
    """One pack and its BMS. `current_a` is positive while charging, negative under load."""

    serial: str
    soc: float = 50.0
    soh: float = 95.0
    temperature_c: float = AMBIENT_C
    cycle_count: int = 0
    fault_codes: list[str] = field(default_factory=list)
    current_a: float = 0.0
    _charged_pct: float = field(default=0.0, init=False, repr=False)  # charge put in since the last full cycle
    _report_seq: int = field(default=0, init=False, repr=False)

    @property
    def voltage_v(self) -> float:
        """Terminal voltage: the open-circuit voltage plus the drop across the internal resistance."""
        return open_circuit_voltage(self.soc) + self.current_a * INTERNAL_RESISTANCE_OHM

    @property
    def is_full(self) -> bool:
        """Whether the charger has terminated."""
        return self.soc >= 100.0

    @property
    def capacity_ah(self) -> float:
        """What the pack holds now: the rated capacity scaled by its health."""
        return CAPACITY_AH * self.soh / 100.0

    def charger_current(self) -> float:
        """What a charger drives into the pack now: none when full, constant current to the knee, then a
        current that falls roughly in proportion to the charge still missing."""
        if self.is_full:
            return 0.0
        if self.soc < CV_KNEE_SOC:
            return CC_CURRENT_A
        return max(CC_CURRENT_A * (100.0 - self.soc) / (100.0 - CV_KNEE_SOC), CV_CUTOFF_A)

    def charge(self, seconds: float, *, ambient_c: float = AMBIENT_C) -> None:
        """Charge for `seconds` of simulated time: constant current to the knee, then a tapering
        current until the charger cuts off at 100 %."""
        for step in self._steps(seconds):
            self.current_a = self.charger_current()
            gained = self._flow(step)
            if self.current_a <= CV_CUTOFF_A and self.soc >= 99.0:
                gained += 100.0 - self.soc
                self.soc = 100.0
                self.current_a = 0.0
            self._count_cycles(gained)
            self._relax_temperature(step, ambient_c)

    def discharge(self, seconds: float, *, current_a: float = RIDE_CURRENT_A, ambient_c: float = AMBIENT_C) -> None:
        """Ride for `seconds` of simulated time drawing `current_a`; stops at empty."""
        for step in self._steps(seconds):
            self.current_a = -current_a if self.soc > 0 else 0.0
            self._flow(step)
            self._relax_temperature(step, ambient_c)
        self.current_a = 0.0

    def rest(self, seconds: float, *, ambient_c: float = AMBIENT_C) -> None:
        """No current for `seconds` of simulated time: the pack cools toward ambient."""
        self.current_a = 0.0
        for step in self._steps(seconds):
            self._relax_temperature(step, ambient_c)

    def reading(self) -> BatteryReading:
        """What the BMS reports now."""
        return BatteryReading(
            serial=self.serial,
            soc=round(min(max(self.soc, 0.0), 100.0), 1),
            soh=round(min(max(self.soh, 0.0), 100.0), 1),
            voltage_v=round(max(self.voltage_v, 0.0), 2),
            current_a=round(self.current_a, 2),
            temperature_c=round(self.temperature_c, 1),
            cycle_count=self.cycle_count,
            fault_codes=list(self.fault_codes),
        )

    def telemetry(self, *, cabinet_id: str | None = None, slot_no: int | None = None) -> BatteryTelemetry:
        """The pack's own report over its modem: in the named slot (on its charger), or out of any
        cabinet when none is named."""
        # From the clock, and never backwards: the seq keeps increasing as the pack moves between
        # cabinets and across restarts of the simulator.
        self._report_seq = max(self._report_seq + 1, time.time_ns() // 1_000_000)
        return BatteryTelemetry(
            serial=self.serial,
            ts=datetime.now(UTC),
            seq=self._report_seq,
            reading=self.reading(),
            charging=cabinet_id is not None,
            cabinet_id=cabinet_id,
            slot_no=slot_no,
        )

    @staticmethod
    def _steps(seconds: float) -> list[float]:
        if seconds <= 0:
            return []
        count = math.ceil(seconds / _MAX_STEP_S)
        return [seconds / count] * count

    def _flow(self, seconds: float) -> float:
        """Apply the current for `seconds`; returns the change in state of charge (percent)."""
        before = self.soc
        self.soc = min(max(self.soc + self.current_a * seconds / 3600.0 / self.capacity_ah * 100.0, 0.0), 100.0)
        return self.soc - before

    def _count_cycles(self, charged_pct: float) -> None:
        # One cycle is 100 % of charge put back in, however many partial charges it takes.
        self._charged_pct += max(charged_pct, 0.0)
        while self._charged_pct >= 100.0:
            self._charged_pct -= 100.0
            self.cycle_count += 1
            self.soh = max(self.soh - SOH_LOSS_PER_CYCLE, 0.0)

    def _relax_temperature(self, seconds: float, ambient_c: float) -> None:
        target = ambient_c + HEAT_C_PER_A * abs(self.current_a)
        self.temperature_c += (target - self.temperature_c) * (1.0 - math.exp(-seconds / THERMAL_TIME_CONSTANT_S))
