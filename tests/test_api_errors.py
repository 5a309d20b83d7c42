"""Bad requests get a 4xx problem document (RFC 9457) that says what is wrong."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from swapflow.api.app import create_app
from swapflow.api.problems import domain_status
from swapflow.db.engine import Database
from swapflow.db.ops import Alert
from swapflow.domain import errors
from swapflow.domain.ops import OperatorRole
from swapflow.settings import Settings
from tests.ops_harness import bearer, operator_token, rider_token

RIDER = "rider-sh-0001"


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
async def rider(db: Database) -> dict[str, str]:
    """The headers of rider-sh-0001."""
    return bearer(await rider_token(db, RIDER))


@pytest.fixture
async def admin(db: Database) -> dict[str, str]:
    return bearer(await operator_token(db, "admin", OperatorRole.ADMIN))


def test_swap_without_idempotency_key_is_a_422_problem(api: TestClient, rider: dict[str, str]) -> None:
    response = api.post("/v1/swaps", json={"rider_id": RIDER, "cabinet_id": "cab-sh-001-1"}, headers=rider)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "Idempotency-Key" in response.json()["detail"]


def test_swap_with_malformed_body_names_the_bad_field(api: TestClient, rider: dict[str, str]) -> None:
    response = api.post("/v1/swaps", json={"rider": "x"}, headers={"Idempotency-Key": "k1", **rider})
    assert response.status_code == 422
    assert "rider_id" in response.json()["detail"]


def test_swap_for_unknown_rider_is_a_404_problem(api: TestClient, admin: dict[str, str]) -> None:
    response = api.post(
        "/v1/swaps",
        json={"rider_id": "nobody", "cabinet_id": "cab-sh-001-1"},
        headers={"Idempotency-Key": "k2", **admin},
    )
    assert response.status_code == 404
    assert response.json()["title"] == "Unknown rider"


def test_unknown_swap_is_a_404_problem(api: TestClient, rider: dict[str, str]) -> None:
    response = api.get("/v1/swaps/does-not-exist", headers=rider)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_swap_without_a_token_is_a_401_problem(api: TestClient) -> None:
    response = api.post(
        "/v1/swaps", json={"rider_id": RIDER, "cabinet_id": "cab-sh-001-1"}, headers={"Idempotency-Key": "k3"}
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"


def test_text_with_a_nul_character_is_a_422_problem(api: TestClient, rider: dict[str, str]) -> None:
    response = api.post(
        "/v1/swaps", json={"rider_id": RIDER, "cabinet_id": "cab\x00"}, headers={"Idempotency-Key": "k4", **rider}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "cabinet_id"]


def test_an_unknown_token_is_a_401_that_says_the_token_is_invalid(api: TestClient) -> None:
    response = api.get("/v1/swaps/any", headers=bearer("not-a-token"))
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_a_method_the_path_does_not_take_is_a_405_that_names_those_it_does(api: TestClient) -> None:
    response = api.delete("/v1/swaps")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["content-type"] == "application/problem+json"


async def test_timestamps_are_answered_in_utc(api: TestClient, db: Database, admin: dict[str, str]) -> None:
    async with db.transaction() as session:
        session.add(
            Alert(
                kind="slot_fault",
                severity="warning",
                dedupe_key="slot_fault:cab-sh-001-1:1:-",
                cabinet_id="cab-sh-001-1",
                slot_no=1,
                message="charger",
            )
        )
    [alert] = api.get("/v1/ops/alerts", headers=admin).json()
    assert datetime.fromisoformat(alert["created_at"]).utcoffset() == timedelta(0)


def test_a_timestamp_without_an_offset_is_taken_as_utc(api: TestClient, admin: dict[str, str]) -> None:
    coupon = {"code": "SPRING", "kind": "percent", "value": 1000, "valid_from": "2026-03-01T00:00:00"}
    created = api.post("/v1/pricing/coupons", json=coupon, headers=admin).json()
    assert created["valid_from"] == "2026-03-01T00:00:00Z"


def test_figures_from_a_start_in_the_future_are_empty(api: TestClient, admin: dict[str, str]) -> None:
    start = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    response = api.get("/v1/ops/figures/incidents", params={"from": start}, headers=admin)
    assert response.status_code == 200
    assert all(city["opened"] == 0 for city in response.json()["cities"])


def test_a_webhook_of_a_provider_not_configured_here_is_a_404_problem(api: TestClient) -> None:
    response = api.post("/v1/payments/stripe/webhook", content=b"{}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_near_that_is_not_a_coordinate_is_a_422_problem(api: TestClient) -> None:
    response = api.get("/v1/cabinets", params={"near": "north"})
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["query", "near"]


def test_cabinets_near_a_point_come_nearest_first(api: TestClient) -> None:
    cabinets = api.get("/v1/cabinets", params={"near": "31.2304,121.4737"}).json()
    assert cabinets and all(c["city_code"] == "SH" for c in cabinets)
    distances = [c["distance_km"] for c in cabinets]
    assert distances == sorted(distances)
    assert all(c["ready_batteries"] > 0 and c["free_slots"] > 0 for c in cabinets)


def _kinds(kind: type[errors.DomainError]) -> Iterator[type[errors.DomainError]]:
    for sub in kind.__subclasses__():
        yield sub
        yield from _kinds(sub)


def test_each_kind_of_domain_error_answers_its_status() -> None:
    statuses = {kind.__name__: domain_status(kind.__new__(kind)) for kind in _kinds(errors.DomainError)}
    assert statuses == {
        "NotFound": 404,
        "Forbidden": 403,
        "Invalid": 422,
        "Refused": 422,
        "Conflict": 409,
        "IdempotencyKeyReused": 409,
        "Unavailable": 503,
        "Unauthenticated": 401,
        "RateLimited": 429,
    }
