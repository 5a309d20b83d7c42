"""Riders on their own, over HTTP against the real database: a code by SMS (read back from the dev inbox)
or WeChat mini-program login (against a local code2session server) signs a new rider up and a known one
in; codes expire, are single use and die after their wrong tries; asking for codes is rate limited; a
referral code attributes the new rider to its agent; access tokens expire, refresh tokens rotate and a
reused one revokes its sign-in; signing out revokes; every 401 carries its challenge."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from swapflow.api.app import create_app
from swapflow.db.engine import Database
from swapflow.ops.invariants import check_invariants
from swapflow.settings import Settings
from tests.ops_harness import admin_headers, bearer
from tests.wechat_login_fake import WeChatLoginFake, wechat_login  # noqa: F401  (the fixture)

PHONE, OTHER_PHONE = "+8613800138000", "+8613900139000"
INVALID_TOKEN = 'Bearer error="invalid_token"'


@pytest.fixture
def settings(database_url: str, tmp_path: Path, wechat_login: WeChatLoginFake) -> Settings:
    """The platform with the dev inbox on, WeChat sign-in against the fake, and no least time between two
    codes to one phone (the rate limit's own tests set it)."""
    changes = wechat_login.settings_changes()
    changes["rider_auth"] |= {"dev_inbox": True, "code_interval_s": 0}
    return Settings().updated(data_dir=tmp_path / "data", database_url=database_url, **changes)


def serve(settings: Settings, **rider_auth: Any) -> TestClient:
    return TestClient(create_app(settings.updated(rider_auth=rider_auth) if rider_auth else settings))


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with serve(settings) as client:
        yield client


def send_code(api: TestClient, phone: str = PHONE) -> str:
    """Ask for a code and read it from the dev inbox, as a rider reads their SMS."""
    response = api.post("/v1/auth/phone/codes", json={"phone": phone})
    assert response.status_code == 202, response.json()
    [latest, *_] = api.get("/v1/dev/sms-inbox", params={"phone": phone}).json()
    found = re.match(r"(\d+) is your swapflow sign-in code", latest["text"])
    assert found, latest
    return found.group(1)


def sign_in(api: TestClient, code: str, phone: str = PHONE, **fields: Any) -> httpx.Response:
    return api.post("/v1/auth/phone/sign-in", json={"phone": phone, "code": code, **fields})


def signed_in(api: TestClient, phone: str = PHONE, **fields: Any) -> dict[str, Any]:
    """A rider signed in (up, for a new phone: in Shanghai unless told) with a fresh code."""
    response = sign_in(api, send_code(api, phone), phone, **{"city_code": "SH", **fields})
    assert response.status_code == 200, response.json()
    return response.json()


def me(api: TestClient, tokens: dict[str, Any]) -> httpx.Response:
    return api.get("/v1/me", headers=bearer(tokens["access_token"]))


def assert_unauthorized(response: httpx.Response, reason: str | None = None, challenge: str = "Bearer") -> None:
    assert response.status_code == 401, response.json()
    assert response.headers["WWW-Authenticate"] == challenge
    assert response.headers["content-type"] == "application/problem+json"
    if reason is not None:
        assert response.json()["reason"] == reason


# ------------------------------------------------------------------------------------- phone codes


def test_a_new_phone_signs_up_with_the_code_sent_to_it(api: TestClient) -> None:
    tokens = sign_in(api, send_code(api), name="Li Wei", city_code="SH").json()

    assert (tokens["token_type"], tokens["expires_in"], tokens["new_rider"]) == ("bearer", 3600, True)
    profile = me(api, tokens).json()
    assert profile | {"created_at": None} == {
        "id": tokens["rider_id"],
        "name": "Li Wei",
        "phone": PHONE,
        "city_code": "SH",
        "status": "active",
        "wechat_bound": False,
        "agent_id": None,
        "created_at": None,
    }
    assert profile["created_at"] is not None


def test_a_new_rider_has_an_empty_wallet_in_their_citys_currency(api: TestClient) -> None:
    tokens = signed_in(api, city_code="BER")

    wallet = api.get(f"/v1/riders/{tokens['rider_id']}/wallet", headers=bearer(tokens["access_token"]))
    assert wallet.json() == {"rider_id": tokens["rider_id"], "currency": "EUR", "balance_minor": 0}


def test_a_known_phone_signs_in_as_the_same_rider(api: TestClient) -> None:
    first = signed_in(api)
    again = sign_in(api, send_code(api)).json()

    assert (again["rider_id"], again["new_rider"]) == (first["rider_id"], False)
    assert again["access_token"] != first["access_token"]


def test_a_new_phone_without_a_city_is_refused_and_its_code_stays_good(api: TestClient) -> None:
    code = send_code(api)

    refused = sign_in(api, code)
    assert (refused.status_code, refused.json()["reason"]) == (422, "city_required")
    assert sign_in(api, code, city_code="SH").json()["new_rider"] is True


def test_a_code_signs_in_once(api: TestClient) -> None:
    code = send_code(api)
    assert sign_in(api, code, city_code="SH").status_code == 200

    assert_unauthorized(sign_in(api, code), "code_used")


def test_an_expired_code_does_not_sign_in(settings: Settings) -> None:
    with serve(settings, code_ttl_s=0.3) as api:
        code = send_code(api)
        time.sleep(0.4)

        assert_unauthorized(sign_in(api, code, city_code="SH"), "code_expired")


def test_only_the_latest_code_sent_to_a_phone_signs_in(api: TestClient) -> None:
    earlier = send_code(api)
    latest = send_code(api)
    if earlier == latest:  # one in a million: two codes alike prove nothing here
        pytest.skip("the two random codes are the same")

    assert_unauthorized(sign_in(api, earlier, city_code="SH"), "code_invalid")
    assert sign_in(api, latest, city_code="SH").status_code == 200


def test_a_code_dies_after_its_wrong_tries_even_for_the_right_code(api: TestClient) -> None:
    code = send_code(api)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    left = []
    for _ in range(5):
        response = sign_in(api, wrong, city_code="SH")
        assert_unauthorized(response, "code_invalid")
        left.append(response.json()["attempts_left"])
    assert left == [4, 3, 2, 1, 0]
    assert_unauthorized(sign_in(api, code, city_code="SH"), "code_attempts_exhausted")


def test_a_phone_number_that_is_not_e164_is_invalid(api: TestClient) -> None:
    response = api.post("/v1/auth/phone/codes", json={"phone": "13800138000"})

    assert response.status_code == 422
    assert api.get("/v1/dev/sms-inbox", params={"phone": "+8613800138000"}).json() == []


# -------------------------------------------------------------------------------------- rate limits


def test_a_phone_gets_one_code_per_interval(settings: Settings) -> None:
    with serve(settings, code_interval_s=30) as api:
        send_code(api)
        response = api.post("/v1/auth/phone/codes", json={"phone": PHONE})

        assert response.status_code == 429
        assert 29 <= int(response.headers["Retry-After"]) <= 30
        assert response.json()["retry_after_s"] == int(response.headers["Retry-After"])
        assert api.post("/v1/auth/phone/codes", json={"phone": OTHER_PHONE}).status_code == 202


def test_a_phone_gets_so_many_codes_per_window(settings: Settings) -> None:
    with serve(settings, codes_per_phone=3, code_window_s=3600) as api:
        for _ in range(3):
            send_code(api)
        response = api.post("/v1/auth/phone/codes", json={"phone": PHONE})

        assert response.status_code == 429
        assert 3590 <= int(response.headers["Retry-After"]) <= 3600
        assert len(api.get("/v1/dev/sms-inbox", params={"phone": PHONE}).json()) == 3


def test_a_client_address_gets_so_many_codes_per_window(settings: Settings) -> None:
    with serve(settings, codes_per_address=2) as api:
        for phone in ("+8613800000001", "+8613800000002"):
            send_code(api, phone)
        response = api.post("/v1/auth/phone/codes", json={"phone": "+8613800000003"})

        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) > 0


