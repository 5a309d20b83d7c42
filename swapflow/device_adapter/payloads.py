"""What a device message must be to be accepted: its payload parsed into its protocol model, or
`Rejected` with the reason its dead letter carries."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class Rejected(Exception):
    """A message the adapter cannot accept; it becomes a dead letter with this reason."""


def parse(model: type[M], what: str, data: Any) -> M:
    """`data` as `model`; Rejected with "invalid <what> payload: <problems>" when it is not one."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise Rejected(f"invalid {what} payload: {problems}") from None


def parse_json(model: type[M], what: str, payload: bytes) -> M:
    """`payload` (JSON) as `model`, parsed in one step (the hot path of telemetry); on failure the
    same reasons as `load_json` and `parse` give."""
    try:
        return model.model_validate_json(payload)
    except ValidationError:
        return parse(model, what, load_json(payload))


def load_json(payload: bytes) -> Any:
    """The JSON in `payload`; Rejected as malformed when there is none."""
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise Rejected(f"malformed JSON: {exc}") from None


def check_cabinet_id(topic_cabinet: str, payload_cabinet: str) -> None:
    """Rejected when the payload names another cabinet than its topic."""
    if topic_cabinet != payload_cabinet:
        raise Rejected(f"payload cabinet_id {payload_cabinet!r} does not match topic cabinet {topic_cabinet!r}")
