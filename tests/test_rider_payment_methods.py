"""A rider's payment methods over HTTP, against the real database, the WeChat Pay v3 fake's settings and
localstripe: several per rider and one default, which swaps are charged through (none: the sandbox);
WeChat Pay bound to the openid the rider signed in with; a card saved through a Stripe SetupIntent that
the test confirms as Stripe.js does (localstripe takes the publishable key and the client secret on
`/v1/setup_intents/{id}/confirm`), recorded only once Stripe itself says it succeeded; and the one-row
methods of before migrated to each rider's default."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx
import pytest
import stripe
from alembic.script import ScriptDirectory
from sqlalchemy import select, text, update
from temporalio.client import Client

from swapflow.api.app import create_app
from swapflow.db.engine import Database, create_sync_engine
from swapflow.db.migrate import alembic_config, upgrade
from swapflow.db.money import Payment, RiderPaymentMethod
from swapflow.db.network import Rider
from swapflow.domain.ops import OperatorRole
from swapflow.payments.provider import PaymentMethod
from swapflow.payments.refunds import charge_key
from swapflow.payments.registry import PayerMethod, payer_method
from swapflow.settings import Settings
from tests.money_harness import OTHER_RIDER, RIDER, Money
from tests.ops_harness import bearer, operator_token, rider_token
from tests.payment_fakes import localstripe_url, stripe_settings_values, wechat_fake  # noqa: F401  (fixtures)
from tests.wechat_fake import WeChatPayFake

OPENID = "o-rider-sh-0001"
METHODS = f"/v1/riders/{RIDER}/payment-methods"
VISA = "pm_card_visa"  # localstripe's Visa ending 4242
NEEDS_AUTHENTICATION = {"number": "4000002500003155", "exp_month": "12", "exp_year": "2030", "cvc": "123"}

Caller = Callable[[dict[str, str]], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def settings(settings: Settings, wechat_fake: WeChatPayFake, localstripe_url: str) -> Settings:
    return settings.updated(wechat=wechat_fake.settings_values(), stripe=stripe_settings_values(localstripe_url))


@pytest.fixture
def caller(settings: Settings, db: Database) -> Caller:
    """An API client with the given headers (no Temporal: these endpoints need none)."""
    app = create_app(settings)
    app.state.settings, app.state.db = settings, db

    async def no_temporal() -> Client:
        raise RuntimeError("no Temporal in these tests")

    app.state.temporal = no_temporal

    @asynccontextmanager
    async def client(headers: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api", headers=headers) as api:
            yield api

    return client


@pytest.fixture
async def api(caller: Caller, db: Database) -> AsyncIterator[httpx.AsyncClient]:
    """The API called with the rider's own token."""
    async with caller(bearer(await rider_token(db, RIDER))) as client:
        yield client


@pytest.fixture
def localstripe(localstripe_url: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_swapflow", base_addresses={"api": localstripe_url}, http_client=stripe.HTTPXClient()
    )


async def signed_in_with_wechat(db: Database, rider_id: str = RIDER, openid: str = OPENID) -> None:
    async with db.transaction() as session:
        await session.execute(update(Rider).where(Rider.id == rider_id).values(wechat_openid=openid))


async def how_pays(db: Database, rider_id: str = RIDER) -> PayerMethod:
    async with db.sessions() as session:
        return await payer_method(session, rider_id)


async def confirm_as_stripe_js(localstripe_url: str, setup: dict[str, Any], **card: Any) -> None:
    """What Stripe.js `confirmCardSetup` sends: the publishable key and the client secret, with the card."""
    data: dict[str, str] = {"key": setup["publishable_key"], "client_secret": setup["client_secret"]}
    if "payment_method" in card:
        data["payment_method"] = card["payment_method"]
    else:
        data["payment_method_data[type]"] = "card"
        data.update({f"payment_method_data[card][{name}]": value for name, value in card["number"].items()})
    async with httpx.AsyncClient(base_url=localstripe_url) as js:
        await js.post(f"/v1/setup_intents/{setup['setup_intent_id']}/confirm", data=data)