# ---------------------------------------------------------------------------------------- referrals


def test_a_referral_code_attributes_the_new_rider_to_its_agent(api: TestClient) -> None:
    tokens = signed_in(api, referral_code="sh-agent-1")

    assert me(api, tokens).json()["agent_id"] == "agent-sh-1"


def test_an_unknown_referral_code_is_refused_and_nothing_is_created(api: TestClient) -> None:
    code = send_code(api)

    refused = sign_in(api, code, city_code="SH", referral_code="NOBODY")
    assert (refused.status_code, refused.json()["reason"]) == (422, "unknown_referral_code")
    assert sign_in(api, code, city_code="SH").json()["new_rider"] is True  # the refused sign-up left nothing


def test_a_referral_code_of_another_citys_agent_is_refused(api: TestClient) -> None:
    refused = sign_in(api, send_code(api), city_code="SH", referral_code="BER-AGENT")

    assert (refused.status_code, refused.json()["reason"]) == (422, "referral_not_applicable")


# ------------------------------------------------------------------------------------------- WeChat


def wechat_sign_in(api: TestClient, code: str, **fields: Any) -> httpx.Response:
    return api.post("/v1/auth/wechat/sign-in", json={"code": code, **fields})


def test_a_new_wechat_user_signs_up(api: TestClient, wechat_login: WeChatLoginFake) -> None:
    response = wechat_sign_in(api, wechat_login.code_for("o-new-user"), city_code="SZ", name="Wang Fang")

    assert response.status_code == 200, response.json()
    tokens = response.json()
    assert tokens["new_rider"] is True
    profile = me(api, tokens).json()
    assert (profile["name"], profile["city_code"], profile["wechat_bound"], profile["phone"]) == (
        "Wang Fang",
        "SZ",
        True,
        None,
    )
    [asked] = wechat_login.requests
    assert {k: asked[k] for k in ("appid", "secret", "grant_type")} == {
        "appid": "wx0123456789abcdef",
        "secret": "fake-mini-program-secret",
        "grant_type": "authorization_code",
    }


