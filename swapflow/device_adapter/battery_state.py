"""A pack's state as the platform sees it: charge state from its current, and whether it is "ready" to
be issued to a rider (charged above the threshold, healthy, within its model's safety limits)."""

from __future__ import annotations

from enum import StrEnum

from swapflow.db.network import Battery, Slot
from swapflow.domain.network import BatteryStatus
from swapflow.domain.safety import check_pack
from swapflow.protocol.v1 import IDLE_CURRENT_A, BatteryReading
from swapflow.settings import Settings


class ChargeState(StrEnum):
    CHARGING = "charging"
    DISCHARGING = "discharging"
    IDLE = "idle"


def charge_state(current_a: float) -> ChargeState:
    """Charging, discharging or idle, from the pack current (positive while charging)."""
    if current_a > IDLE_CURRENT_A:
        return ChargeState.CHARGING
    if current_a < -IDLE_CURRENT_A:
        return ChargeState.DISCHARGING
    return ChargeState.IDLE


def readiness(battery: Battery, slot: Slot | None, settings: Settings) -> list[str]:
    """Why the pack may not be issued now; empty when it is ready: in service, in a usable slot, charged
    to `ready_soc_threshold`, SoH at least `min_soh`, and within its model's safety limits."""
    reasons = []
    if battery.status != BatteryStatus.IN_SERVICE:
        reasons.append(f"status {battery.status}")
    if slot is None:
        reasons.append("not in a cabinet slot")
    elif slot.locked or slot.fault or slot.out_of_service:
        reasons.append("slot not usable")
    if battery.soc < settings.swap.ready_soc_threshold:
        reasons.append(f"SoC {battery.soc:.1f}% below {settings.swap.ready_soc_threshold:.0f}%")
    if battery.soh < settings.swap.min_soh:
        reasons.append(f"SoH {battery.soh:.1f}% below {settings.swap.min_soh:.0f}%")
    limits = settings.swap.battery_limits.get(battery.model, settings.swap.default_battery_limits)
    reading = BatteryReading(
        serial=battery.serial,
        soc=battery.soc,
        soh=battery.soh,
        voltage_v=battery.voltage_v,
        current_a=battery.current_a or 0.0,
        temperature_c=battery.temperature_c,
        cycle_count=battery.cycle_count,
    )
    reasons.extend(check_pack(reading, limits).reasons)
    return reasons
