"""The tower protocol's 8-digit signal ids and what they mean to swapflow. docs/protocol.md carries
the same table; values not public in the protocol (control codes, alarm ids, the cycle count signal)
are swapflow's and marked so there."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class Signal(StrEnum):
    # Per door (doorId = slot number).
    DOOR_STATUS = "02103001"  # 0 closed, 1 open
    SLOT_STATUS = "02104001"  # 0 empty, 1 charging, 2 full, 5 fault
    BATTERY_SERIAL = "02106001"  # "" when the slot is empty
    SOC = "02109001"  # percent
    SOH = "02110001"  # percent
    PACK_VOLTAGE = "01111001"  # V
    PACK_CURRENT = "01112001"  # A, positive while charging
    CELL_TEMPERATURE = "01119001"  # °C
    CYCLE_COUNT = "02107001"  # full cycles (swapflow's: not in the public signal list)
    # The cabinet (doorId absent or 0).
    CABINET_TEMPERATURE = "02113001"  # °C
    LONGITUDE = "02111001"
    LATITUDE = "02112001"
    # Control requests (500) and their responses (501).
    CABINET_CONTROL = "02301001"  # value: a Control code


class SlotStatus(IntEnum):
    EMPTY = 0
    CHARGING = 1
    FULL = 2
    FAULT = 5


class Control(IntEnum):
    """Values of CABINET_CONTROL (swapflow's codes) and the v1 command actions they carry."""

    OPEN_DOOR = 1
    CLOSE_DOOR = 2
    READ_BMS = 3
    LOCK_SLOT = 4
    UNLOCK_SLOT = 5


NUMERIC = frozenset(
    {
        Signal.SOC,
        Signal.SOH,
        Signal.PACK_VOLTAGE,
        Signal.PACK_CURRENT,
        Signal.CELL_TEMPERATURE,
        Signal.CYCLE_COUNT,
        Signal.CABINET_TEMPERATURE,
        Signal.LONGITUDE,
        Signal.LATITUDE,
    }
)
"""Signals whose value must be a number."""

ALARMS: dict[str, str] = {
    "03101001": "over_temperature",  # a slot or pack too hot
    "03102001": "charger_fault",
    "03103001": "door_lock_fault",
    "03104001": "smoke",
    "03105001": "bms_lost",  # the pack's BMS stopped answering
    "03106001": "water_ingress",
}
"""Alarm ids (swapflow's) → the v1 `fault_code` of the fault event they become. Other ids become
`alarm_<id>`."""


def fault_code(alarm_id: str) -> str:
    """The v1 fault code of a tower alarm id."""
    return ALARMS.get(alarm_id, f"alarm_{alarm_id}")
