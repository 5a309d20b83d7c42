"""Commissions in the database and the ledger: what a completed swap accrues to its partners, and what a
refund of it reverses. The arithmetic is `swapflow.domain.commissions`; this module finds its inputs and
books its results.

Accrual: a completed swap that recognised revenue accrues its partners' commissions in the transaction
that books that revenue (`activities/swap.py`), on the revenue recognised (net of discounts). Its
partners are the host of its cabinet's station (`station_hosts`), the franchisee of the station's city
(`city_franchisees`), and the agent its rider is attributed to (`partner_attributions`) with that agent's
ancestors (`partners.parent_id`), who earn the overrides of the agent's plan. Each earns under the plan
it is assigned at the swap's completion (the latest `plan_assignments` at or before it), in that plan's
version in force then. Each line is a `commission_accruals` row keyed
`swap:<order>:<partner>:<kind>[:<level>]`, and the swap books one ledger transaction
`swap:<order>:commission` (`commission_accrual`): debit commission expense, credit each partner's
payable. A free swap recognises no revenue and accrues nothing; an inactive partner earns nothing. A
partner set up so that it cannot earn on the swap (its plan in another currency than the swap's, a
station's host that is not a host) earns nothing and a warning is logged: a swap never fails for its
commissions.

Reversal: a refund of a completed swap, of any amount, reverses all of that swap's commissions, in the
transaction that books the refund's contra-revenue (`activities/refund.py`). An accrual not yet frozen
into a settlement run (`run_id` NULL) is marked reversed (`reversed_by_refund_id`, `reversed_at`) and no
run ever sees it; one already in a run is clawed back: a `commission_clawbacks` row (its `run_id` NULL)
that the partner's next run deducts. One ledger transaction `refund:<refund>:commission`
(`commission_reversal`): credit commission expense, debit each partner's payable. A second refund of the
swap finds nothing left to reverse.

Cost: who hosts the station, franchises the city and brought the rider are read with each swap, in one
query. The partners, their plan assignments and the plans' versions (the book) come from a cache per
process and database, reloaded when older than `BOOK_TTL_S` or when a swap names a partner it does not
know: a new partner earns from its first swap, and a change to existing partners or plans reaches swaps
within `BOOK_TTL_S` seconds.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import exists, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from swapflow.db.base import table_of
from swapflow.db.commissions import (
    CityFranchisee,
    CommissionAccrual,
    CommissionClawback,
    CommissionPlanVersion,
    PartnerAttribution,
    PlanAssignment,
    StationHost,
)
from swapflow.db.commissions import Partner as PartnerRow
from swapflow.db.network import Cabinet, Station
from swapflow.db.swaps import SwapOrder
from swapflow.domain.clock import utcnow
from swapflow.domain.commissions import (
    Accrual,
    CompletedSwap,
    Partner,
    PartnerKind,
    PlanVersion,
    Tier,
    accrue,
    plan_in_force,
)
from swapflow.payments.ledger import COMMISSION_EXPENSE, Posting, partner_payable, post_transaction

log = logging.getLogger(__name__)

BOOK_TTL_S = 5.0
"""How old the cached partners and plans may be: a change to them reaches swaps within this."""

ACCRUAL, REVERSAL = "commission_accrual", "commission_reversal"


def accrual_key(order_id: str, accrual: Accrual) -> str:
    """The business key of one accrual line: `swap:<order>:<partner>:<kind>[:<level>]`."""
    level = f":{accrual.level}" if accrual.level is not None else ""
    return f"swap:{order_id}:{accrual.partner_id}:{accrual.kind}{level}"


def accrual_transaction_key(order_id: str) -> str:
    return f"swap:{order_id}:commission"


def reversal_transaction_key(refund_id: str) -> str:
    return f"refund:{refund_id}:commission"


# ------------------------------------------------------------------------------------------ the book


@dataclass(frozen=True)
class _Book:
    """Partners and plans as of `loaded_at` (monotonic seconds)."""

    loaded_at: float
    known: frozenset[str] = frozenset()  # every partner row's id, the unusable ones' too
    partners: Mapping[str, Partner] = field(default_factory=dict)
    inactive: frozenset[str] = frozenset()
    # Per partner: its assignments' (effective_from, plan id), ascending.
    assignments: Mapping[str, Sequence[tuple[datetime, str]]] = field(default_factory=dict)
    versions: Mapping[str, Sequence[PlanVersion]] = field(default_factory=dict)

    def plan_versions(self, partner_id: str, at: datetime) -> Sequence[PlanVersion]:
        """The versions of the plan the partner is assigned at `at` (none if unassigned then)."""
        assigned = self.assignments.get(partner_id, ())
        n = bisect.bisect_right(assigned, at, key=lambda assignment: assignment[0])
        return self.versions.get(assigned[n - 1][1], ()) if n else ()


_books: dict[str, _Book] = {}


def _partner(row: PartnerRow) -> Partner | None:
    try:
        kind = PartnerKind(row.kind)
    except ValueError:
        log.warning("partner %s has an unknown kind %r: it earns nothing", row.id, row.kind)
        return None
    parent = row.parent_id if kind == PartnerKind.CHANNEL_AGENT and row.parent_id != row.id else None
    return Partner(id=row.id, kind=kind, parent_id=parent)


def _version(row: CommissionPlanVersion) -> PlanVersion | None:
    try:
        return PlanVersion(
            plan_id=row.plan_id,
            version=row.version,
            effective_from=row.effective_from,
            currency=row.currency,
            percent_bp=row.percent_bp,
            fixed_minor=row.fixed_minor,
            tiers=tuple(Tier.model_validate(tier) for tier in row.tiers),
            overrides_bp=tuple(row.overrides_bp),
            cap_minor=row.cap_minor,
            minimum_payout_minor=row.minimum_payout_minor,
        )
    except ValidationError as invalid:
        log.warning("plan %s v%s is invalid, ignored: %s", row.plan_id, row.version, invalid)
        return None


async def _load_book(session: AsyncSession) -> _Book:
    known: set[str] = set()
    partners: dict[str, Partner] = {}
    inactive: set[str] = set()
    for row in await session.scalars(select(PartnerRow)):
        known.add(row.id)
        partner = _partner(row)
        if partner is not None:
            partners[row.id] = partner
            if not row.active:
                inactive.add(row.id)
    assignments: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for partner_id, effective_from, plan_id in await session.execute(
        select(PlanAssignment.partner_id, PlanAssignment.effective_from, PlanAssignment.plan_id).order_by(
            PlanAssignment.effective_from
        )
    ):
        assignments[partner_id].append((effective_from, plan_id))
    versions: dict[str, list[PlanVersion]] = defaultdict(list)
    for version_row in await session.scalars(select(CommissionPlanVersion)):
        version = _version(version_row)
        if version is not None:
            versions[version.plan_id].append(version)
    return _Book(
        loaded_at=time.monotonic(),
        known=frozenset(known),
        partners=partners,
        inactive=frozenset(inactive),
        assignments=dict(assignments),
        versions=dict(versions),
    )


async def _book(session: AsyncSession, naming: Iterable[str]) -> _Book:
    """The cached book of this session's database, reloaded if stale or if it lacks a partner `naming` names."""
    key = str(session.get_bind().engine.url)
    book = _books.get(key)
    if book is None or time.monotonic() - book.loaded_at > BOOK_TTL_S or any(p not in book.known for p in naming):
        book = _books[key] = await _load_book(session)
    return book


