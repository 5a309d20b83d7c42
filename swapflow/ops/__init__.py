"""Live ops: alert rules and channels, work orders, incident figures, operator accounts."""
