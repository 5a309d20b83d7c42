"""The API keeps its contract: the OpenAPI document it serves says what it answers. A bounded schemathesis
run against the served document, as an admin and as a rider, finds no server error, no undocumented
status or content type and no answer that breaks its schema; and what the API refuses, the document
calls invalid."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)

from swapflow.api.app import create_app
from swapflow.api.deps import get_temporal
from swapflow.db.commissions import Partner, SettlementRun
from swapflow.db.devices import DeadLetter
from swapflow.db.engine import Database
from swapflow.db.ops import Alert
from swapflow.db.pricing import Coupon, PriceRule
from swapflow.device_adapter.presence import record_transition
from swapflow.domain.clock import utcnow
from swapflow.domain.network import PresenceCause
from swapflow.domain.ops import OperatorRole
from swapflow.services.work_orders import new_work_order
from swapflow.settings import Settings
from tests.ops_harness import bearer, operator_token, rider_token

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    positive_data_acceptance,
]
EXAMPLES = 40
"""Per operation and caller: about 1,500 requests each; both runs take under a minute on 2 cores."""

CABINET = "cab-sh-001-1"

ENDS_THE_SESSION = {"POST /v1/auth/sign-out"}
"""Left out: it revokes the caller's token, and every operation after it would only meet 401s
(tests/test_rider_sign_in.py covers it)."""


async def _no_workflow_service() -> Any:
    raise RuntimeError("no workflow service in the contract test")


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    """The API without a workflow service: what needs one answers its declared 503 (running swaps would
    take simulated cabinets and a worker, more than a contract test needs)."""
    application = create_app(settings)
    application.dependency_overrides[get_temporal] = lambda: _no_workflow_service
    yield application
    shutdown_lifespans()  # schemathesis started the app's lifespan on its own event loop


@pytest.fixture
async def history(db: Database) -> None:
    """A little of everything the listings show, so their answers carry timestamps."""
    now = utcnow()
    async with db.transaction() as session:
        await new_work_order(
            session,
            cabinet_id=CABINET,
            slot_no=2,
            kind="door_fault",
            severity="warning",
            source="operator",
            description="jammed",
        )
        session.add(
            Alert(
                kind="slot_fault",
                severity="warning",
                dedupe_key=f"slot_fault:{CABINET}:1:-",
                cabinet_id=CABINET,
                slot_no=1,
                message="charger",
            )
        )
        session.add(DeadLetter(topic=f"tower/{CABINET}", payload="{}", reason="bad frame"))
        session.add(
            PriceRule(
                name="evening",
                kind="peak",
                adjustment="percent",
                value=2000,
                city_code="SH",
                start_local=(now - timedelta(hours=1)).time(),
                end_local=now.time(),
                valid_from=now - timedelta(days=1),
            )
        )
        session.add(
            Coupon(code="WELCOME", kind="percent", value=1000, valid_from=now - timedelta(days=1), redeemed_count=0)
        )
        record_transition(session, CABINET, True, PresenceCause.BIRTH, now - timedelta(hours=2))
        session.add(
            Partner(
                id="host-sh",
                kind="station_host",
                name="Host",
                cities=["SH"],
                time_zone="Asia/Shanghai",
                currency="CNY",
                payout_method="sandbox",
            )
        )
        await session.flush()
        session.add(
            SettlementRun(
                id="host-sh-2026-01",
                partner_id="host-sh",
                city_code="SH",
                period_label="2026-01",
                period_start=now - timedelta(days=31),
                period_end=now - timedelta(days=1),
                currency="CNY",
                status="paid",
                workflow_id="settlement/host-sh/2026-01",
                total_minor=500,
                prepared_by="schedule",
            )
        )


def contract_violations(app: FastAPI, headers: dict[str, str]) -> list[str]:
    """What a bounded run over every operation of the served document finds, one line per finding."""
    config = schemathesis.Config.from_dict(
        {"checks": {"not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", "503"]}}}
    )  # 503: no workflow service (see `app`)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    found: list[str] = []
    for result in schema.get_all_operations():
        if result.ok().label not in ENDS_THE_SESSION:
            found += _operation_violations(result.ok(), headers)
    return found


def _operation_violations(operation: schemathesis.APIOperation, headers: dict[str, str]) -> list[str]:
    found: set[str] = set()

    # Derandomized: CI runs the same requests every time; no shrinking, one line per kind of failure.
    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def exercise(case: schemathesis.Case) -> None:
        try:
            case.call_and_validate(headers=headers, checks=CHECKS)
        except FailureGroup as group:
            found.update(f"{operation.label}: {failure.title}: {failure.message}" for failure in group.exceptions)

    exercise()
    return sorted(found)


@pytest.mark.timeout(300)
async def test_the_api_keeps_its_contract_with_an_admin(app: FastAPI, db: Database, history: None) -> None:
    violations = contract_violations(app, bearer(await operator_token(db, "contract-admin", OperatorRole.ADMIN)))
    assert not violations, "\n\n".join(violations)


@pytest.mark.timeout(300)
async def test_the_api_keeps_its_contract_with_a_rider(app: FastAPI, db: Database, history: None) -> None:
    violations = contract_violations(app, bearer(await rider_token(db, "rider-sh-0001")))
    assert not violations, "\n\n".join(violations)


# ----------------------------------------------------------------------------------------- the document


@pytest.fixture
def document(app: FastAPI) -> dict[str, Any]:
    with TestClient(app) as client:
        return client.get("/openapi.json").json()


def valid(document: dict[str, Any], schema: dict[str, Any], instance: object) -> bool:
    """Whether `instance` is valid by `schema`, whose references point into the document."""
    return jsonschema_rs.Draft202012Validator(
        {**schema, "components": document["components"]}, validate_formats=True
    ).is_valid(instance)


def test_the_document_declares_the_bearer_scheme_for_the_endpoints_that_take_a_token(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"] == {
        "HTTPBearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A rider's or an operator account's API token.",
        }
    }
    assert document["paths"]["/v1/ops/alerts"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in document["paths"]["/v1/cabinets"]["get"]


def test_the_document_declares_every_error_answer_as_a_problem_document(document: dict[str, Any]) -> None:
    statuses = set()
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    statuses.add(status)
                    assert response["content"] == {
                        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }
    assert {"401", "403", "404", "409", "422"} <= statuses
    assert document["paths"]["/v1/ops/alerts"]["get"]["responses"].keys() >= {"401", "403", "422"}


def test_a_fixed_amount_coupon_without_currency_is_invalid_by_the_document(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/pricing/coupons"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert valid(document, body, {"code": "TENOFF", "kind": "fixed", "value": 1000, "currency": "CNY"})
    assert not valid(document, body, {"code": "TENOFF", "kind": "fixed", "value": 1000})
    assert not valid(document, body, {"code": "HALF", "kind": "percent", "value": 10_001})


def test_a_peak_rule_without_its_window_is_invalid_by_the_document(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/pricing/rules"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert valid(
        document,
        body,
        {
            "name": "p",
            "kind": "peak",
            "adjustment": "percent",
            "value": 2000,
            "start_local": "18:00",
            "end_local": "21:00",
        },
    )
    assert not valid(document, body, {"name": "p", "kind": "peak", "adjustment": "percent", "value": 2000})
    assert not valid(document, body, {"name": "b", "kind": "base", "value": 500, "start_local": "18:00"})
    assert not valid(document, body, {"name": "b", "kind": "base", "value": -1})


def test_near_that_is_no_coordinate_is_invalid_by_the_document(document: dict[str, Any]) -> None:
    [near] = [p for p in document["paths"]["/v1/cabinets"]["get"]["parameters"] if p["name"] == "near"]
    assert valid(document, near["schema"], "31.2304,121.4737")
    assert valid(document, near["schema"], "-90,180")
    assert not valid(document, near["schema"], "north")
    assert not valid(document, near["schema"], "91,0")


def test_a_mapping_key_with_a_nul_character_is_invalid_by_the_document(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/partners"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    partner = {"kind": "station_host", "name": "Host", "cities": ["SH"], "payout_method": "bank"}
    assert valid(document, body, {**partner, "payout_details": {"holder": "Wang Fang"}})
    assert not valid(document, body, {**partner, "payout_details": {"hol\x00der": "Wang Fang"}})
