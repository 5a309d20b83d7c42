"""The domain: the platform's vocabulary, values and rules, with no I/O (no database, no settings, no
network). Workflows import it, their contracts and the pure message models (`protocol.v1`,
`payments.provider`), and nothing else of swapflow."""
