"""The tower-protocol gateway: legacy cabinets that speak JSON over TCP (the "China Tower" cabinet
protocol) appear to the rest of the platform as protocol v1 cabinets on MQTT. docs/protocol.md,
"Tower protocol gateway", documents framing, messages and the signal mapping."""
