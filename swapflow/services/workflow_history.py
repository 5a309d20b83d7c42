"""A workflow's event history, read from Temporal, as a timeline people can follow: each activity with its
attempts, duration and result or failure; local activities (from their markers); signals with what they
carried (the device adapter's door and pack facts); timers; updates; child workflows; failures; and which
steps were compensations. One function for every workflow, by id: swaps, refunds, settlement runs, work
orders.

What a history cannot show: queries and rejected updates leave no event, and a local activity's marker
keeps its result but not its input."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from pydantic import BaseModel
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent, WorkflowExecutionUpdateCompletedEventAttributes
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.service import RPCError, RPCStatusCode

from swapflow.domain.errors import NotFound
from swapflow.settings import TemporalSettings

LOCAL_ACTIVITY_MARKER = "core_local_activity"
SUMMARY_CHARS = 240


class EntryKind(StrEnum):
    ACTIVITY = "activity"
    LOCAL_ACTIVITY = "local_activity"
    SIGNAL = "signal"
    TIMER = "timer"
    UPDATE = "update"
    CHILD_WORKFLOW = "child_workflow"
    WORKFLOW_TASK = "workflow_task"  # only its failures (a nondeterminism error, a bug in the code)


class Outcome(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    FIRED = "fired"  # a timer
    RECEIVED = "received"  # a signal
    TERMINATED = "terminated"


class WorkflowStatus(StrEnum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TERMINATED = "terminated"
    TIMED_OUT = "timed_out"
    CONTINUED_AS_NEW = "continued_as_new"


class TimelineEntry(BaseModel):
    """One step of a workflow: from when it was scheduled (or happened) to how it ended."""

    kind: EntryKind
    name: str
    outcome: Outcome
    started_at: datetime
    ended_at: datetime | None = None
    attempts: int = 1
    detail: str | None = None
    """The result, the failure's message or, for a signal or an update, what it carried (shortened)."""
    data: Any = None
    """The decoded input (signals, updates, children) or result (activities), for callers that look inside."""
    compensation: bool = False
    child_workflow_id: str | None = None
    child_ui_url: str | None = None
    event_id: int

    @property
    def duration(self) -> timedelta | None:
        return None if self.ended_at is None else self.ended_at - self.started_at


class Timeline(BaseModel):
    """A workflow run's history, step by step in the order Temporal recorded them."""

    workflow_id: str
    run_id: str | None
    workflow_type: str
    status: WorkflowStatus
    started_at: datetime
    closed_at: datetime | None
    input: Any = None
    result: Any = None
    failure: str | None = None
    entries: list[TimelineEntry]
    temporal_ui_url: str

    def named(self, name: str) -> list[TimelineEntry]:
        return [entry for entry in self.entries if entry.name == name]

    @property
    def compensations(self) -> list[TimelineEntry]:
        return [entry for entry in self.entries if entry.compensation]


# Compensations, recognised by name, per workflow type (swapflow/workflows/swap.py): the refund child and
# the coupon release only ever run as compensations; a door command or a fault report is one when it runs
# in a failed swap's rollback, after its last forward step and before it finishes.
ALWAYS_COMPENSATION: dict[str, frozenset[str]] = {"Swap": frozenset({"Refund", "release_swap_coupon"})}
ROLLBACK_STEPS: dict[str, frozenset[str]] = {"Swap": frozenset({"send_device_command", "report_swap_fault"})}
ROLLBACK_ENDS_WITH: dict[str, str] = {"Swap": "finish_swap"}


def temporal_ui_url(settings: TemporalSettings, workflow_id: str, run_id: str | None = None) -> str:
    """The workflow's page in the Temporal UI."""
    url = f"{settings.effective_ui_url.rstrip('/')}/namespaces/{quote(settings.namespace, safe='')}"
    url += f"/workflows/{quote(workflow_id, safe='')}"
    return f"{url}/{quote(run_id, safe='')}/history" if run_id else url


async def workflow_timeline(client: Client, settings: TemporalSettings, workflow_id: str) -> Timeline:
    """The latest run of `workflow_id` as a timeline; NotFound if Temporal has no such workflow."""
    try:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound("workflow", workflow_id) from exc
        raise
    return timeline_of(workflow_id, history.events, settings, client.data_converter)


