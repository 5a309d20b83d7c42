"""Checks that the database keeps the brief's invariants: every battery has exactly one custodian and a
recorded custody trail (invariant 1), every movement of money is balanced and every failed swap that
took money was refunded exactly once (invariant 2), no swap is left half done, and partners'
commissions are settled once each and owed as the ledger says.

The rules are checked in SQL by queries that aggregate in the database and return only the rows that
break a rule, so checking a network of 100k batteries and a million ledger postings moves violations,
not data. All queries read one snapshot: swaps running meanwhile are never seen between two states.
Rules are cut so that one mistake is reported once, under the rule that names it best.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict
from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    Subquery,
    and_,
    case,
    cast,
    distinct,
    exists,
    func,
    literal,
    not_,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import QueryableAttribute, aliased

from swapflow.db.commissions import CommissionAccrual, CommissionClawback, PartnerPayout, SettlementLine, SettlementRun
from swapflow.db.engine import Database, is_sqlite
from swapflow.db.money import (
    GoodwillCredit,
    LedgerPosting,
    LedgerTransaction,
    Payment,
    Refund,
    SandboxPayment,
    Wallet,
    WalletEntry,
    WalletTopUp,
)
from swapflow.db.network import Battery, Slot
from swapflow.db.reservations import Reservation
from swapflow.db.swaps import CustodyDiscrepancy, CustodyEvent, SwapOrder
from swapflow.domain.clock import as_utc, utcnow
from swapflow.domain.commissions import LineKind
from swapflow.domain.network import CustodianKind
from swapflow.domain.reservations import ReservationStatus
from swapflow.domain.swaps import SwapStatus
from swapflow.payments.ledger import DEFERRED_REVENUE, partner_payable
from swapflow.payments.payouts import PayoutStatus
from swapflow.workflows.settlement_contract import RunStatus


class Rule(StrEnum):
    """Stable ids of the rules, `<area>.<what is wrong>`."""

    # A battery's custodian kind is not a CustodianKind, or its reference is empty.
    CUSTODY_NO_CUSTODIAN = "custody.no_custodian"
    # A battery in a slot's custody is not held by exactly that slot (held by none, or by another).
    CUSTODY_SLOT_MISMATCH = "custody.slot_mismatch"
    # A battery in a rider's custody is held by a slot.
    CUSTODY_RIDER_IN_SLOT = "custody.rider_in_slot"
    # A slot holds a battery that is neither in its custody nor quarantined in it (and not a slot's or
    # a rider's battery, which the two rules above report).
    CUSTODY_SLOT_OCCUPANT = "custody.slot_occupant"
    # A rider holds more than one battery.
    CUSTODY_RIDER_HOLDS_MANY = "custody.rider_holds_many"
    # A battery has no custody event at all.
    CUSTODY_NO_EVENTS = "custody.no_events"
    # A battery's latest custody event does not end at its current custodian.
    CUSTODY_LATEST_EVENT_MISMATCH = "custody.latest_event_mismatch"
    # A custody event does not start where the battery's previous event ended.
    CUSTODY_CHAIN_GAP = "custody.chain_gap"
    # A slot in no swap holds, by custody, another pack than its cabinet last reported in it, and no open
    # custody discrepancy has an operator looking at it (a foreign pack locked in its slot is known too).
    CUSTODY_SLOT_REPORT_MISMATCH = "custody.slot_report_mismatch"

    # A ledger transaction's postings do not sum to zero in some currency.
    LEDGER_UNBALANCED = "ledger.unbalanced"
    # A ledger transaction has fewer than two postings.
    LEDGER_TOO_FEW_POSTINGS = "ledger.too_few_postings"

    # A swap has more than one charge.
    MONEY_DOUBLE_CHARGE = "money.double_charge"
    # A completed swap with a price above 0 has no charge.
    MONEY_UNCHARGED_COMPLETION = "money.uncharged_completion"
    # A swap's revenue was not recognised exactly once if it completed (with a price), or was recognised
    # although it did not complete.
    MONEY_REVENUE_COUNT = "money.revenue_count"
    # A completed swap was refunded.
    MONEY_REFUND_ON_COMPLETED = "money.refund_on_completed"
    # A swap was refunded more than once.
    MONEY_MULTIPLE_REFUNDS = "money.multiple_refunds"
    # A failed swap was charged money and never refunded.
    MONEY_UNREFUNDED_FAILURE = "money.unrefunded_failure"
    # A failed swap was refunded less than it was charged.
    MONEY_PARTIAL_REFUND = "money.partial_refund"
    # A swap's refunds exceed its charges.
    MONEY_OVER_REFUND = "money.over_refund"
    # For a finished swap, the payment provider's capture or refunded amount differs from the ledger's.
    MONEY_PROVIDER_MISMATCH = "money.provider_mismatch"
    # A finished swap still holds a deferred-revenue balance no other money rule explains.
    MONEY_DEFERRED_BALANCE = "money.deferred_balance"

    # The refunds opened against a payment add up to more than it captured.
    MONEY_REFUNDS_EXCEED_CAPTURE = "money.refunds_exceed_capture"
    # A failed swap has more than one compensation refund.
    MONEY_DUPLICATE_SWAP_REFUND = "money.duplicate_swap_refund"
    # A refund is still processing past the time it was expected to land (finance must follow it up).
    REFUND_OVERDUE = "refund.overdue"
    # A refund the provider completed was never settled in the ledger (refunds payable not cleared).
    REFUND_UNSETTLED = "refund.unsettled"

    # A wallet credit that no settled payment (a captured top-up of that amount) or goodwill credit (of
    # that amount, with an approver) pays for, or a refund entry that names no charge of the wallet.
    WALLET_UNBACKED_CREDIT = "wallet.unbacked_credit"
    # A wallet's balance is not the sum of its entries (a lost or doubled movement).
    WALLET_BALANCE_MISMATCH = "wallet.balance_mismatch"

    # An accrual frozen in a settlement run of another partner, or outside the run's period, or one a refund
    # reversed before any run (a run never takes a reversed accrual).
    COMMISSION_ACCRUAL_OUTSIDE_RUN = "commission.accrual_outside_run"
    # A settlement run's total is not the sum of its statement's lines.
    COMMISSION_RUN_TOTAL_MISMATCH = "commission.run_total_mismatch"
    # A settlement run was paid by more than one succeeded payout.
    COMMISSION_RUN_PAID_TWICE = "commission.run_paid_twice"
    # A run marked paid has no succeeded payout, or one of another amount than its total.
    COMMISSION_PAID_RUN_PAYOUT = "commission.paid_run_payout"
    # A partner's payable in the ledger is not what it accrued, less what refunds reversed or clawed back,
    # plus its runs' tier and cap lines, less its succeeded payouts.
    COMMISSION_PAYABLE_MISMATCH = "commission.payable_mismatch"
    # An accrual was reversed or clawed back by a refund that does not exist, or that refunds another swap.
    COMMISSION_REVERSAL_WITHOUT_REFUND = "commission.reversal_without_refund"

    # A swap has been in progress for longer than `stuck_after`.
    SWAP_STUCK = "swap.stuck"
    # A completed swap does not record the returned or the issued battery.
    SWAP_MISSING_BATTERIES = "swap.missing_batteries"
    # A slot is reserved by a swap that finished, or that does not exist.
    SWAP_STALE_RESERVATION = "swap.stale_reservation"

    # A completed swap issued a pack that was held, when it was issued, by another rider's reservation.
    RESERVATION_ISSUED_TO_ANOTHER = "reservation.issued_to_another"
    # A reservation marked used names no swap, or a swap of another rider or at another cabinet.
    RESERVATION_USED_BY_ANOTHER = "reservation.used_by_another"
    # An active reservation's slot does not hold it, or a slot is held for a reservation that is not active.
    RESERVATION_HOLD_MISMATCH = "reservation.hold_mismatch"
    # A reservation is still active longer than `stuck_after` past its expiry (its workflow is not running).
    RESERVATION_OVERDUE = "reservation.overdue"


class Violation(BaseModel):
    """One broken rule: which rule, what it is about (a battery serial, slot ref, rider, swap order or
    ledger transaction key) and what was found."""

    model_config = ConfigDict(frozen=True)

    rule: Rule
    subject: str
    detail: str


class InvariantReport(BaseModel):
    """The outcome of one check: how much was checked and every violation found."""

    checked_at: datetime
    batteries: int
    slots: int
    custody_events: int
    ledger_transactions: int
    ledger_postings: int
    swaps: int
    violations: list[Violation]
    swaps_by_status: dict[str, int] = {}
    refunds_by_status: dict[str, int] = {}

    @property
    def ok(self) -> bool:
        """Whether every invariant holds."""
        return not self.violations


# Ledger transaction kinds the swap activities post (swapflow.activities.payments and .swap).
CHARGE, REFUND, REVENUE = "swap_charge", "swap_refund", "swap_revenue"
FINISHED = (SwapStatus.COMPLETED, SwapStatus.FAILED)

# A slot's custodian reference, `<cabinet_id>/<slot_no>` (swapflow.domain.network.slot_ref), in SQL.
SLOT_REF = Slot.cabinet_id + literal("/") + cast(Slot.slot_no, String)


def _charge_key(order_id: QueryableAttribute[str | None]) -> ColumnElement[str]:
    """The key of a swap's charge, at the provider and in the ledger (activities.payments.charge_key), in SQL."""
    return literal("swap:") + order_id + literal(":charge")


