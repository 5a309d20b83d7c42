"""Tower-protocol messages (pydantic). Every message has `messageType`, `txnNo` (a 13-digit millisecond
timestamp, the transaction number a response repeats) and `devId` (the cabinet's id)."""

from __future__ import annotations

import json
import time
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class MessageType(IntEnum):
    LOGIN = 100
    LOGIN_RESPONSE = 101
    REPORT = 300
    REPORT_RESPONSE = 301
    ALARM = 400
    ALARM_RESPONSE = 401
    CONTROL = 500
    CONTROL_RESPONSE = 501


FROM_CABINET = frozenset({MessageType.LOGIN, MessageType.REPORT, MessageType.ALARM, MessageType.CONTROL_RESPONSE})
"""What a cabinet sends; the other types flow from the platform."""

TxnNo = Annotated[int, Field(ge=10**12, le=10**13 - 1, description="13-digit millisecond timestamp.")]
SignalId = Annotated[str, Field(pattern=r"^\d{8}$")]
Value = str | int | float


def txn_now() -> int:
    """A transaction number from the clock."""
    return time.time_ns() // 1_000_000


class _Tower(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    txnNo: TxnNo  # the protocol's field names
    devId: str = Field(min_length=1, max_length=40)


class Attr(BaseModel):
    """One signal value; `doorId` names the slot (absent or 0: the cabinet itself)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: SignalId
    value: Value
    doorId: int | None = Field(None, ge=0)


class Alarm(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: SignalId
    alarmTime: Value | None = None
    alarmFlag: Literal[0, 1]  # 1 start, 0 end
    doorId: int | None = Field(None, ge=0)
    batteryId: str | None = None


class Param(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: SignalId
    value: Value
    doorId: int | None = Field(None, ge=0)
    batteryId: str | None = None
    userId: str | None = None


class LoginRequest(_Tower):
    """`secret` is this deployment's extension of the protocol: the cabinet's provisioned secret."""

    messageType: Literal[MessageType.LOGIN] = MessageType.LOGIN
    imsi: str | None = None
    hardVersion: str | None = None
    softVersion: str | None = None
    protocolVersion: str | None = None
    secret: str | None = Field(None, max_length=200, repr=False)


class LoginResponse(_Tower):
    messageType: Literal[MessageType.LOGIN_RESPONSE] = MessageType.LOGIN_RESPONSE
    result: Literal[0, 1]


class AttributeReport(_Tower):
    messageType: Literal[MessageType.REPORT] = MessageType.REPORT
    isFull: Literal[0, 1] = 0  # 1: every signal of the cabinet, 0: what changed
    attrList: list[Attr] = Field(default_factory=list)


class AttributeResponse(_Tower):
    messageType: Literal[MessageType.REPORT_RESPONSE] = MessageType.REPORT_RESPONSE
    result: Literal[0, 1] = 1


class AlarmReport(_Tower):
    messageType: Literal[MessageType.ALARM] = MessageType.ALARM
    alarmList: list[Alarm] = Field(default_factory=list)


class AlarmResponse(_Tower):
    messageType: Literal[MessageType.ALARM_RESPONSE] = MessageType.ALARM_RESPONSE
    result: Literal[0, 1] = 1


class ControlRequest(_Tower):
    messageType: Literal[MessageType.CONTROL] = MessageType.CONTROL
    paramList: list[Param]


class ControlResponse(_Tower):
    """The cabinet's answer to a control request: same `txnNo`; `result` 1 done / 0 failed, with a
    `reason` code on failure and, for a BMS read, the door's battery signals in `paramList`."""

    messageType: Literal[MessageType.CONTROL_RESPONSE] = MessageType.CONTROL_RESPONSE
    result: Literal[0, 1]
    reason: str | None = Field(None, max_length=200)
    paramList: list[Param] = Field(default_factory=list)


TowerMessage = Annotated[
    LoginRequest
    | LoginResponse
    | AttributeReport
    | AttributeResponse
    | AlarmReport
    | AlarmResponse
    | ControlRequest
    | ControlResponse,
    Field(discriminator="messageType"),
]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(TowerMessage)


class BadMessage(ValueError):
    """A frame body that is no valid tower message; `reason` is a short label for metrics."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_message(body: bytes) -> Any:
    """The message in a frame body. BadMessage for malformed JSON, an unknown type or invalid fields."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadMessage(f"malformed JSON: {exc}", reason="malformed_json") from None
    if not isinstance(data, dict):
        raise BadMessage("invalid tower message: not a JSON object", reason="invalid")
    kind = data.get("messageType")
    if kind not in set(MessageType):
        raise BadMessage(f"unknown messageType {kind!r}", reason="unknown_type")
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'][1:]) or '<root>'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise BadMessage(f"invalid tower message {kind}: {problems}", reason="invalid") from None
