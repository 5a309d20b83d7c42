"""Workflows that may be running when a new worker is deployed go on from their histories: each history
under tests/histories/, recorded from a real run on the time-skipping server, replays on today's
workflows without a nondeterminism error. A change that reorders, adds or removes a workflow's commands
without `workflow.patched` fails here (CONTRIBUTING.md: changing a workflow safely)."""

from __future__ import annotations

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from swapflow.worker import WORKFLOWS
from tests.history_recording import HISTORIES

RECORDED = {
    path.stem: WorkflowHistory.from_json(path.stem, path.read_text()) for path in sorted(HISTORIES.glob("*.json"))
}


@pytest.mark.parametrize("name", RECORDED)
async def test_a_recorded_history_replays_on_todays_workflows(name: str) -> None:
    replayer = Replayer(workflows=list(WORKFLOWS), data_converter=pydantic_data_converter)
    await replayer.replay_workflow(RECORDED[name])


def test_every_workflow_the_worker_runs_has_a_recorded_history() -> None:
    # The SDK's own record of a class's workflow type name (what its histories carry).
    runs = {workflow._Definition.must_from_class(cls).name for cls in WORKFLOWS}
    recorded = {h.events[0].workflow_execution_started_event_attributes.workflow_type.name for h in RECORDED.values()}
    assert runs <= recorded