def timeline_of(
    workflow_id: str,
    events: Iterable[HistoryEvent],
    settings: TemporalSettings,
    converter: DataConverter | None = None,
) -> Timeline:
    """The timeline of a run from its history events."""
    return _Reader(workflow_id, settings, converter or DataConverter.default).read(list(events))


class _Reader:
    def __init__(self, workflow_id: str, settings: TemporalSettings, converter: DataConverter) -> None:
        self.workflow_id = workflow_id
        self.settings = settings
        self.converter = converter
        self.entries: list[TimelineEntry] = []
        self.by_event: dict[int, TimelineEntry] = {}  # scheduled/started/initiated event id → its entry
        self.updates: dict[str, TimelineEntry] = {}
        self.timers: dict[str, TimelineEntry] = {}
        self.event_times: dict[int, datetime] = {}

    def read(self, events: list[HistoryEvent]) -> Timeline:
        if not events or events[0].event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED:
            raise NotFound("workflow history", self.workflow_id)
        first = events[0].workflow_execution_started_event_attributes
        timeline = Timeline(
            workflow_id=self.workflow_id,
            run_id=first.original_execution_run_id or None,
            workflow_type=first.workflow_type.name,
            status=WorkflowStatus.RUNNING,
            started_at=_time(events[0]),
            closed_at=None,
            input=self._value(first.input),
            entries=[],
            temporal_ui_url="",
        )
        for event in events:
            self.event_times[event.event_id] = _time(event)
            self._take(event, timeline)
        if timeline.closed_at is not None:  # what was pending stopped with the run (an abandoned child runs on)
            for entry in self.entries:
                if entry.outcome == Outcome.RUNNING and entry.kind != EntryKind.CHILD_WORKFLOW:
                    entry.outcome, entry.ended_at = Outcome.CANCELLED, timeline.closed_at
        timeline.entries = self.entries
        timeline.temporal_ui_url = temporal_ui_url(self.settings, self.workflow_id, timeline.run_id)
        self._mark_compensations(timeline)
        return timeline

    # ---------------------------------------------------------------------------------- events

    def _take(self, event: HistoryEvent, timeline: Timeline) -> None:
        kind, at = event.event_type, _time(event)
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            self._add(event, EntryKind.ACTIVITY, attrs.activity_type.name, data=self._value(attrs.input))
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            self.by_event[started.scheduled_event_id].attempts = started.attempt
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            completed = event.activity_task_completed_event_attributes
            result = self._value(completed.result)
            self._end(completed.scheduled_event_id, at, Outcome.OK, _summary(result), data=result)
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED:
            failed = event.activity_task_failed_event_attributes
            self._end(failed.scheduled_event_id, at, Outcome.FAILED, _failure(failed.failure))
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT:
            timed_out = event.activity_task_timed_out_event_attributes
            self._end(timed_out.scheduled_event_id, at, Outcome.TIMED_OUT, _failure(timed_out.failure))
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED:
            self._end(event.activity_task_canceled_event_attributes.scheduled_event_id, at, Outcome.CANCELLED, None)
        elif kind == EventType.EVENT_TYPE_MARKER_RECORDED:
            self._marker(event, timeline)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            signaled = event.workflow_execution_signaled_event_attributes
            payload = self._value(signaled.input)
            entry = self._add(event, EntryKind.SIGNAL, signaled.signal_name, data=payload, detail=_summary(payload))
            entry.outcome, entry.ended_at = Outcome.RECEIVED, at
        elif kind == EventType.EVENT_TYPE_TIMER_STARTED:
            timer = event.timer_started_event_attributes
            duration = timer.start_to_fire_timeout.ToTimedelta()
            self.timers[timer.timer_id] = self._add(event, EntryKind.TIMER, f"timer {_duration(duration)}")
        elif kind == EventType.EVENT_TYPE_TIMER_FIRED:
            self._end_timer(event.timer_fired_event_attributes.timer_id, at, Outcome.FIRED)
        elif kind == EventType.EVENT_TYPE_TIMER_CANCELED:
            self._end_timer(event.timer_canceled_event_attributes.timer_id, at, Outcome.CANCELLED)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            accepted = event.workflow_execution_update_accepted_event_attributes.accepted_request
            args = self._values(accepted.input.args.payloads)
            entry = self._add(event, EntryKind.UPDATE, accepted.input.name, data=args, detail=_summary(args) or None)
            self.updates[accepted.meta.update_id] = entry
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED:
            self._end_update(event.workflow_execution_update_completed_event_attributes, at)
        elif kind == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED:
            child = event.start_child_workflow_execution_initiated_event_attributes
            entry = self._add(event, EntryKind.CHILD_WORKFLOW, child.workflow_type.name, data=self._value(child.input))
            entry.child_workflow_id = child.workflow_id
            entry.child_ui_url = temporal_ui_url(self.settings, child.workflow_id)
            entry.detail = child.workflow_id
        elif kind == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_FAILED:
            failed_start = event.start_child_workflow_execution_failed_event_attributes
            self._end(failed_start.initiated_event_id, at, Outcome.FAILED, "already started")
        elif kind == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_COMPLETED:
            done = event.child_workflow_execution_completed_event_attributes
            self._end(done.initiated_event_id, at, Outcome.OK, _summary(self._value(done.result)))
        elif kind == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_FAILED:
            child_failed = event.child_workflow_execution_failed_event_attributes
            self._end(child_failed.initiated_event_id, at, Outcome.FAILED, _failure(child_failed.failure))
        elif kind == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TIMED_OUT:
            self._end(
                event.child_workflow_execution_timed_out_event_attributes.initiated_event_id,
                at,
                Outcome.TIMED_OUT,
                None,
            )
        elif kind == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_CANCELED:
            self._end(
                event.child_workflow_execution_canceled_event_attributes.initiated_event_id, at, Outcome.CANCELLED, None
            )
        elif kind == EventType.EVENT_TYPE_CHILD_WORKFLOW_EXECUTION_TERMINATED:
            self._end(
                event.child_workflow_execution_terminated_event_attributes.initiated_event_id,
                at,
                Outcome.TERMINATED,
                None,
            )
        elif kind == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            task_failed = event.workflow_task_failed_event_attributes
            if task_failed.cause == WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND:
                return  # a signal came in while the task completed: Temporal runs the task again, nothing failed
            cause = WorkflowTaskFailedCause.Name(task_failed.cause).removeprefix("WORKFLOW_TASK_FAILED_CAUSE_").lower()
            detail = f"{cause}: {_failure(task_failed.failure)}"
            entry = self._add(event, EntryKind.WORKFLOW_TASK, "workflow task", detail=detail)
            entry.outcome, entry.ended_at = Outcome.FAILED, at
        else:
            self._close(event, timeline)

    def _marker(self, event: HistoryEvent, timeline: Timeline) -> None:
        marker = event.marker_recorded_event_attributes
        if marker.marker_name != LOCAL_ACTIVITY_MARKER:
            return  # patches and side effects: not steps
        data = self._value(marker.details["data"]) if "data" in marker.details else None
        data = data if isinstance(data, dict) else {}
        at = _time(event)
        # The worker's clock says when the local activity was first scheduled; when it lies outside the
        # workflow's own time (a test server skipping time), the workflow task it ran in says it instead.
        started = _proto_time(data.get("original_schedule_time"))
        if started is None or not timeline.started_at <= started <= at:
            started = self.event_times.get(marker.workflow_task_completed_event_id, at)
        entry = self._add(event, EntryKind.LOCAL_ACTIVITY, str(data.get("activity_type", "local activity")))
        entry.started_at, entry.ended_at = started, at
        entry.attempts = int(data.get("attempt", 1))
        if marker.HasField("failure"):
            entry.outcome, entry.detail = Outcome.FAILED, _failure(marker.failure)
        else:
            result = self._value(marker.details["result"]) if "result" in marker.details else None
            entry.outcome, entry.data, entry.detail = Outcome.OK, result, _summary(result)

    def _close(self, event: HistoryEvent, timeline: Timeline) -> None:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED:
            timeline.status = WorkflowStatus.COMPLETED
            timeline.result = self._value(event.workflow_execution_completed_event_attributes.result)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            timeline.status = WorkflowStatus.FAILED
            timeline.failure = _failure(event.workflow_execution_failed_event_attributes.failure)
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
            timeline.status = WorkflowStatus.TIMED_OUT
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED:
            timeline.status = WorkflowStatus.CANCELLED
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
            timeline.status = WorkflowStatus.TERMINATED
            timeline.failure = event.workflow_execution_terminated_event_attributes.reason or None
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            timeline.status = WorkflowStatus.CONTINUED_AS_NEW
        else:
            return
        timeline.closed_at = _time(event)

    # ---------------------------------------------------------------------------------- entries

    def _add(
        self, event: HistoryEvent, kind: EntryKind, name: str, *, data: Any = None, detail: str | None = None
    ) -> TimelineEntry:
        entry = TimelineEntry(
            kind=kind,
            name=name,
            outcome=Outcome.RUNNING,
            started_at=_time(event),
            data=data,
            detail=detail,
            event_id=event.event_id,
        )
        self.entries.append(entry)
        self.by_event[event.event_id] = entry
        return entry

    def _end(self, event_id: int, at: datetime, outcome: Outcome, detail: str | None, data: Any = None) -> None:
        entry = self.by_event.get(event_id)
        if entry is None:
            return
        entry.ended_at, entry.outcome, entry.detail = at, outcome, detail
        if data is not None:
            entry.data = data

    def _end_update(self, update: WorkflowExecutionUpdateCompletedEventAttributes, at: datetime) -> None:
        entry = self.updates.get(update.meta.update_id)
        if entry is None:
            return
        if update.outcome.HasField("failure"):
            entry.outcome, entry.detail = Outcome.FAILED, _failure(update.outcome.failure)
        else:
            entry.data = self._value(update.outcome.success)
            entry.outcome, entry.detail = Outcome.OK, _summary(entry.data)
        entry.ended_at = at

    def _end_timer(self, timer_id: str, at: datetime, outcome: Outcome) -> None:
        entry = self.timers.get(timer_id)
        if entry is not None:
            entry.ended_at, entry.outcome = at, outcome

    def _mark_compensations(self, timeline: Timeline) -> None:
        always = ALWAYS_COMPENSATION.get(timeline.workflow_type, frozenset())
        for entry in self.entries:
            entry.compensation = entry.name in always
        failed = isinstance(timeline.result, dict) and timeline.result.get("status") == "failed"
        if not failed and not any(entry.compensation for entry in self.entries):
            return  # no rollback (yet): a door command is a forward step
        rollback = ROLLBACK_STEPS.get(timeline.workflow_type, frozenset())
        finish = ROLLBACK_ENDS_WITH.get(timeline.workflow_type)
        steps = [e for e in self.entries if e.kind not in (EntryKind.TIMER, EntryKind.SIGNAL, EntryKind.WORKFLOW_TASK)]
        if steps and steps[-1].name == finish:
            steps.pop()
        for entry in reversed(steps):
            if entry.name not in rollback | always:
                break
            entry.compensation = True

    # ---------------------------------------------------------------------------------- payloads

    def _value(self, payloads: Payloads | None) -> Any:
        values = self._values(payloads.payloads) if payloads is not None else []
        return values[0] if len(values) == 1 else (values or None)

    def _values(self, payloads: Iterable[Payload]) -> list[Any]:
        values: list[Any] = []
        for payload in payloads:
            try:
                values.append(self.converter.payload_converter.from_payload(payload))
            except Exception:  # a payload this process cannot decode (an encrypted one) is shown as such
                values.append("<undecodable payload>")
        return values


