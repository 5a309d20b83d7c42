"""Bad requests get a 4xx problem document (RFC 9457) that says what is wrong."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from swapflow.api.app import create_app
from swapflow.db.engine import Database
from swapflow.db.models import OperatorRole
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
    response = api.post("/v1/swaps", json={"rider_id": "nobody", "cabinet_id": "cab-sh-001-1"},
                        headers={"Idempotency-Key": "k2", **admin})
    assert response.status_code == 404
    assert response.json()["title"] == "Unknown rider"


def test_unknown_swap_is_a_404_problem(api: TestClient, rider: dict[str, str]) -> None:
    response = api.get("/v1/swaps/does-not-exist", headers=rider)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


def test_swap_without_a_token_is_a_401_problem(api: TestClient) -> None:
    response = api.post("/v1/swaps", json={"rider_id": RIDER, "cabinet_id": "cab-sh-001-1"},
                        headers={"Idempotency-Key": "k3"})
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"


def test_near_that_is_not_a_coordinate_is_a_422_problem(api: TestClient) -> None:
    response = api.get("/v1/cabinets", params={"near": "north"})
    assert response.status_code == 422
    assert "lat,lon" in response.json()["detail"]


def test_cabinets_near_a_point_come_nearest_first(api: TestClient) -> None:
    cabinets = api.get("/v1/cabinets", params={"near": "31.2304,121.4737"}).json()
    assert cabinets and all(c["city_code"] == "SH" for c in cabinets)
    distances = [c["distance_km"] for c in cabinets]
    assert distances == sorted(distances)
    assert all(c["ready_batteries"] > 0 and c["free_slots"] > 0 for c in cabinets)