def test_a_returning_wechat_user_signs_in_as_the_same_rider(
    api: TestClient,
    wechat_login: WeChatLoginFake,
) -> None:
    first = wechat_sign_in(api, wechat_login.code_for("o-user"), city_code="SH").json()
    again = wechat_sign_in(api, wechat_login.code_for("o-user")).json()

    assert (again["rider_id"], again["new_rider"]) == (first["rider_id"], False)


def test_a_login_code_wechat_does_not_take_is_unauthorized(
    api: TestClient,
    wechat_login: WeChatLoginFake,
) -> None:
    code = wechat_login.code_for("o-user")
    assert wechat_sign_in(api, code, city_code="SH").status_code == 200

    used = wechat_sign_in(api, code)
    assert_unauthorized(used, "wechat_code_invalid")
    assert used.json()["code"] == 40163
    assert_unauthorized(wechat_sign_in(api, "never-issued"), "wechat_code_invalid")


def test_a_busy_wechat_is_unavailable(api: TestClient, wechat_login: WeChatLoginFake) -> None:
    wechat_login.fail_next(-1, "system error")

    response = wechat_sign_in(api, wechat_login.code_for("o-user"), city_code="SH")
    assert response.status_code == 503
    assert response.json()["code"] == -1


def test_a_wechat_user_it_blocks_is_refused(api: TestClient, wechat_login: WeChatLoginFake) -> None:
    wechat_login.fail_next(40226, "high risk user")

    response = wechat_sign_in(api, wechat_login.code_for("o-user"), city_code="SH")
    assert (response.status_code, response.json()["reason"]) == (422, "wechat_refused")


def test_wechat_sign_in_is_unavailable_without_its_secret(settings: Settings) -> None:
    with serve(settings, wechat_secret=None) as api:
        assert wechat_sign_in(api, "any").status_code == 503


# ------------------------------------------------------------------------------------------- tokens


def test_an_access_token_expires(settings: Settings) -> None:
    with serve(settings, access_ttl_s=0.5) as api:
        tokens = signed_in(api)
        assert me(api, tokens).status_code == 200
        time.sleep(0.6)

        assert_unauthorized(me(api, tokens), challenge=INVALID_TOKEN)


def test_a_refresh_rotates_the_pair(api: TestClient) -> None:
    tokens = signed_in(api)

    refreshed = api.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert refreshed.status_code == 200
    assert refreshed.headers["Cache-Control"] == "no-store"
    new = refreshed.json()
    assert new["rider_id"] == tokens["rider_id"]
    assert {new["access_token"], new["refresh_token"]}.isdisjoint({tokens["access_token"], tokens["refresh_token"]})
    assert me(api, new).status_code == 200
    assert api.post("/v1/auth/refresh", json={"refresh_token": new["refresh_token"]}).status_code == 200