# ------------------------------------------------------------------------------------------ accrual


def _as(book: _Book, partner_id: str | None, kind: PartnerKind, what: str) -> Partner | None:
    partner = book.partners.get(partner_id) if partner_id is not None else None
    if partner is not None and partner.kind != kind:
        log.warning("partner %s is the %s but a %s: it earns nothing as such", partner.id, what, partner.kind)
        return None
    return partner


def _agent_chain(book: _Book, agent_id: str | None) -> list[Partner]:
    """The agent the rider is attributed to, then its ancestors, parent first (stopping at a loop)."""
    chain: list[Partner] = []
    agent = _as(book, agent_id, PartnerKind.CHANNEL_AGENT, "rider's agent")
    while agent is not None and agent.id not in {known.id for known in chain}:
        chain.append(agent)
        parent = book.partners.get(agent.parent_id) if agent.parent_id is not None else None
        agent = parent if parent is not None and parent.kind == PartnerKind.CHANNEL_AGENT else None
    return chain


def _plans(book: _Book, partners: Iterable[Partner], at: datetime, currency: str) -> dict[str, Sequence[PlanVersion]]:
    plans: dict[str, Sequence[PlanVersion]] = {}
    for partner in partners:
        versions = book.plan_versions(partner.id, at)
        in_force = plan_in_force(versions, at)
        if in_force is not None and in_force.currency != currency:
            log.warning(
                "partner %s earns nothing on a swap in %s: its plan %s v%s is in %s",
                partner.id,
                currency,
                in_force.plan_id,
                in_force.version,
                in_force.currency,
            )
            continue
        plans[partner.id] = versions
    return plans


