"""Fault injection for the simulated fleet: which faults to inject and how often (`FaultPlan`, parsed from
`swapflow up --simulate --faults jam=0.02,drop_ack=0.02,...`), and how many were injected (`FaultStats`).

Cabinet faults are rolled by `SimulatedCabinet`, rider faults by `SimulatedRider`; payment faults belong to
the sandbox payment provider, so the plan only carries their rates to the settings that drive it.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

CABINET_FAULTS = ("jam", "drop_ack", "duplicate", "offline")
"""jam: an open_door neither opens nor is acknowledged (per open_door). drop_ack: a command is carried out
but its ack is lost (per command). duplicate: an event, or a pack's insert/removal report, is published
twice (per message). offline: the cabinet drops off the network for `offline_seconds` (per swap)."""

RIDER_FAULTS = ("no_insert", "wrong_pack", "hot_pack", "walk_away", "slow_insert")
"""Per swap. no_insert: the rider walks away without putting the flat pack in. wrong_pack: the rider puts
in a pack that is not ours (an unregistered serial). hot_pack: the rider's pack reads 70 °C as it goes in.
walk_away: the rider leaves the charged pack behind. slow_insert: the rider takes 5–15 s to put the pack
in (within the swap's bound)."""

PAYMENT_FAULTS = {"decline": "sandbox_decline_rate", "payment_timeout": "sandbox_timeout_rate"}
"""Payment fault → the setting of the sandbox provider that injects it. The simulator ignores these."""

FAULT_NAMES = (*CABINET_FAULTS, *RIDER_FAULTS, *PAYMENT_FAULTS)

OFFLINE_SECONDS = "offline_seconds"
"""Not a fault but its parameter: how long an `offline` cabinet stays off the network."""

_DEFAULT_OFFLINE_SECONDS = 20.0


class FaultSpecError(ValueError):
    """A `--faults` string that cannot be parsed; the message says what is wrong."""


@dataclass(frozen=True)
class FaultPlan:
    """Which faults to inject and at what rate (each in [0, 1]); faults not named have rate 0."""

    rates: Mapping[str, float] = field(default_factory=dict)
    offline_seconds: float = _DEFAULT_OFFLINE_SECONDS

    def __post_init__(self) -> None:
        for name, rate in self.rates.items():
            if name not in FAULT_NAMES:
                raise FaultSpecError(f"unknown fault {name!r} (known: {', '.join(FAULT_NAMES)})")
            if not (isinstance(rate, int | float) and 0.0 <= rate <= 1.0):
                raise FaultSpecError(f"rate of fault {name!r} must be a number from 0 to 1, got {rate!r}")
        if not (math.isfinite(self.offline_seconds) and self.offline_seconds > 0):
            raise FaultSpecError(f"{OFFLINE_SECONDS} must be a positive number, got {self.offline_seconds!r}")
        # Read-only: one plan is shared by every cabinet and rider of a fleet.
        object.__setattr__(self, "rates", MappingProxyType(dict(self.rates)))

    @classmethod
    def parse(cls, spec: str) -> FaultPlan:
        """A plan from `"name=rate,name=rate"` (blank: no faults), e.g. `"jam=0.02,offline=0.01"`.
        `offline_seconds=<seconds>` sets how long an offline cabinet stays away. Raises FaultSpecError
        for an unknown name, a rate outside [0, 1], a malformed or repeated entry."""
        rates: dict[str, float] = {}
        offline_seconds = _DEFAULT_OFFLINE_SECONDS
        for entry in (part.strip() for part in spec.split(",")):
            if not entry:
                continue
            name, sep, value_text = (piece.strip() for piece in entry.partition("="))
            if not sep or not name or not value_text:
                raise FaultSpecError(f"expected name=rate, got {entry!r}")
            try:
                value = float(value_text)
            except ValueError:
                raise FaultSpecError(f"value of {name!r} is not a number: {value_text!r}") from None
            if name == OFFLINE_SECONDS:
                offline_seconds = value
                continue
            if name in rates:
                raise FaultSpecError(f"fault {name!r} is given twice")
            rates[name] = value
        return cls(rates, offline_seconds)

    def rate(self, name: str) -> float:
        """The rate of a fault (0 when the plan does not name it)."""
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r}")
        return self.rates.get(name, 0.0)

    def roll(self, name: str, rng: random.Random) -> bool:
        """Whether to inject `name` this time. A fault at rate 0 draws nothing from `rng`."""
        rate = self.rate(name)
        return rate > 0.0 and rng.random() < rate

    def payment_rates(self) -> dict[str, float]:
        """The payment faults this plan names, as settings of the sandbox provider (for example
        `{"sandbox_decline_rate": 0.02}`), to be applied to the settings the stack runs with."""
        return {setting: self.rates[name] for name, setting in PAYMENT_FAULTS.items() if name in self.rates}


@dataclass
class FaultStats:
    """How many faults were injected, by name; shared by a fleet's cabinets and riders."""

    injected: Counter[str] = field(default_factory=Counter)

    def count(self, name: str) -> None:
        """Record one injected fault."""
        self.injected[name] += 1

    @property
    def total(self) -> int:
        """All faults injected so far."""
        return sum(self.injected.values())

    def by_kind(self) -> dict[str, int]:
        """Injected faults per name, in the order of FAULT_NAMES, leaving out those never injected."""
        return {name: self.injected[name] for name in FAULT_NAMES if self.injected[name]}
