"""Errors as RFC 9457 problem details (application/problem+json), for every error the API returns: the
services' domain errors (one status per kind), the API's own (a missing token), HTTP and validation errors."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from swapflow.domain.errors import (
    Conflict,
    DomainError,
    Forbidden,
    Invalid,
    NotFound,
    RateLimited,
    Refused,
    Unauthenticated,
    Unavailable,
)

PROBLEM_JSON = "application/problem+json"

log = logging.getLogger(__name__)


DOMAIN_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Forbidden: 403,
    Conflict: 409,
    Invalid: 422,
    Refused: 422,
    Unavailable: 503,
    Unauthenticated: 401,
    RateLimited: 429,
}
"""The status each kind of domain error answers (a subclass answers its base's)."""


def domain_status(error: DomainError) -> int:
    for kind in type(error).__mro__:
        if kind in DOMAIN_STATUS:
            return DOMAIN_STATUS[kind]
    raise RuntimeError(f"no status for {type(error).__name__}: add its kind to DOMAIN_STATUS")


def domain_headers(error: DomainError) -> dict[str, str] | None:
    """The headers a domain error's answer carries: a 401's challenge, a 429's Retry-After."""
    if isinstance(error, Unauthenticated):
        return {"WWW-Authenticate": error.challenge}
    if isinstance(error, RateLimited):
        return {"Retry-After": str(error.retry_after_s)}
    return None


class Problem(Exception):
    """Raise to answer with a problem document the domain has no word for (an unauthenticated request)."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        type_: str = "about:blank",
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.type, self.extensions = status, title, detail, type_, extensions
        self.headers = headers


class ProblemDocument(BaseModel):
    """An error, as RFC 9457 problem details. Some carry more members (`errors` of an invalid request,
    `reason` of a refused coupon, WeChat's `code` and `message`)."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field("about:blank", description="A URI naming the kind of problem")
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str | None = Field(None, description="The path the request was for")


def problem_response(
    status: int,
    title: str,
    detail: str,
    *,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """A problem+json response."""
    body: dict[str, Any] = {"type": type_, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` of a route that may answer these error statuses (each a problem document). 401, 403
    (an endpoint that takes a token), 404 (a path naming a resource) and 422 are declared for every
    endpoint they apply to (swapflow.api.openapi); name the others."""
    return {status: {"description": HTTPStatus(status).phrase} for status in statuses}


class ErrorPages:
    """Errors of the requests `covers` accepts (a site's: the console's, the riders' page's) answered by
    `render` (a page) instead."""

    def __init__(self, covers: Callable[[Request], bool], render: Callable[[Request, int, str, str], Response]) -> None:
        self.covers, self.render = covers, render


def install_problem_handlers(app: FastAPI, *pages: ErrorPages) -> None:
    """Turn domain errors, Problem, HTTP errors and request validation errors into problem documents (or,
    for the requests one of `pages` covers, into its pages)."""

    def page(request: Request, status: int, title: str, detail: str) -> Response | None:
        site = next((site for site in pages if site.covers(request)), None)
        return site.render(request, status, title, detail) if site else None

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> Response:
        status = domain_status(exc)
        return page(request, status, exc.title, exc.detail) or problem_response(
            status, exc.title, exc.detail, instance=request.url.path, headers=domain_headers(exc), **exc.members
        )

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> Response:
        return page(request, exc.status, exc.title, exc.detail) or problem_response(
            exc.status,
            exc.title,
            exc.detail,
            type_=exc.type,
            instance=request.url.path,
            headers=exc.headers,
            **exc.extensions,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        # Its headers matter: `Allow` of a 405, `WWW-Authenticate` of a 401.
        return page(request, exc.status_code, str(exc.detail), str(exc.detail)) or problem_response(
            exc.status_code, str(exc.detail), str(exc.detail), instance=request.url.path, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return page(request, 500, "Internal error", "the error is logged") or problem_response(
            500, "Internal error", f"{type(exc).__name__}: the error is logged", instance=request.url.path
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in exc.errors()
        ]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
        return page(request, 422, "Invalid request", detail) or problem_response(
            422, "Invalid request", detail, instance=request.url.path, errors=errors
        )
