"""Payment providers. Every charge and refund carries an idempotency key derived from its business key."""
