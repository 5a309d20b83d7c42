"""The defaults of every wait (and attempt count) in a flow. The settings' defaults and the workflow inputs'
both come from here, so a workflow started without settings waits as long as one started with them."""

from __future__ import annotations

from typing import Final

# A swap's waits.
COMMAND_ACK_TIMEOUT_S: Final = 10.0
"""How long a cabinet has to acknowledge a command."""
COMMAND_ATTEMPTS: Final = 3
"""Sends of one command (same id) within that time."""
RETURN_INSERT_TIMEOUT_S: Final = 120.0
"""How long a rider has to insert the flat pack."""
CHARGED_TAKE_TIMEOUT_S: Final = 120.0
"""How long a rider has to take the charged pack."""
OFFLINE_GRACE_S: Final = 120.0
"""How long a swap waits for a cabinet that went offline."""
PAYMENT_PENDING_TIMEOUT_S: Final = 300.0
"""How long a charge may stay pending (rider confirming in the app) before it is closed."""

# A refund's waits.
REFUND_POLL_SCHEDULE_S: Final = (60.0, 300.0, 600.0, 1200.0, 1800.0)
"""Waits between refund polls; the last repeats until the refund is final."""
REFUND_EXPECTED_DAYS: Final = 3
"""Days a refund may take to land (WeChat: 1-3 business days)."""

# A work order's verification.
VERIFY_ACK_TIMEOUT_S: Final = 15.0
"""How long the verification's test command may take."""

# The alert evaluator's loop.
OPS_EVALUATE_INTERVAL_S: Final = 15.0
"""How often the alert rules run."""
OPS_EVALUATIONS_PER_RUN: Final = 200
"""Evaluations before the evaluator continues-as-new."""
OPS_WEBHOOK_ATTEMPTS: Final = 5
"""Attempts per alert and channel, with backoff."""

# A reservation's hold.
RESERVATION_HOLD_S: Final = 600.0
"""How long a reserved pack is held for its rider."""
