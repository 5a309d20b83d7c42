"""Workflow histories recorded from the tests' real runs, which tests/test_replay.py replays on today's
workflows. `./dev test -m records_history --record-histories` (or `python -m tests.record_histories`)
runs the recording tests and rewrites tests/histories/."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from temporalio.client import Client

HISTORIES = Path(__file__).parent / "histories"

RecordHistory = Callable[[str, str], Awaitable[None]]
"""`await record_history(workflow_id, name)`: the record_history fixture."""


def history_recorder(client: Client, enabled: bool) -> RecordHistory:
    """Writes a workflow's history as `tests/histories/<name>.json` when enabled; otherwise does nothing."""

    async def record(workflow_id: str, name: str) -> None:
        if not enabled:
            return
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        HISTORIES.mkdir(exist_ok=True)
        (HISTORIES / f"{name}.json").write_text(history.to_json() + "\n")

    return record
