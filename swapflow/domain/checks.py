"""Checks of what the code relies on, failing with what went wrong (an `assert` says nothing, and
nothing at all under `python -O`)."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def present(value: T | None, what: str) -> T:
    """`value`, or a LookupError naming `what` is missing (a row another one points at, a step's earlier
    result): a bug or data changed underneath, never a rider's or a device's doing."""
    if value is None:
        raise LookupError(f"{what} is missing")
    return value