async def check_invariants(db: Database, *, stuck_after: timedelta | None = None) -> InvariantReport:
    """Check every rule of `Rule` against the database. A swap in progress is stuck once it is older
    than `stuck_after`; without it, no swap counts as stuck."""
    checked_at = utcnow()
    async with db.sessions() as session:
        if not is_sqlite(db.url):
            # One snapshot for every query (SQLite's read transaction already is one, in WAL mode).
            await session.connection(
                execution_options={"isolation_level": "REPEATABLE READ", "postgresql_readonly": True}
            )
        violations = [
            *await _custody(session),
            *await _slot_reports(session),
            *await _ledger(session),
            *await _money(session),
            *await _refunds(session, checked_at),
            *await _swaps(session, None if stuck_after is None else checked_at - stuck_after),
            *await _wallet_credits(session),
            *await _commissions(session),
            *await _reservations(session, None if stuck_after is None else checked_at - stuck_after),
        ]
        counts = {
            name: await session.scalar(select(func.count()).select_from(model)) or 0
            for name, model in (
                ("batteries", Battery),
                ("slots", Slot),
                ("custody_events", CustodyEvent),
                ("ledger_transactions", LedgerTransaction),
                ("ledger_postings", LedgerPosting),
                ("swaps", SwapOrder),
            )
        }
        swaps_by_status = dict(
            (await session.execute(select(SwapOrder.status, func.count()).group_by(SwapOrder.status))).tuples().all()
        )
        refunds_by_status = dict(
            (await session.execute(select(Refund.status, func.count()).group_by(Refund.status))).tuples().all()
        )
    return InvariantReport(
        checked_at=checked_at,
        violations=sorted(violations, key=lambda v: (v.rule, v.subject)),
        swaps_by_status=swaps_by_status,
        refunds_by_status=refunds_by_status,
        **counts,
    )


