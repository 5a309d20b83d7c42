"""The base of every model that crosses a workflow's boundary."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Contract(BaseModel):
    """Frozen: a workflow's input, signal or activity result is a value, never changed in place."""

    model_config = ConfigDict(frozen=True)
