"""What a service answers when it cannot do what was asked: typed errors, each with a short title, what
happened (`detail`) and the members a client reads (`reason` of a refused coupon). The API turns each
kind into one problem document (swapflow.api.problems); the CLI and the worker read the same errors."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A request the domain says no to, in words a caller can act on."""

    def __init__(self, title: str, detail: str, **members: Any) -> None:
        super().__init__(detail)
        self.title, self.detail = title, detail
        self.members: dict[str, Any] = members


class NotFound(DomainError):
    """What the request names does not exist, or the caller may not see it (which looks the same)."""

    def __init__(self, what: str, ident: object, *, detail: str | None = None) -> None:
        super().__init__(f"Unknown {what}", detail if detail is not None else f"no {what} {ident!r}")


class Forbidden(DomainError):
    """The caller may not do this."""

    def __init__(self, detail: str) -> None:
        super().__init__("Forbidden", detail)


class Invalid(DomainError):
    """The request is well formed but names something that cannot be (a slot the cabinet lacks)."""

    def __init__(self, detail: str) -> None:
        super().__init__("Invalid request", detail)


class Refused(DomainError):
    """A business rule says no to this request; `reason` names the rule, for clients to act on."""

    def __init__(self, title: str, detail: str, *, reason: str) -> None:
        super().__init__(title, detail, reason=reason)


class Conflict(DomainError):
    """The resource's state does not allow it now (a swap still running, more than what is left)."""


class IdempotencyKeyReused(Conflict):
    """An Idempotency-Key sent again with another request than the one it first named."""

    def __init__(self, detail: str, *, title: str = "Idempotency-Key reused") -> None:
        super().__init__(title, detail)


class Unavailable(DomainError):
    """A service this needs is unreachable now; the same request may be sent again later."""


class Unauthenticated(DomainError):
    """What was sent to prove who the caller is (a sign-in code, a refresh token) does not; `reason`
    names why. `challenge` is the WWW-Authenticate the answer carries."""

    def __init__(self, detail: str, *, reason: str, challenge: str = "Bearer", **members: Any) -> None:
        super().__init__("Unauthorized", detail, reason=reason, **members)
        self.challenge = challenge


class RateLimited(DomainError):
    """Too many requests of this kind for now; the next is taken after `retry_after_s` seconds."""

    def __init__(self, detail: str, *, retry_after_s: int) -> None:
        super().__init__("Too many requests", detail, retry_after_s=retry_after_s)
        self.retry_after_s = retry_after_s
