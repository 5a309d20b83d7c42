"""Riders' wallets: the balance and its movements; top-ups, opened once per Idempotency-Key and collected
by workflow `topup/<id>`, which `start_top_up` starts (the one place that says how); finance's goodwill
credits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.engine import Database
from swapflow.db.money import GoodwillCredit, Wallet, WalletEntry, WalletTopUp
from swapflow.db.network import City, Rider
from swapflow.domain.errors import Conflict, NotFound
from swapflow.payments.confirmation import confirmation_params
from swapflow.payments.topups import TopUpRefused, grant_goodwill, open_top_up
from swapflow.services.idempotency import create_once
from swapflow.services.temporal import TemporalConnector, connect, start_once
from swapflow.settings import Settings
from swapflow.workflows.topup import TopUpWorkflow
from swapflow.workflows.topup_contract import TopUpStart, top_up_workflow_id


async def rider_currency(session: AsyncSession, rider_id: str) -> str:
    """The currency of the rider's city, which their wallet holds (NotFound: no such rider)."""
    rider = await session.get(Rider, rider_id)
    if rider is None:
        raise NotFound("rider", rider_id)
    city = await session.get(City, rider.city_code)
    if city is None:
        raise RuntimeError(f"rider {rider_id!r} lives in city {rider.city_code!r}, which is not stored")
    return city.currency


async def find_wallet(session: AsyncSession, rider_id: str) -> Wallet:
    """The rider's wallet; NotFound for an unknown rider, or one who has never topped up."""
    wallet = await session.get(Wallet, rider_id)
    if wallet is None:
        if await session.get(Rider, rider_id) is None:
            raise NotFound("rider", rider_id)
        raise NotFound("wallet", rider_id, detail=f"rider {rider_id!r} has never topped up")
    return wallet


async def start_top_up(temporal: TemporalConnector, settings: Settings, top_up: WalletTopUp) -> None:
    """Start the workflow that collects an opened top-up (once: a finished one is never started again).
    Unavailable while Temporal is unreachable; the top-up stays pending, and the same request starts it."""
    client = await connect(temporal, "Top-ups unavailable")
    await start_once(
        client,
        TopUpWorkflow.run,
        TopUpStart(top_up_id=top_up.id, pending_timeout_s=settings.payments.payment_pending_timeout_s),
        workflow_id=top_up_workflow_id(top_up.id),
        task_queue=settings.temporal.task_queue,
    )


async def open_rider_top_up(
    session: AsyncSession, *, rider_id: str, amount_minor: int, idempotency_key: str
) -> tuple[WalletTopUp, bool]:
    """The rider's top-up under `idempotency_key`, opened now (pending) if new, in their city's currency.
    Returns (top-up, created)."""
    currency = await rider_currency(session, rider_id)

    async def find() -> WalletTopUp | None:
        return await session.scalar(
            select(WalletTopUp).where(WalletTopUp.rider_id == rider_id, WalletTopUp.idempotency_key == idempotency_key)
        )

    def differs(top_up: WalletTopUp) -> str | None:
        if top_up.amount_minor != amount_minor:
            return f"Idempotency-Key {idempotency_key!r} was used for a top-up of {top_up.amount_minor}"
        return None

    async def create() -> WalletTopUp:
        try:
            return await open_top_up(
                session,
                rider_id=rider_id,
                idempotency_key=idempotency_key,
                amount_minor=amount_minor,
                currency=currency,
            )
        except TopUpRefused as refused:
            raise Conflict("Top-up refused", str(refused)) from None

    return await create_once(session, find=find, differs=differs, create=create, reused_title="Top-up refused")


async def top_up(
    db: Database,
    settings: Settings,
    temporal: TemporalConnector,
    *,
    rider_id: str,
    amount_minor: int,
    idempotency_key: str,
) -> tuple[WalletTopUp, bool]:
    """Open the rider's top-up (once per key) and start collecting it. Returns (top-up, created)."""
    async with db.transaction() as session:
        opened, created = await open_rider_top_up(
            session, rider_id=rider_id, amount_minor=amount_minor, idempotency_key=idempotency_key
        )
    await start_top_up(temporal, settings, opened)
    return opened, created


async def find_top_up(session: AsyncSession, rider_id: str, top_up_id: str) -> WalletTopUp:
    """The rider's top-up, or NotFound."""
    found = await session.get(WalletTopUp, top_up_id)
    if found is None or found.rider_id != rider_id:
        raise NotFound("top-up", top_up_id)
    return found


async def top_up_confirmation(session: AsyncSession, top_up: WalletTopUp) -> dict[str, Any] | None:
    """While the top-up's payment waits for the rider: what their app confirms it with."""
    return await confirmation_params(session, top_up.payment_key)


async def credit_goodwill(
    session: AsyncSession, *, rider_id: str, amount_minor: int, reason: str, approved_by: str, idempotency_key: str
) -> tuple[GoodwillCredit, bool]:
    """Finance's credit of the rider's wallet without a payment, once per key. Returns (credit, created)."""
    currency = await rider_currency(session, rider_id)

    async def find() -> GoodwillCredit | None:
        return await session.scalar(
            select(GoodwillCredit).where(
                GoodwillCredit.rider_id == rider_id, GoodwillCredit.idempotency_key == idempotency_key
            )
        )

    def differs(credit: GoodwillCredit) -> str | None:
        if credit.amount_minor != amount_minor:
            return f"Idempotency-Key {idempotency_key!r} was used for a credit of {credit.amount_minor}"
        return None

    async def create() -> GoodwillCredit:
        try:
            return await grant_goodwill(
                session,
                rider_id=rider_id,
                idempotency_key=idempotency_key,
                amount_minor=amount_minor,
                currency=currency,
                reason=reason,
                approved_by=approved_by,
            )
        except TopUpRefused as refused:
            raise Conflict("Credit refused", str(refused)) from None

    return await create_once(session, find=find, differs=differs, create=create, reused_title="Credit refused")


@dataclass(frozen=True)
class EntryPage:
    """A page of wallet movements, newest first, and the cursor of the next page (None: this was the last)."""

    entries: list[WalletEntry]
    next_cursor: str | None


async def wallet_entries(session: AsyncSession, rider_id: str, *, cursor: str | None = None, limit: int) -> EntryPage:
    """The rider's wallet movements, newest first, at most `limit`; `cursor` is the previous page's
    `next_cursor` (the last entry it showed): NotFound unless it names an entry of the rider's."""
    if await session.get(Rider, rider_id) is None:
        raise NotFound("rider", rider_id)
    query = select(WalletEntry).where(WalletEntry.rider_id == rider_id)
    if cursor is not None:
        last = await session.get(WalletEntry, cursor)
        if last is None or last.rider_id != rider_id:
            raise NotFound("wallet entry", cursor, detail=f"cursor {cursor!r} names no entry of this wallet")
        query = query.where(or_(WalletEntry.at < last.at, and_(WalletEntry.at == last.at, WalletEntry.id < last.id)))
    found = list(await session.scalars(query.order_by(WalletEntry.at.desc(), WalletEntry.id.desc()).limit(limit + 1)))
    entries = found[:limit]
    return EntryPage(entries=entries, next_cursor=entries[-1].id if len(found) > limit else None)