async def saved_card(api: httpx.AsyncClient, localstripe_url: str, card: str = VISA) -> dict[str, Any]:
    """A card saved the way the rider's page saves one."""
    setup = (await api.post(f"{METHODS}/stripe/setup-intents")).json()
    await confirm_as_stripe_js(localstripe_url, setup, payment_method=card)
    saved = await api.post(f"{METHODS}/stripe", json={"setup_intent_id": setup["setup_intent_id"]})
    assert saved.status_code == 201, saved.json()
    return dict(saved.json())


async def bound_wechat(api: httpx.AsyncClient, db: Database) -> dict[str, Any]:
    await signed_in_with_wechat(db)
    bound = await api.post(f"{METHODS}/wechat")
    assert bound.status_code == 201, bound.json()
    return dict(bound.json())


# ------------------------------------------------------------------------------------------ defaults


async def test_a_rider_without_methods_lists_none_and_pays_by_the_sandbox(api: httpx.AsyncClient, db: Database) -> None:
    listed = await api.get(METHODS)
    assert (listed.status_code, listed.json()) == (200, [])
    assert await how_pays(db) == PayerMethod(PaymentMethod.SANDBOX, None)


async def test_a_swap_is_charged_through_the_default_method_not_the_newest(
    api: httpx.AsyncClient, db: Database, settings: Settings
) -> None:
    money = await Money(db, settings).ready()
    await money.wallet_rider(5_000)  # the wallet, the default
    await bound_wechat(api, db)  # newer, not the default
    order_id = await money.charged()
    async with db.sessions() as session:
        charge = await session.scalar(select(Payment).where(Payment.key == charge_key(order_id)))
    assert charge is not None and charge.method == PaymentMethod.WALLET


# ------------------------------------------------------------------------------------------ WeChat Pay


async def test_wechat_pay_is_bound_to_the_openid_the_rider_signed_in_with_as_their_first_default(
    api: httpx.AsyncClient, db: Database
) -> None:
    method = await bound_wechat(api, db)
    assert (method["method"], method["label"], method["is_default"]) == ("wechat", "WeChat Pay", True)
    assert await how_pays(db) == PayerMethod(PaymentMethod.WECHAT, OPENID)


async def test_binding_wechat_pay_again_answers_the_method_already_bound(api: httpx.AsyncClient, db: Database) -> None:
    first = await bound_wechat(api, db)
    again = await api.post(f"{METHODS}/wechat")
    assert (again.status_code, again.json()["id"]) == (200, first["id"])
    assert len((await api.get(METHODS)).json()) == 1


async def test_a_rider_who_did_not_sign_in_with_wechat_cannot_bind_wechat_pay(api: httpx.AsyncClient) -> None:
    refused = await api.post(f"{METHODS}/wechat")
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["reason"] == "no_wechat_openid"


# ------------------------------------------------------------------------------------------ cards


async def test_a_card_setup_answers_what_stripe_js_confirms_it_with(
    api: httpx.AsyncClient, localstripe: stripe.StripeClient
) -> None:
    setup = await api.post(f"{METHODS}/stripe/setup-intents")
    assert setup.status_code == 201, setup.json()
    body = setup.json()
    assert body["publishable_key"] == "pk_test_swapflow"
    intent = await localstripe.v1.setup_intents.retrieve_async(body["setup_intent_id"])
    assert (intent.client_secret, intent.status) == (body["client_secret"], "requires_payment_method")


async def test_the_riders_stripe_customer_is_made_once_and_used_for_every_card_setup(
    api: httpx.AsyncClient, localstripe: stripe.StripeClient
) -> None:
    intents = [(await api.post(f"{METHODS}/stripe/setup-intents")).json()["setup_intent_id"] for _ in range(2)]
    customers = {(await localstripe.v1.setup_intents.retrieve_async(i)).customer for i in intents}
    assert len(customers) == 1 and None not in customers