# ------------------------------------------------------------------------------------------ custody


async def _custody(session: AsyncSession) -> list[Violation]:
    found: list[Violation] = []

    no_custodian = await session.execute(
        select(Battery.serial, Battery.custodian_kind, Battery.custodian_ref).where(
            or_(Battery.custodian_kind.not_in(list(CustodianKind)), func.trim(Battery.custodian_ref) == "")
        )
    )
    found += [
        Violation(rule=Rule.CUSTODY_NO_CUSTODIAN, subject=serial, detail=f"custodian {kind!r} {ref!r}")
        for serial, kind, ref in no_custodian
    ]

    slot_mismatch = await session.execute(
        select(Battery.serial, Battery.custodian_ref, SLOT_REF)
        .outerjoin(Slot, Slot.battery_serial == Battery.serial)
        .where(Battery.custodian_kind == CustodianKind.SLOT, or_(Slot.id.is_(None), SLOT_REF != Battery.custodian_ref))
    )
    found += [
        Violation(
            rule=Rule.CUSTODY_SLOT_MISMATCH,
            subject=serial,
            detail=f"custodian is slot {ref}, but "
            + ("no slot holds it" if held_by is None else f"slot {held_by} holds it"),
        )
        for serial, ref, held_by in slot_mismatch
    ]

    # Every other occupant breaks the slot's custody: a slot's battery in the wrong slot is reported
    # above, a rider's battery as such, anything else (ops, retired, quarantined elsewhere) as the slot's.
    occupants = await session.execute(
        select(SLOT_REF, Battery.serial, Battery.custodian_kind, Battery.custodian_ref)
        .join(Battery, Battery.serial == Slot.battery_serial)
        .where(
            Battery.custodian_kind != CustodianKind.SLOT,
            not_(and_(Battery.custodian_kind == CustodianKind.QUARANTINE, Battery.custodian_ref == SLOT_REF)),
        )
    )
    for slot, serial, kind, ref in occupants:
        if kind == CustodianKind.RIDER:
            found.append(
                Violation(
                    rule=Rule.CUSTODY_RIDER_IN_SLOT,
                    subject=serial,
                    detail=f"in rider {ref}'s custody, but slot {slot} holds it",
                )
            )
        else:
            found.append(
                Violation(
                    rule=Rule.CUSTODY_SLOT_OCCUPANT,
                    subject=slot,
                    detail=f"holds {serial}, whose custodian is {kind} {ref}",
                )
            )

    riders_with_many = (
        select(Battery.custodian_ref)
        .where(Battery.custodian_kind == CustodianKind.RIDER)
        .group_by(Battery.custodian_ref)
        .having(func.count() > 1)
    )
    held: dict[str, list[str]] = {}
    for rider, serial in await session.execute(
        select(Battery.custodian_ref, Battery.serial)
        .where(Battery.custodian_kind == CustodianKind.RIDER, Battery.custodian_ref.in_(riders_with_many))
        .order_by(Battery.serial)
    ):
        held.setdefault(rider, []).append(serial)
    found += [
        Violation(rule=Rule.CUSTODY_RIDER_HOLDS_MANY, subject=rider, detail=f"holds {', '.join(serials)}")
        for rider, serials in held.items()
    ]

    no_events = await session.scalars(
        select(Battery.serial).where(~exists().where(CustodyEvent.battery_serial == Battery.serial))
    )
    found += [
        Violation(rule=Rule.CUSTODY_NO_EVENTS, subject=serial, detail="no custody event recorded")
        for serial in no_events
    ]

    latest = select(func.max(CustodyEvent.id).label("id")).group_by(CustodyEvent.battery_serial).subquery()
    mismatched = await session.execute(
        select(
            Battery.serial,
            CustodyEvent.key,
            CustodyEvent.to_kind,
            CustodyEvent.to_ref,
            Battery.custodian_kind,
            Battery.custodian_ref,
        )
        .join(latest, latest.c.id == CustodyEvent.id)
        .join(Battery, Battery.serial == CustodyEvent.battery_serial)
        .where(or_(CustodyEvent.to_kind != Battery.custodian_kind, CustodyEvent.to_ref != Battery.custodian_ref))
    )
    found += [
        Violation(
            rule=Rule.CUSTODY_LATEST_EVENT_MISMATCH,
            subject=serial,
            detail=f"latest event {key} ends at {to_kind} {to_ref}, custodian is {kind} {ref}",
        )
        for serial, key, to_kind, to_ref, kind, ref in mismatched
    ]

    by, order = CustodyEvent.battery_serial, CustodyEvent.id
    chained = select(
        CustodyEvent.battery_serial,
        CustodyEvent.key,
        CustodyEvent.from_kind,
        CustodyEvent.from_ref,
        func.lag(CustodyEvent.key).over(partition_by=by, order_by=order).label("prev_key"),
        func.lag(CustodyEvent.to_kind).over(partition_by=by, order_by=order).label("prev_kind"),
        func.lag(CustodyEvent.to_ref).over(partition_by=by, order_by=order).label("prev_ref"),
    ).subquery()
    gaps = await session.execute(
        select(chained).where(
            chained.c.prev_key.is_not(None),
            or_(chained.c.from_kind != chained.c.prev_kind, chained.c.from_ref != chained.c.prev_ref),
        )
    )
    found += [
        Violation(
            rule=Rule.CUSTODY_CHAIN_GAP,
            subject=serial,
            detail=f"{key} starts at {from_kind} {from_ref}, {prev_key} ended at {prev_kind} {prev_ref}",
        )
        for serial, key, from_kind, from_ref, prev_key, prev_kind, prev_ref in gaps
    ]
    return found