async def accrue_swap(
    session: AsyncSession, order: SwapOrder, net_minor: int, completed_at: datetime
) -> tuple[Accrual, ...]:
    """Accrue the commissions of a swap completed at `completed_at` that recognised `net_minor` of revenue:
    its `commission_accruals` rows and ledger transaction, in the caller's transaction. Returns the lines
    booked now (none if the swap had accrued already, or no partner earns on it)."""
    if not order.currency:
        return ()
    attributed = (
        select(PartnerAttribution.partner_id).where(PartnerAttribution.rider_id == order.rider_id).scalar_subquery()
    )
    # On the session's connection, as Core: the ORM's statement handling would cost as much again.
    connection = await session.connection()
    found = (
        await connection.execute(
            select(
                StationHost.partner_id,
                CityFranchisee.partner_id,
                attributed,
                exists().where(CommissionAccrual.order_id == order.id),
            )
            .select_from(Cabinet)
            .join(Station, Station.id == Cabinet.station_id)
            .outerjoin(StationHost, StationHost.station_id == Station.id)
            .outerjoin(CityFranchisee, CityFranchisee.city_code == Station.city_code)
            .where(Cabinet.id == order.cabinet_id)
        )
    ).one_or_none()
    if found is None:
        return ()
    host_id, franchisee_id, agent_id, accrued = found
    if accrued:
        return ()
    named = [partner for partner in (host_id, franchisee_id, agent_id) if partner is not None]
    if not named:
        return ()
    book = await _book(session, named)
    host = _as(book, host_id, PartnerKind.STATION_HOST, "station's host")
    franchisee = _as(book, franchisee_id, PartnerKind.CITY_FRANCHISEE, "city's franchisee")
    agents = _agent_chain(book, agent_id)
    earning = [partner for partner in (host, franchisee, *agents[:1]) if partner is not None]
    swap = CompletedSwap(id=order.id, completed_at=completed_at, net_revenue_minor=net_minor, currency=order.currency)
    lines = tuple(
        line
        for line in accrue(
            swap,
            host=host,
            franchisee=franchisee,
            agents=agents,
            plans=_plans(book, earning, completed_at, swap.currency),
        )
        if line.partner_id not in book.inactive
    )
    if not lines:
        return ()
    await connection.execute(
        insert(table_of(CommissionAccrual)),
        [
            {
                "key": accrual_key(order.id, line),
                "order_id": order.id,
                "partner_id": line.partner_id,
                "role": line.role,
                "kind": line.kind,
                "level": line.level,
                "amount_minor": line.amount_minor,
                "currency": line.currency,
                "plan_id": line.plan_id,
                "plan_version": line.plan_version,
                "basis_minor": line.basis_minor,
                "rate_bp": line.rate_bp,
                "at": line.at,
            }
            for line in lines
        ],
    )
    await _book_to_payables(
        session,
        key=accrual_transaction_key(order.id),
        kind=ACCRUAL,
        currency=swap.currency,
        order_id=order.id,
        memo="swap completed: partners' commissions accrued",
        owed=[(line.partner_id, line.amount_minor) for line in lines],
    )
    return lines


