"""The embedded stack: what `swapflow up` starts on a fresh machine (Temporal dev server, MQTT broker,
and the swapflow processes), and the supervisor that keeps them together."""
