"""Simulated hardware and people: packs with a BMS, cabinets speaking protocol v1 over MQTT, and riders
who swap through the API. Used by `swapflow simulate`, the demo, the tests and the benchmark."""

from swapflow.simulator.battery import SimBattery
from swapflow.simulator.cabinet import PhysicalActionError, SimulatedCabinet
from swapflow.simulator.faults import FaultPlan, FaultSpecError, FaultStats
from swapflow.simulator.fleet import FleetStats, build_cabinets, build_riders, run_fleet
from swapflow.simulator.riders import RiderStats, SimulatedRider

__all__ = [
    "FaultPlan",
    "FaultSpecError",
    "FaultStats",
    "FleetStats",
    "PhysicalActionError",
    "RiderStats",
    "SimBattery",
    "SimulatedCabinet",
    "SimulatedRider",
    "build_cabinets",
    "build_riders",
    "run_fleet",
]