async def test_a_confirmed_card_is_saved_with_its_brand_and_last_digits_as_read_from_stripe(
    api: httpx.AsyncClient, db: Database, localstripe_url: str, localstripe: stripe.StripeClient
) -> None:
    card = await saved_card(api, localstripe_url)
    assert (card["method"], card["label"], card["is_default"]) == ("stripe", "Visa ·· 4242", True)
    how = await how_pays(db)
    customer, _, method = (how.payer or "").partition("/")
    assert how.method == PaymentMethod.STRIPE and customer.startswith("cus_") and method.startswith("pm_")
    assert (await localstripe.v1.payment_methods.retrieve_async(method)).customer == customer


async def test_a_card_whose_setup_still_needs_the_riders_authentication_is_not_saved(
    api: httpx.AsyncClient, localstripe_url: str
) -> None:
    setup = (await api.post(f"{METHODS}/stripe/setup-intents")).json()
    await confirm_as_stripe_js(localstripe_url, setup, number=NEEDS_AUTHENTICATION)  # 3-D Secure: requires_action
    refused = await api.post(f"{METHODS}/stripe", json={"setup_intent_id": setup["setup_intent_id"]})
    assert (refused.status_code, refused.json()["setup_intent_status"]) == (409, "requires_action")
    assert (await api.get(METHODS)).json() == []


async def test_a_card_is_not_saved_on_the_pages_word_before_it_is_confirmed(
    api: httpx.AsyncClient, localstripe_url: str
) -> None:
    setup = (await api.post(f"{METHODS}/stripe/setup-intents")).json()
    refused = await api.post(f"{METHODS}/stripe", json={"setup_intent_id": setup["setup_intent_id"]})
    assert (refused.status_code, refused.json()["setup_intent_status"]) == (409, "requires_payment_method")


async def test_another_riders_setup_intent_does_not_exist_for_a_rider(
    api: httpx.AsyncClient, caller: Caller, db: Database, localstripe_url: str
) -> None:
    async with caller(bearer(await rider_token(db, OTHER_RIDER))) as other:
        setup = (await other.post(f"/v1/riders/{OTHER_RIDER}/payment-methods/stripe/setup-intents")).json()
    await confirm_as_stripe_js(localstripe_url, setup, payment_method=VISA)
    await api.post(f"{METHODS}/stripe/setup-intents")  # the rider has a Stripe customer of their own
    taken = await api.post(f"{METHODS}/stripe", json={"setup_intent_id": setup["setup_intent_id"]})
    assert taken.status_code == 404
    assert (await api.get(METHODS)).json() == []


# ------------------------------------------------------------------------------------------ choosing, removing


async def test_a_new_method_leaves_the_default_until_the_rider_chooses_it(
    api: httpx.AsyncClient, db: Database, localstripe_url: str
) -> None:
    wechat = await bound_wechat(api, db)
    card = await saved_card(api, localstripe_url)
    assert card["is_default"] is False
    chosen = await api.put(f"{METHODS}/{card['id']}/default")
    assert (chosen.status_code, chosen.json()["is_default"]) == (200, True)
    listed = await api.get(METHODS)
    assert [(m["id"], m["is_default"]) for m in listed.json()] == [(card["id"], True), (wechat["id"], False)]
    assert (await how_pays(db)).method == PaymentMethod.STRIPE


async def test_removing_the_default_makes_the_newest_remaining_method_the_default(
    api: httpx.AsyncClient, db: Database, localstripe_url: str
) -> None:
    wechat = await bound_wechat(api, db)
    wallet = (await api.post(f"{METHODS}/wallet")).json()
    card = await saved_card(api, localstripe_url)
    assert (await api.delete(f"{METHODS}/{wechat['id']}")).status_code == 204
    listed = (await api.get(METHODS)).json()
    assert [(m["id"], m["is_default"]) for m in listed] == [(card["id"], True), (wallet["id"], False)]


async def test_removing_a_card_detaches_it_at_stripe(
    api: httpx.AsyncClient, db: Database, localstripe_url: str, localstripe: stripe.StripeClient
) -> None:
    card = await saved_card(api, localstripe_url)
    charged_card = (await how_pays(db)).payer or ""
    assert (await api.delete(f"{METHODS}/{card['id']}")).status_code == 204
    assert (await localstripe.v1.payment_methods.retrieve_async(charged_card.partition("/")[2])).customer is None