def _time(event: HistoryEvent) -> datetime:
    return event.event_time.ToDatetime(tzinfo=UTC)


def _proto_time(value: Any) -> datetime | None:
    if not isinstance(value, dict) or "seconds" not in value:
        return None
    return datetime.fromtimestamp(int(value["seconds"]) + int(value.get("nanos", 0)) / 1e9, tz=UTC)


def _duration(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds * 1000:.0f}ms" if seconds < 1 else f"{seconds:g}s"


def _failure(failure: Failure) -> str:
    """The failure's message and the causes under it."""
    messages = []
    current: Failure | None = failure
    while current is not None and current.message:
        messages.append(current.message)
        current = current.cause if current.HasField("cause") else None
    return ": ".join(messages) or "failed"


def _summary(value: Any) -> str | None:
    """A short line for a value: `key=value` pairs of what is set (nested objects by their fields)."""
    if value is None or value == []:
        return None
    if isinstance(value, dict):
        text = ", ".join(f"{key}={_flat(item)}" for key, item in value.items() if item is not None and item != [])
    elif isinstance(value, list):
        text = "; ".join(_summary(item) or "" for item in value)
    else:
        text = str(value)
    return text if len(text) <= SUMMARY_CHARS else text[: SUMMARY_CHARS - 1] + "…"


def _flat(value: Any) -> str:
    if isinstance(value, dict) and ("serial" in value or "id" in value):
        return str(value.get("serial", value.get("id")))  # a nested record (a pack's reading): by its key
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)