async def _book_to_payables(
    session: AsyncSession,
    *,
    key: str,
    kind: str,
    currency: str,
    order_id: str,
    memo: str,
    owed: Iterable[tuple[str, int]],
) -> None:
    """One transaction between commission expense and the partners' payables: `owed` is what each partner
    is owed more (less, if negative). Nothing is posted when it all comes to nothing."""
    per_partner: dict[str, int] = defaultdict(int)
    for partner_id, amount in owed:
        per_partner[partner_id] += amount
    # Every amount has the same sign (all accrued, or all reversed): a total of 0 means nothing to post.
    total = sum(per_partner.values())
    if not total:
        return
    postings = [Posting(COMMISSION_EXPENSE, total)]
    postings += [Posting(partner_payable(p), -amount) for p, amount in sorted(per_partner.items()) if amount]
    await post_transaction(
        session, key=key, kind=kind, currency=currency, order_id=order_id, memo=memo, postings=postings
    )


# ------------------------------------------------------------------------------------------ reversal


async def reverse_swap_accruals(session: AsyncSession, order_id: str, refund_id: str) -> int:
    """Reverse every commission of a completed swap the refund `refund_id` refunds, in the caller's
    transaction: unfrozen accruals are marked reversed, frozen ones clawed back. Returns how many accruals
    this reversed or clawed back (none if an earlier refund of the swap already had)."""
    now = utcnow()
    # Conditional: an accrual a settlement run froze meanwhile is left to the clawbacks below.
    unfrozen = (
        await session.execute(
            update(CommissionAccrual)
            .where(
                CommissionAccrual.order_id == order_id,
                CommissionAccrual.run_id.is_(None),
                CommissionAccrual.reversed_by_refund_id.is_(None),
            )
            .values(reversed_by_refund_id=refund_id, reversed_at=now)
            .returning(CommissionAccrual.partner_id, CommissionAccrual.amount_minor, CommissionAccrual.currency)
            .execution_options(synchronize_session=False)
        )
    ).all()
    frozen = (
        await session.execute(
            select(
                CommissionAccrual.id,
                CommissionAccrual.partner_id,
                CommissionAccrual.amount_minor,
                CommissionAccrual.currency,
            ).where(
                CommissionAccrual.order_id == order_id,
                CommissionAccrual.run_id.is_not(None),
                CommissionAccrual.reversed_by_refund_id.is_(None),
                ~exists().where(CommissionClawback.accrual_id == CommissionAccrual.id),
            )
        )
    ).all()
    if frozen:
        await session.execute(
            insert(CommissionClawback),
            [
                {
                    "accrual_id": accrual_id,
                    "refund_id": refund_id,
                    "partner_id": partner_id,
                    "amount_minor": amount,
                    "currency": currency,
                    "at": now,
                }
                for accrual_id, partner_id, amount, currency in frozen
            ],
        )
    reversed_ = [(partner_id, amount, currency) for partner_id, amount, currency in unfrozen] + [
        (partner_id, amount, currency) for _, partner_id, amount, currency in frozen
    ]
    if reversed_:
        await _book_to_payables(
            session,
            key=reversal_transaction_key(refund_id),
            kind=REVERSAL,
            currency=reversed_[0][2],  # a swap accrues in its own currency only
            order_id=order_id,
            memo=f"refund {refund_id}: the swap's commissions reversed",
            owed=[(partner_id, -amount) for partner_id, amount, _ in reversed_],
        )
    return len(reversed_)