async def test_removing_the_last_method_returns_the_rider_to_the_sandbox(api: httpx.AsyncClient, db: Database) -> None:
    wechat = await bound_wechat(api, db)
    await api.delete(f"{METHODS}/{wechat['id']}")
    assert (await api.get(METHODS)).json() == []
    assert await how_pays(db) == PayerMethod(PaymentMethod.SANDBOX, None)
    async with db.sessions() as session:
        kept = await session.get(RiderPaymentMethod, wechat["id"])
    assert kept is not None and kept.removed_at is not None  # removed, never forgotten


async def test_a_removed_method_is_not_found_again(api: httpx.AsyncClient, db: Database) -> None:
    wechat = await bound_wechat(api, db)
    await api.delete(f"{METHODS}/{wechat['id']}")
    assert (await api.delete(f"{METHODS}/{wechat['id']}")).status_code == 404
    assert (await api.put(f"{METHODS}/{wechat['id']}/default")).status_code == 404


async def test_a_rider_chooses_to_pay_swaps_from_their_wallet(api: httpx.AsyncClient, db: Database) -> None:
    wallet = await api.post(f"{METHODS}/wallet")
    assert (wallet.status_code, wallet.json()["label"], wallet.json()["is_default"]) == (201, "Wallet", True)
    assert (await how_pays(db)).method == PaymentMethod.WALLET


# ------------------------------------------------------------------------------------------ who


async def test_money_staff_of_the_riders_city_read_the_methods_but_do_not_change_them(
    api: httpx.AsyncClient, caller: Caller, db: Database
) -> None:
    await bound_wechat(api, db)
    async with caller(bearer(await operator_token(db, "finance-sh", OperatorRole.FINANCE, ["SH"]))) as finance:
        assert [m["method"] for m in (await finance.get(METHODS)).json()] == ["wechat"]
        assert (await finance.post(f"{METHODS}/wallet")).status_code == 403


async def test_staff_of_another_city_do_not_see_a_riders_methods(caller: Caller, db: Database) -> None:
    async with caller(bearer(await operator_token(db, "ops-sz", OperatorRole.OPERATOR, ["SZ"]))) as ops:
        assert (await ops.get(METHODS)).status_code == 404


async def test_a_rider_neither_sees_nor_changes_another_riders_methods(api: httpx.AsyncClient) -> None:
    other = f"/v1/riders/{OTHER_RIDER}/payment-methods"
    assert (await api.get(other)).status_code == 404
    assert (await api.post(f"{other}/wallet")).status_code == 404


# ------------------------------------------------------------------------------------------ migration


def test_each_riders_one_method_of_before_becomes_their_default_on_upgrade(empty_database_url: str) -> None:
    config = alembic_config(empty_database_url)
    revision = ScriptDirectory.from_config(config).get_revision("0018")
    assert revision is not None and isinstance(revision.down_revision, str)
    upgrade(empty_database_url, revision.down_revision)
    engine = create_sync_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO cities (code, name, timezone, currency, swap_price_minor) "
                    "VALUES ('SH', 'Shanghai', 'Asia/Shanghai', 'CNY', 600)"
                )
            )
            for rider in ("r1", "r2"):
                conn.execute(
                    text("INSERT INTO riders (id, name, city_code, status) VALUES (:id, :id, 'SH', 'active')"),
                    {"id": rider},
                )
            conn.execute(
                text(
                    "INSERT INTO rider_payment_methods (rider_id, method, payer, updated_at) VALUES "
                    "('r1', 'wechat', 'o-r1', '2026-01-01 00:00:00+00:00'), "
                    "('r2', 'stripe', 'cus_r2/pm_r2', '2026-01-01 00:00:00+00:00')"
                )
            )
        upgrade(empty_database_url)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT rider_id, method, payer, provider_ref, label, is_default, removed_at "
                    "FROM rider_payment_methods ORDER BY rider_id"
                )
            ).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [
        ("r1", "wechat", "o-r1", None, "WeChat Pay", True, None),
        ("r2", "stripe", "cus_r2", "pm_r2", "Card", True, None),
    ]