def test_a_reused_refresh_token_revokes_every_token_of_its_sign_in(api: TestClient) -> None:
    tokens = signed_in(api)
    new = api.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).json()

    reused = api.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_unauthorized(reused, "refresh_token_reused", INVALID_TOKEN)
    assert_unauthorized(
        api.post("/v1/auth/refresh", json={"refresh_token": new["refresh_token"]}), challenge=INVALID_TOKEN
    )
    assert_unauthorized(me(api, new), challenge=INVALID_TOKEN)
    assert_unauthorized(me(api, tokens), challenge=INVALID_TOKEN)


def test_a_reused_refresh_token_leaves_the_riders_other_sign_ins_alone(api: TestClient) -> None:
    phone_app = signed_in(api)
    other_device = sign_in(api, send_code(api)).json()
    api.post("/v1/auth/refresh", json={"refresh_token": phone_app["refresh_token"]})

    api.post("/v1/auth/refresh", json={"refresh_token": phone_app["refresh_token"]})
    assert me(api, other_device).status_code == 200


def test_an_expired_refresh_token_does_not_refresh(settings: Settings) -> None:
    with serve(settings, refresh_ttl_s=0.3) as api:
        tokens = signed_in(api)
        time.sleep(0.4)

        response = api.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
        assert_unauthorized(response, "refresh_token_expired", INVALID_TOKEN)


def test_signing_out_revokes_the_access_token_and_its_refresh_token(api: TestClient) -> None:
    tokens = signed_in(api)

    assert api.post("/v1/auth/sign-out", headers=bearer(tokens["access_token"])).status_code == 204
    assert_unauthorized(me(api, tokens), challenge=INVALID_TOKEN)
    response = api.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_unauthorized(response, "refresh_token_invalid", INVALID_TOKEN)


async def test_an_operators_token_has_no_profile_and_does_not_expire(api: TestClient, db: Database) -> None:
    admin = await admin_headers(db)

    assert api.get("/v1/me", headers=admin).status_code == 403
    assert api.post("/v1/auth/sign-out", headers=admin).status_code == 403
    assert api.get("/v1/ops/alerts", headers=admin).status_code == 200


def test_every_401_carries_its_challenge(api: TestClient) -> None:
    assert_unauthorized(api.get("/v1/me"))
    assert_unauthorized(api.get("/v1/me", headers=bearer("sf_not-a-token")), challenge=INVALID_TOKEN)
    assert_unauthorized(api.post("/v1/auth/sign-out"))
    assert_unauthorized(sign_in(api, "123456"), "code_invalid")
    assert_unauthorized(api.post("/v1/auth/refresh", json={"refresh_token": "sfr_nope"}), challenge=INVALID_TOKEN)


# ------------------------------------------------------------------------------ the dev inbox, the rest


def test_the_dev_inbox_is_off_unless_enabled(settings: Settings) -> None:
    with serve(settings, dev_inbox=False) as api:
        assert api.post("/v1/auth/phone/codes", json={"phone": PHONE}).status_code == 202

        assert api.get("/v1/dev/sms-inbox", params={"phone": PHONE}).status_code == 404


def test_the_dev_inbox_is_on_by_default_only_on_the_embedded_stack(settings: Settings) -> None:
    from swapflow.services.rider_accounts import dev_inbox_enabled

    unset = settings.updated(rider_auth={"dev_inbox": None})
    assert dev_inbox_enabled(unset.updated(database_url=None))
    assert not dev_inbox_enabled(unset)


def test_the_document_declares_which_endpoints_take_the_bearer_token(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    paths = document["paths"]

    assert document["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A rider's or an operator account's API token.",
    }
    for path in ("/v1/auth/phone/codes", "/v1/auth/phone/sign-in", "/v1/auth/wechat/sign-in", "/v1/auth/refresh"):
        assert "security" not in paths[path]["post"], path
    assert "security" not in paths["/v1/dev/sms-inbox"]["get"]
    assert paths["/v1/me"]["get"]["security"] == [{"HTTPBearer": []}]
    assert paths["/v1/auth/sign-out"]["post"]["security"] == [{"HTTPBearer": []}]
    assert "429" in paths["/v1/auth/phone/codes"]["post"]["responses"]
    assert "401" in paths["/v1/auth/phone/sign-in"]["post"]["responses"]


async def test_signed_up_riders_keep_the_invariants(api: TestClient, db: Database) -> None:
    signed_in(api, referral_code="SH-AGENT")
    signed_in(api, OTHER_PHONE, city_code="BER")

    assert (await check_invariants(db)).violations == []
