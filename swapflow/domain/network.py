"""The network's vocabulary: cabinets, their doors and protocols, packs and who holds them."""

from __future__ import annotations

from enum import StrEnum


class CabinetCapability(StrEnum):
    """Whether a cabinet reports doors and batteries, or only obeys commands (legacy)."""

    REPORTING = "reporting"
    COMMAND_ONLY = "command_only"


class CabinetProtocol(StrEnum):
    """What a cabinet speaks: protocol v1 over MQTT, or the tower protocol over TCP (through the gateway)."""

    V1 = "v1"
    TOWER = "tower"


class DoorState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    UNKNOWN = "unknown"


class BatteryStatus(StrEnum):
    """Lifecycle of a pack."""

    COMMISSIONED = "commissioned"
    IN_SERVICE = "in_service"
    QUARANTINED = "quarantined"
    IN_REPAIR = "in_repair"
    SECOND_LIFE = "second_life"
    RETIRED = "retired"


class CustodianKind(StrEnum):
    """Who holds a battery. Exactly one custodian at every moment (brief, invariant 1)."""

    SLOT = "slot"
    RIDER = "rider"
    OPS = "ops"
    QUARANTINE = "quarantine"
    RETIRED = "retired"
    MISSING = "missing"
    """Left its slot with no one to hold it (a removal outside any swap); ref: the slot it left."""


def slot_ref(cabinet_id: str, slot_no: int) -> str:
    """A cabinet slot as a custodian reference, `<cabinet>/<slot>`: of a pack in it, quarantined in it or
    gone missing from it."""
    return f"{cabinet_id}/{slot_no}"


class PresenceCause(StrEnum):
    """Why a cabinet went online or offline."""

    BIRTH = "birth"
    TELEMETRY = "telemetry"  # heard from again after its heartbeats had expired, without a new birth
    LAST_WILL = "last_will"
    CLEAN_DISCONNECT = "clean_disconnect"
    HEARTBEAT_EXPIRED = "heartbeat_expired"


class CredentialRole(StrEnum):
    """A cabinet's own account (its username is its id) or a platform service's (adapter, gateway…)."""

    CABINET = "cabinet"
    SERVICE = "service"
