"""The base of every model that crosses a workflow's boundary, and of the errors an activity raises for a
workflow to recognise."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict
from temporalio.exceptions import ActivityError, ApplicationError


class Contract(BaseModel):
    """Frozen: a workflow's input, signal or activity result is a value, never changed in place."""

    model_config = ConfigDict(frozen=True)


class ContractError(ApplicationError):
    """An activity's error of a type its workflow recognises. A subclass names the type: `TYPE` is written
    into running workflows' histories, so it never changes. Raised by the activity; the workflow sees an
    ApplicationError of that type (`caused` tells) and lists `TYPE` in its retry policy's non-retryable types."""

    TYPE: ClassVar[str]
    NON_RETRYABLE: ClassVar[bool] = True

    def __init__(self, message: str, *details: Any) -> None:
        super().__init__(message, *details, type=self.TYPE, non_retryable=self.NON_RETRYABLE)

    @classmethod
    def caused(cls, error: BaseException) -> bool:
        """Whether `error` (or, for an activity's failure, its cause) is of this type."""
        cause = error.cause if isinstance(error, ActivityError) else error
        return isinstance(cause, ApplicationError) and cause.type == cls.TYPE