async def _slot_reports(session: AsyncSession) -> list[Violation]:
    open_discrepancy = exists().where(
        CustodyDiscrepancy.cabinet_id == Slot.cabinet_id,
        CustodyDiscrepancy.slot_no == Slot.slot_no,
        CustodyDiscrepancy.resolved_at.is_(None),
    )
    foreign_locked = and_(Slot.locked, ~exists().where(Battery.serial == Slot.reported_serial))
    mismatched = await session.execute(
        select(SLOT_REF, Slot.reported_serial, Slot.reported_at, Slot.battery_serial).where(
            Slot.reported_at.is_not(None),
            Slot.reserved_order_id.is_(None),
            Slot.reported_serial.is_distinct_from(Slot.battery_serial),
            ~open_discrepancy,
            ~foreign_locked,
        )
    )
    return [
        Violation(
            rule=Rule.CUSTODY_SLOT_REPORT_MISMATCH,
            subject=slot,
            detail=f"the cabinet last reported {reported or 'it empty'} ({_iso(at)}), "
            f"custody has {held or 'none'} there",
        )
        for slot, reported, at, held in mismatched
    ]


# ------------------------------------------------------------------------------------------ ledger


async def _ledger(session: AsyncSession) -> list[Violation]:
    totals = (
        select(
            LedgerPosting.transaction_id, LedgerPosting.currency, func.sum(LedgerPosting.amount_minor).label("total")
        )
        .group_by(LedgerPosting.transaction_id, LedgerPosting.currency)
        .having(func.sum(LedgerPosting.amount_minor) != 0)
        .subquery()
    )
    unbalanced = await session.execute(
        select(LedgerTransaction.key, totals.c.currency, totals.c.total).join(
            totals, totals.c.transaction_id == LedgerTransaction.id
        )
    )
    found = [
        Violation(rule=Rule.LEDGER_UNBALANCED, subject=key, detail=f"postings sum to {total} {currency}")
        for key, currency, total in unbalanced
    ]

    counts = (
        select(LedgerPosting.transaction_id, func.count().label("postings"))
        .group_by(LedgerPosting.transaction_id)
        .subquery()
    )
    postings = func.coalesce(counts.c.postings, 0)
    too_few = await session.execute(
        select(LedgerTransaction.key, postings)
        .outerjoin(counts, counts.c.transaction_id == LedgerTransaction.id)
        .where(postings < 2)
    )
    found += [Violation(rule=Rule.LEDGER_TOO_FEW_POSTINGS, subject=key, detail=f"{n} posting(s)") for key, n in too_few]
    return found


# ------------------------------------------------------------------------------------------ money


