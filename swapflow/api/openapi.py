"""The OpenAPI document says what the API answers and what it accepts: each error as a problem document
(401 and 403 where an endpoint takes a token, 404 where its path names a resource, 422 for a request it
refuses, and what a route names itself), and text without NUL characters, which the API refuses."""

from __future__ import annotations

import copy
import json
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError

from swapflow.api.problems import PROBLEM_JSON, ProblemDocument

TEXT_PATTERN = r"^[^\x00]*$"
"""Text holds no NUL character: PostgreSQL cannot store one, and no identifier has one."""

_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")


async def text_without_nul(request: Request) -> None:
    """An app-wide dependency: a request whose path, query, headers or JSON body hold a NUL character is
    refused (422), as TEXT_PATTERN declares."""
    texts: list[tuple[tuple[Any, ...], Any]] = [(("path", k), v) for k, v in request.path_params.items()]
    texts += [(("query", k), v) for k, v in request.query_params.multi_items()]
    texts += [(("header", k), v) for k, v in request.headers.items()]
    if "json" in request.headers.get("content-type", ""):
        try:
            texts.append((("body",), json.loads(await request.body())))
        except (ValueError, RecursionError):
            pass  # not JSON (or nested past parsing): the route says what is wrong with it
    where = _nul_location(texts)
    if where is not None:
        raise RequestValidationError(
            [{"type": "string_pattern_mismatch", "loc": where, "msg": "Text may not contain a NUL character"}]
        )


def _nul_location(texts: list[tuple[tuple[Any, ...], Any]]) -> tuple[Any, ...] | None:
    """Where a text holding a NUL character is, in JSON-like values (walked without recursion: a body may
    nest deeply)."""
    pending = list(reversed(texts))
    while pending:
        loc, value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return loc
        elif isinstance(value, dict):
            pending += [((*loc, key), item) for key, item in value.items()]
            pending += [((*loc, key), key) for key in value]
        elif isinstance(value, list):
            pending += [((*loc, index), item) for index, item in enumerate(value)]
    return None


def install_contract(app: FastAPI) -> None:
    """Serve the document with what `declare_contract` adds to FastAPI's."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = declare_contract(copy.deepcopy(generate()))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def declare_contract(document: dict[str, Any]) -> dict[str, Any]:
    """FastAPI's document with the errors every operation may answer, each as application/problem+json
    (FastAPI's own 422 schema, which the API never answers, is dropped), and TEXT_PATTERN on the text
    a request carries."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    seen: set[str] = set()
    for path, operations in document.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            implied = [422] + ([401, 403] if operation.get("security") else []) + ([404] if "{" in path else [])
            for status in implied:
                responses.setdefault(str(status), {"description": HTTPStatus(status).phrase})
            for status, response in responses.items():
                if status[0] in "45":
                    response["content"] = {PROBLEM_JSON: {"schema": _PROBLEM_REF}}
            inputs = [parameter.get("schema", {}) for parameter in operation.get("parameters", [])]
            inputs += [
                media.get("schema", {}) for media in operation.get("requestBody", {}).get("content", {}).values()
            ]
            for schema in inputs:
                _declare_text(schema, schemas, seen)
    for name in _FASTAPI_VALIDATION_SCHEMAS:
        schemas.pop(name, None)
    schemas["Problem"] = ProblemDocument.model_json_schema()
    return document


def _declare_text(schema: Any, components: dict[str, Any], seen: set[str]) -> None:
    """TEXT_PATTERN on each free-form string of `schema`, following its references into `components`."""
    if isinstance(schema, list):
        for item in schema:
            _declare_text(item, components, seen)
        return
    if not isinstance(schema, dict):
        return
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
        name = ref.rsplit("/", 1)[1]
        if name not in seen:
            seen.add(name)
            _declare_text(components.get(name), components, seen)
    if schema.get("type") == "string" and not schema.keys() & {"pattern", "format", "enum", "const"}:
        schema["pattern"] = TEXT_PATTERN
    if isinstance(schema.get("additionalProperties"), dict) or isinstance(schema.get("propertyNames"), dict):
        # A mapping's keys are text the request carries too (text_without_nul checks them).
        names = schema.setdefault("propertyNames", {})
        if not names.keys() & {"pattern", "format", "enum", "const"}:
            names["pattern"] = TEXT_PATTERN
    for key, value in schema.items():
        if key in ("properties", "$defs", "patternProperties"):
            for item in value.values():
                _declare_text(item, components, seen)
        elif key in ("items", "additionalProperties", "anyOf", "allOf", "oneOf", "not", "if", "then", "else"):
            _declare_text(value, components, seen)
