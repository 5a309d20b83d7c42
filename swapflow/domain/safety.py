"""Battery safety: the limits a returned pack must be within, per battery model, and the check."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from swapflow.protocol.v1 import BatteryReading


class BatteryLimits(BaseModel):
    """Safety limits of one battery model. A pack outside any of them is quarantined."""

    model_config = ConfigDict(frozen=True)

    min_temperature_c: float = -10.0
    max_temperature_c: float = 55.0
    min_voltage_v: float = 48.0
    max_voltage_v: float = 69.5
    min_soh: float = 60.0
    tolerated_fault_codes: frozenset[str] = Field(
        default_factory=frozenset, description="BMS codes that do not block (informational)."
    )


class SafetyVerdict(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    reasons: tuple[str, ...] = ()


def check_pack(reading: BatteryReading, limits: BatteryLimits) -> SafetyVerdict:
    """Every limit the reading breaks, as reasons; passed when there are none."""
    reasons: list[str] = []
    if not limits.min_temperature_c <= reading.temperature_c <= limits.max_temperature_c:
        reasons.append(
            f"temperature {reading.temperature_c} °C outside [{limits.min_temperature_c}, {limits.max_temperature_c}]"
        )
    if not limits.min_voltage_v <= reading.voltage_v <= limits.max_voltage_v:
        reasons.append(f"voltage {reading.voltage_v} V outside [{limits.min_voltage_v}, {limits.max_voltage_v}]")
    if reading.soh < limits.min_soh:
        reasons.append(f"SoH {reading.soh}% below {limits.min_soh}%")
    blocking = sorted(set(reading.fault_codes) - limits.tolerated_fault_codes)
    if blocking:
        reasons.append(f"fault codes {', '.join(blocking)}")
    return SafetyVerdict(passed=not reasons, reasons=tuple(reasons))