def _swap_ledger() -> Subquery:
    """Per swap order, from its ledger transactions: how many charges, refunds and revenue recognitions,
    how much was charged and refunded (a transaction's amount is the sum of its debits), and how much
    by the charge under the swap's own key, the one the payment provider knows."""
    debit = case((LedgerPosting.amount_minor > 0, LedgerPosting.amount_minor), else_=0)

    def count(kind: str) -> ColumnElement[int]:
        return func.count(distinct(case((LedgerTransaction.kind == kind, LedgerTransaction.id))))

    def amount(*conditions: ColumnElement[bool]) -> ColumnElement[int]:
        return func.coalesce(func.sum(case((and_(*conditions), debit), else_=0)), 0)

    is_charge, is_refund = LedgerTransaction.kind == CHARGE, LedgerTransaction.kind == REFUND
    own_key = LedgerTransaction.key == _charge_key(LedgerTransaction.order_id)
    return (
        select(
            LedgerTransaction.order_id,
            count(CHARGE).label("charges"),
            amount(is_charge).label("charged"),
            amount(is_charge, own_key).label("charged_by_key"),
            count(REFUND).label("refunds"),
            amount(is_refund).label("refunded"),
            count(REVENUE).label("revenues"),
        )
        # Outer: a transaction without postings still counts.
        .outerjoin(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
        .where(LedgerTransaction.order_id.is_not(None), LedgerTransaction.kind.in_((CHARGE, REFUND, REVENUE)))
        .group_by(LedgerTransaction.order_id)
        .subquery()
    )


async def _money(session: AsyncSession) -> list[Violation]:
    ledger = _swap_ledger()
    # Orders without ledger transactions join as NULLs: zero of everything.
    charges, charged, charged_by_key, refunds, refunded, revenues = (
        func.coalesce(ledger.c[name], 0).label(name)
        for name in ("charges", "charged", "charged_by_key", "refunds", "refunded", "revenues")
    )
    completed, failed = SwapOrder.status == SwapStatus.COMPLETED, SwapOrder.status == SwapStatus.FAILED
    priced = func.coalesce(SwapOrder.price_minor, 0) > 0
    expected_revenues = case((and_(completed, priced), 1), else_=0)
    # Each rule: the condition a swap order breaks it by, and the detail, formatted from the order's row.
    rules: dict[Rule, tuple[ColumnElement[bool], str]] = {
        Rule.MONEY_DOUBLE_CHARGE: (charges > 1, "charged {charges} times, {charged} {currency} in all"),
        # A swap priced 0 is free: no provider is asked, so it has no charge (docs/money.md).
        Rule.MONEY_UNCHARGED_COMPLETION: (
            and_(completed, charges == 0, priced),
            "completed without a charge, priced {price} {currency}",
        ),
        Rule.MONEY_REVENUE_COUNT: (
            revenues != expected_revenues,
            "{status} swap with {revenues} revenue transaction(s), expected {expected}",
        ),
        Rule.MONEY_REFUND_ON_COMPLETED: (and_(completed, refunds > 0), "completed swap refunded {refunded} {currency}"),
        Rule.MONEY_MULTIPLE_REFUNDS: (refunds > 1, "refunded {refunds} times, {refunded} {currency} in all"),
        Rule.MONEY_UNREFUNDED_FAILURE: (
            and_(failed, charged > 0, refunds == 0),
            "failed swap charged {charged} {currency}, never refunded",
        ),
        Rule.MONEY_PARTIAL_REFUND: (
            and_(failed, refunds > 0, refunded < charged),
            "failed swap charged {charged}, refunded only {refunded} {currency}",
        ),
        Rule.MONEY_OVER_REFUND: (refunded > charged, "refunded {refunded}, charged only {charged} {currency}"),
        # Against the charge under the provider's key, not the order's total, which a double charge reports.
        Rule.MONEY_PROVIDER_MISMATCH: (
            and_(
                SwapOrder.status.in_(FINISHED),
                SandboxPayment.id.is_not(None),
                or_(charged_by_key != SandboxPayment.amount_minor, refunded != SandboxPayment.refunded_minor),
            ),
            "provider captured {captured} and refunded {provider_refunded} {currency}; "
            "ledger charged {charged_by_key} and refunded {refunded}",
        ),
    }
    swap_ledger = (
        select(
            SwapOrder.id,
            SwapOrder.status,
            func.coalesce(SwapOrder.currency, "").label("currency"),
            func.coalesce(SwapOrder.price_minor, 0).label("price"),
            charges,
            charged,
            charged_by_key,
            refunds,
            refunded,
            revenues,
            expected_revenues.label("expected"),
            SandboxPayment.amount_minor.label("captured"),
            SandboxPayment.refunded_minor.label("provider_refunded"),
            *(condition.label(rule.name) for rule, (condition, _) in rules.items()),
        )
        .outerjoin(ledger, ledger.c.order_id == SwapOrder.id)
        .outerjoin(
            SandboxPayment,
            and_(SandboxPayment.idempotency_key == _charge_key(SwapOrder.id), SandboxPayment.status == "captured"),
        )
        .where(or_(*(condition for condition, _ in rules.values())))
    )
    found: list[Violation] = []
    for row in (await session.execute(swap_ledger)).mappings():
        found += [
            Violation(rule=rule, subject=row["id"], detail=detail.format(**row))
            for rule, (_, detail) in rules.items()
            if row[rule.name]
        ]

    # A balance left in deferred revenue is the sum of what went wrong; report it only when no rule
    # above already names the order, so one mistake is one violation.
    named = {v.subject for v in found}
    balance = func.sum(LedgerPosting.amount_minor)
    deferred = await session.execute(
        select(LedgerTransaction.order_id, LedgerPosting.currency, balance)
        .join(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
        .join(SwapOrder, SwapOrder.id == LedgerTransaction.order_id)
        .where(LedgerPosting.account == DEFERRED_REVENUE, SwapOrder.status.in_(FINISHED))
        .group_by(LedgerTransaction.order_id, LedgerPosting.currency)
        .having(balance != 0)
    )
    found += [
        Violation(
            rule=Rule.MONEY_DEFERRED_BALANCE,
            subject=order,
            detail=f"finished swap holds {amount} {currency} in {DEFERRED_REVENUE}",
        )
        for order, currency, amount in deferred
        if order not in named
    ]
    return found


# ------------------------------------------------------------------------------------------ refunds


async def _refunds(session: AsyncSession, now: datetime) -> list[Violation]:
    refunded = (
        select(Refund.payment_key, func.sum(Refund.amount_minor).label("refunded"))
        .group_by(Refund.payment_key)
        .subquery()
    )
    over = await session.execute(
        select(Payment.key, Payment.amount_minor, refunded.c.refunded, Payment.currency)
        .join(refunded, refunded.c.payment_key == Payment.key)
        .where(refunded.c.refunded > case((Payment.status == "captured", Payment.amount_minor), else_=0))
    )
    found = [
        Violation(
            rule=Rule.MONEY_REFUNDS_EXCEED_CAPTURE,
            subject=key,
            detail=f"refunds of {total} {currency} opened against a capture of {captured}",
        )
        for key, captured, total, currency in over
    ]

    duplicates = await session.execute(
        select(Refund.order_id, func.count())
        .where(Refund.origin == "swap_compensation", Refund.order_id.is_not(None))
        .group_by(Refund.order_id)
        .having(func.count() > 1)
    )
    found += [
        Violation(
            rule=Rule.MONEY_DUPLICATE_SWAP_REFUND, subject=order, detail=f"{n} compensation refunds for one failure"
        )
        for order, n in duplicates
    ]

    overdue = await session.execute(
        select(Refund.id, Refund.expected_by, Refund.provider_status).where(
            Refund.status.in_(("requested", "processing")), Refund.expected_by < now
        )
    )
    found += [
        Violation(
            rule=Rule.REFUND_OVERDUE,
            subject=refund_id,
            detail=f"{status or 'not accepted'} at the provider, expected by {_iso(due)}",
        )
        for refund_id, due, status in overdue
    ]

    settled_key = literal("refund:") + Refund.id + literal(":settled")
    unsettled = await session.scalars(
        select(Refund.id).where(Refund.status == "succeeded", ~exists().where(LedgerTransaction.key == settled_key))
    )
    found += [
        Violation(
            rule=Rule.REFUND_UNSETTLED,
            subject=refund_id,
            detail="succeeded at the provider, still owed in refunds payable",
        )
        for refund_id in unsettled
    ]
    return found


# ------------------------------------------------------------------------------------------ swaps


async def _swaps(session: AsyncSession, stuck_before: datetime | None) -> list[Violation]:
    found: list[Violation] = []
    if stuck_before is not None:
        stuck = await session.execute(
            select(SwapOrder.id, SwapOrder.stage, SwapOrder.created_at).where(
                SwapOrder.status == SwapStatus.IN_PROGRESS, SwapOrder.created_at < stuck_before
            )
        )
        found += [
            Violation(
                rule=Rule.SWAP_STUCK,
                subject=order,
                detail=f"in progress since {as_utc(created).isoformat()}, at stage {stage}",
            )
            for order, stage, created in stuck
        ]

    incomplete = await session.execute(
        select(SwapOrder.id, SwapOrder.returned_battery_serial, SwapOrder.issued_battery_serial).where(
            SwapOrder.status == SwapStatus.COMPLETED,
            or_(SwapOrder.returned_battery_serial.is_(None), SwapOrder.issued_battery_serial.is_(None)),
        )
    )
    found += [
        Violation(
            rule=Rule.SWAP_MISSING_BATTERIES,
            subject=order,
            detail=f"completed with returned battery {returned}, issued battery {issued}",
        )
        for order, returned, issued in incomplete
    ]

    stale = await session.execute(
        select(SLOT_REF, Slot.reserved_order_id, SwapOrder.status)
        .outerjoin(SwapOrder, SwapOrder.id == Slot.reserved_order_id)
        .where(
            Slot.reserved_order_id.is_not(None), or_(SwapOrder.id.is_(None), SwapOrder.status != SwapStatus.IN_PROGRESS)
        )
    )
    found += [
        Violation(
            rule=Rule.SWAP_STALE_RESERVATION, subject=slot, detail=f"reserved by {status or 'unknown'} swap {order}"
        )
        for slot, order, status in stale
    ]
    return found


# ------------------------------------------------------------------------------------------ reservations


async def _reservations(session: AsyncSession, overdue_before: datetime | None) -> list[Violation]:
    """A reserved pack is never issued to another rider: no completed swap issued a pack while another
    rider's reservation held it, a reservation is used only by its rider's swap at its cabinet, and a
    slot is held exactly by the active reservation that names it."""
    found: list[Violation] = []
    active = Reservation.status == ReservationStatus.ACTIVE

    issued = await session.execute(
        select(Reservation.id, Reservation.rider_id, SwapOrder.id, SwapOrder.rider_id, Reservation.battery_serial)
        .join(SwapOrder, SwapOrder.issued_battery_serial == Reservation.battery_serial)
        .where(
            SwapOrder.status == SwapStatus.COMPLETED,
            SwapOrder.rider_id != Reservation.rider_id,
            Reservation.created_at <= SwapOrder.finished_at,
            or_(Reservation.ended_at.is_(None), Reservation.ended_at > SwapOrder.finished_at),
        )
    )
    found += [
        Violation(
            rule=Rule.RESERVATION_ISSUED_TO_ANOTHER,
            subject=reservation,
            detail=f"pack {serial}, held for rider {holder}, was issued to rider {rider} by swap {order}",
        )
        for reservation, holder, order, rider, serial in issued
    ]

    used = await session.execute(
        select(Reservation.id, Reservation.used_by_order_id, SwapOrder.id, SwapOrder.rider_id, SwapOrder.cabinet_id)
        .outerjoin(SwapOrder, SwapOrder.id == Reservation.used_by_order_id)
        .where(
            Reservation.status == ReservationStatus.USED,
            or_(
                SwapOrder.id.is_(None),
                SwapOrder.rider_id != Reservation.rider_id,
                SwapOrder.cabinet_id != Reservation.cabinet_id,
            ),
        )
    )
    found += [
        Violation(
            rule=Rule.RESERVATION_USED_BY_ANOTHER,
            subject=reservation,
            detail=f"used by swap {named}, "
            + ("which does not exist" if order is None else f"of rider {rider} at cabinet {cabinet}"),
        )
        for reservation, named, order, rider, cabinet in used
    ]

    unheld = await session.execute(
        select(Reservation.id, SLOT_REF, Slot.reservation_id)
        .outerjoin(Slot, and_(Slot.cabinet_id == Reservation.cabinet_id, Slot.slot_no == Reservation.slot_no))
        .where(active, Slot.reservation_id.is_distinct_from(Reservation.id))
    )
    found += [
        Violation(
            rule=Rule.RESERVATION_HOLD_MISMATCH,
            subject=reservation,
            detail=f"active, but its slot {slot} is held for {holder or 'no reservation'}",
        )
        for reservation, slot, holder in unheld
    ]
    stale = await session.execute(
        select(SLOT_REF, Slot.reservation_id, Reservation.status)
        .outerjoin(Reservation, Reservation.id == Slot.reservation_id)
        .where(Slot.reservation_id.is_not(None), or_(Reservation.id.is_(None), ~active))
    )
    found += [
        Violation(
            rule=Rule.RESERVATION_HOLD_MISMATCH,
            subject=slot,
            detail=f"held for {status or 'unknown'} reservation {reservation}",
        )
        for slot, reservation, status in stale
    ]

    if overdue_before is not None:
        overdue = await session.execute(
            select(Reservation.id, Reservation.expires_at).where(active, Reservation.expires_at < overdue_before)
        )
        found += [
            Violation(
                rule=Rule.RESERVATION_OVERDUE,
                subject=reservation,
                detail=f"still active, expired at {_iso(expires_at)}",
            )
            for reservation, expires_at in overdue
        ]
    return found


# ------------------------------------------------------------------------------------------ wallets


async def _wallet_credits(session: AsyncSession) -> list[Violation]:
    """Money only enters a wallet paid for (every credit traces to what backs it), and a balance is the sum
    of its wallet's entries."""
    charge = aliased(WalletEntry)
    settled_top_up = exists().where(
        WalletTopUp.payment_key == WalletEntry.payment_key,
        WalletTopUp.rider_id == WalletEntry.rider_id,
        WalletTopUp.status == "succeeded",
        Payment.key == WalletTopUp.payment_key,
        Payment.status == "captured",
        Payment.amount_minor == WalletEntry.amount_minor,
        Payment.currency == WalletEntry.currency,
    )
    approved_goodwill = exists().where(
        literal("goodwill:") + GoodwillCredit.id == WalletEntry.payment_key,
        GoodwillCredit.rider_id == WalletEntry.rider_id,
        GoodwillCredit.amount_minor == WalletEntry.amount_minor,
        func.trim(GoodwillCredit.approved_by) != "",
        func.trim(GoodwillCredit.reason) != "",
    )
    refunded_charge = exists().where(
        charge.key == WalletEntry.payment_key, charge.kind == "charge", charge.rider_id == WalletEntry.rider_id
    )
    backed = case(
        (WalletEntry.kind == "topup", settled_top_up),
        (WalletEntry.kind == "goodwill", approved_goodwill),
        (WalletEntry.kind == "refund", refunded_charge),
        else_=literal(False),
    )
    unbacked = await session.execute(
        select(
            WalletEntry.key,
            WalletEntry.rider_id,
            WalletEntry.kind,
            WalletEntry.amount_minor,
            WalletEntry.currency,
            WalletEntry.payment_key,
        ).where(WalletEntry.amount_minor > 0, not_(backed))
    )
    found = [
        Violation(
            rule=Rule.WALLET_UNBACKED_CREDIT,
            subject=key,
            detail=f"{kind} of {amount} {currency} into {rider}'s wallet, backed by "
            f"{source or 'nothing'}: no settled payment or approved goodwill credit of that amount",
        )
        for key, rider, kind, amount, currency, source in unbacked
    ]

    entries = (
        select(WalletEntry.rider_id, func.sum(WalletEntry.amount_minor).label("total"))
        .group_by(WalletEntry.rider_id)
        .subquery()
    )
    total = func.coalesce(entries.c.total, 0)
    mismatched = await session.execute(
        select(Wallet.rider_id, Wallet.balance_minor, total, Wallet.currency)
        .outerjoin(entries, entries.c.rider_id == Wallet.rider_id)
        .where(Wallet.balance_minor != total)
    )
    found += [
        Violation(
            rule=Rule.WALLET_BALANCE_MISMATCH,
            subject=rider,
            detail=f"balance {balance} {currency}, entries sum to {summed}",
        )
        for rider, balance, summed, currency in mismatched
    ]
    return found


# ------------------------------------------------------------------------------------------ commissions


async def _commissions(session: AsyncSession) -> list[Violation]:
    """Each accrual settles in a run of its partner and period, a run's lines make its total and it is paid
    once, every reversal answers to a refund of its swap, and the ledger owes each partner what these say."""
    outside = await session.execute(
        select(
            CommissionAccrual.key,
            CommissionAccrual.partner_id,
            CommissionAccrual.at,
            CommissionAccrual.reversed_by_refund_id,
            SettlementRun.id,
            SettlementRun.partner_id,
            SettlementRun.period_start,
            SettlementRun.period_end,
        )
        .join(SettlementRun, SettlementRun.id == CommissionAccrual.run_id)
        .where(
            or_(
                SettlementRun.partner_id != CommissionAccrual.partner_id,
                CommissionAccrual.at < SettlementRun.period_start,
                CommissionAccrual.at >= SettlementRun.period_end,
                CommissionAccrual.reversed_by_refund_id.is_not(None),
            )
        )
    )
    found = [
        Violation(
            rule=Rule.COMMISSION_ACCRUAL_OUTSIDE_RUN,
            subject=key,
            detail=f"{partner}'s accrual at {_iso(at)}"
            + (f", reversed by refund {refund}," if refund else "")
            + f" is in run {run} of {run_partner} for [{_iso(start)}, {_iso(end)})",
        )
        for key, partner, at, refund, run, run_partner, start, end in outside
    ]

    lines = (
        select(SettlementLine.run_id, func.sum(SettlementLine.amount_minor).label("total"))
        .group_by(SettlementLine.run_id)
        .subquery()
    )
    summed = func.coalesce(lines.c.total, 0)
    mismatched = await session.execute(
        select(SettlementRun.id, SettlementRun.total_minor, summed, SettlementRun.currency)
        .outerjoin(lines, lines.c.run_id == SettlementRun.id)
        .where(SettlementRun.total_minor != summed)
    )
    found += [
        Violation(
            rule=Rule.COMMISSION_RUN_TOTAL_MISMATCH,
            subject=run,
            detail=f"total {total} {currency}, its lines sum to {lines_total}",
        )
        for run, total, lines_total, currency in mismatched
    ]

    succeeded = (
        select(
            PartnerPayout.run_id,
            func.count().label("payouts"),
            func.sum(PartnerPayout.amount_minor).label("paid"),
        )
        .where(PartnerPayout.status == PayoutStatus.SUCCEEDED)
        .group_by(PartnerPayout.run_id)
        .subquery()
    )
    payouts, paid = func.coalesce(succeeded.c.payouts, 0), func.coalesce(succeeded.c.paid, 0)
    twice = payouts > 1
    unpaid = and_(
        SettlementRun.status == RunStatus.PAID, or_(payouts == 0, and_(payouts == 1, paid != SettlementRun.total_minor))
    )
    runs = await session.execute(
        select(
            SettlementRun.id,
            SettlementRun.total_minor,
            SettlementRun.currency,
            payouts,
            paid,
            twice,
        )
        .outerjoin(succeeded, succeeded.c.run_id == SettlementRun.id)
        .where(or_(twice, unpaid))
    )
    found += [
        Violation(
            rule=Rule.COMMISSION_RUN_PAID_TWICE,
            subject=run,
            detail=f"{n} succeeded payouts, {amount} {currency} in all, of a total of {total}",
        )
        if is_twice
        else Violation(
            rule=Rule.COMMISSION_PAID_RUN_PAYOUT,
            subject=run,
            detail=f"paid run of {total} {currency} with "
            + (f"a succeeded payout of {amount}" if n else "no succeeded payout"),
        )
        for run, total, currency, n, amount, is_twice in runs
    ]

    found += await _payables(session)

    refund = aliased(Refund)
    unanswered = or_(refund.id.is_(None), refund.order_id.is_(None), refund.order_id != CommissionAccrual.order_id)
    reversals = await session.execute(
        select(
            CommissionAccrual.key, CommissionAccrual.order_id, CommissionClawback.refund_id, refund.id, refund.order_id
        )
        .join(CommissionClawback, CommissionClawback.accrual_id == CommissionAccrual.id)
        .outerjoin(refund, refund.id == CommissionClawback.refund_id)
        .where(unanswered)
        .union_all(
            select(
                CommissionAccrual.key,
                CommissionAccrual.order_id,
                CommissionAccrual.reversed_by_refund_id,
                refund.id,
                refund.order_id,
            )
            .outerjoin(refund, refund.id == CommissionAccrual.reversed_by_refund_id)
            .where(CommissionAccrual.reversed_by_refund_id.is_not(None), unanswered)
        )
    )
    found += [
        Violation(
            rule=Rule.COMMISSION_REVERSAL_WITHOUT_REFUND,
            subject=key,
            detail=f"reversed by refund {refund_id}, "
            + ("which does not exist" if existing is None else f"of swap {refunded}, not of its swap {order}"),
        )
        for key, order, refund_id, existing, refunded in reversals
    ]
    return found


async def _payables(session: AsyncSession) -> list[Violation]:
    """Per partner and currency: what the commission tables say is owed, against its payable's balance."""

    def total(
        partner: QueryableAttribute[str], currency: QueryableAttribute[str], amount: QueryableAttribute[int]
    ) -> Select[str, str, int]:
        return select(partner, currency, func.sum(amount)).group_by(partner, currency)

    accrued = total(CommissionAccrual.partner_id, CommissionAccrual.currency, CommissionAccrual.amount_minor)
    owing = (
        (accrued, 1),
        (accrued.where(CommissionAccrual.reversed_by_refund_id.is_not(None)), -1),
        (total(CommissionClawback.partner_id, CommissionClawback.currency, CommissionClawback.amount_minor), -1),
        (
            total(SettlementRun.partner_id, SettlementRun.currency, SettlementLine.amount_minor)
            .join(SettlementRun, SettlementRun.id == SettlementLine.run_id)
            .where(SettlementLine.kind.in_((LineKind.TIER_ADJUSTMENT, LineKind.CAP))),
            1,
        ),
        (
            total(PartnerPayout.partner_id, PartnerPayout.currency, PartnerPayout.amount_minor).where(
                PartnerPayout.status == PayoutStatus.SUCCEEDED
            ),
            -1,
        ),
    )
    owed: dict[tuple[str, str], int] = {}
    for query, sign in owing:
        for partner, currency, amount in await session.execute(query):
            owed[(partner, currency)] = owed.get((partner, currency), 0) + sign * int(amount)
    prefix = partner_payable("")
    balances: dict[tuple[str, str], int] = {}
    for account, currency, balance in await session.execute(
        select(LedgerPosting.account, LedgerPosting.currency, func.sum(LedgerPosting.amount_minor))
        .where(LedgerPosting.account.startswith(prefix, autoescape=True))
        .group_by(LedgerPosting.account, LedgerPosting.currency)
    ):
        balances[(account.removeprefix(prefix), currency)] = -int(balance)  # a payable is a credit
    return [
        Violation(
            rule=Rule.COMMISSION_PAYABLE_MISMATCH,
            subject=partner,
            detail=f"{partner_payable(partner)} holds {balances.get((partner, currency), 0)} {currency}; accruals, "
            f"reversals, clawbacks, tier and cap lines and payouts say {owed.get((partner, currency), 0)}",
        )
        for partner, currency in sorted(owed.keys() | balances.keys())
        if owed.get((partner, currency), 0) != balances.get((partner, currency), 0)
    ]


def _iso(at: datetime | None) -> str:
    return at.isoformat() if at is not None else "never"
