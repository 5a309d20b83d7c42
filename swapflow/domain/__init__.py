"""The domain: the platform's vocabulary, values and rules, with no I/O (no database, no settings, no
network). Workflows import only this package and their contracts."""
