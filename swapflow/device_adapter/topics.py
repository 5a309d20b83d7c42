"""A device message's topic, parsed once where the message is taken from the broker into a typed
route that goes with it: a cabinet's channel, or a pack's own report."""

from __future__ import annotations

from dataclasses import dataclass

from swapflow.protocol.v1 import Channel, parse_battery_topic, parse_cabinet_topic


@dataclass(frozen=True, slots=True)
class CabinetRoute:
    """A message on one of a cabinet's channels."""

    topic: str
    cabinet_id: str
    channel: Channel

    @property
    def key(self) -> str:
        """Whose queue and rate the message counts against."""
        return self.cabinet_id

    @property
    def kind(self) -> str:
        """The message's kind in metrics."""
        return self.channel.value


@dataclass(frozen=True, slots=True)
class PackRoute:
    """A pack's own report."""

    topic: str
    serial: str

    @property
    def key(self) -> str:
        """Whose rate the message counts against."""
        return f"battery:{self.serial}"

    @property
    def kind(self) -> str:
        """The message's kind in metrics."""
        return "battery"


Route = CabinetRoute | PackRoute


def parse_route(prefix: str, topic: str) -> Route | None:
    """The route of a topic under `prefix`, or None when it is neither a cabinet's nor a pack's."""
    cabinet = parse_cabinet_topic(prefix, topic)
    if cabinet is not None:
        return CabinetRoute(topic, *cabinet)
    serial = parse_battery_topic(prefix, topic)
    return PackRoute(topic, serial) if serial is not None else None
