"""The settlement workflows' activities: freeze a partner's period and record its statement, record
finance's decisions and remind it, pay the run and follow the payout, book or fail it; and list the
partners due on a cadence. Each is safe to retry: a recorded revision, a decision, a payout attempt's
key and the ledger's keys make a repeat a no-op.

Ledger: each swap accrued its commissions (commission expense / partner payable) when it completed;
a run adds what only the period knows, its volume tiers and cap, as `settlement:<run>:adjustments:<rev>`
(a recompute reverses the previous revision's first), and a succeeded payout clears the payable against
where the money left from: `<payout key>:paid`, payable → provider clearing (or the bank's cash).
Carried amounts stay in the payable: they are owed, only not paid yet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity

from swapflow.db.audit import AuditEvent
from swapflow.db.commissions import (
    CommissionAccrual,
    CommissionClawback,
    CommissionPlan,
    CommissionPlanVersion,
    Partner,
    PartnerPayout,
    PlanAssignment,
    SettlementLine,
    SettlementRun,
)
from swapflow.db.commissions import SettlementDecision as DecisionRow
from swapflow.db.engine import Database
from swapflow.db.money import LedgerPosting, LedgerTransaction
from swapflow.domain.checks import present
from swapflow.domain.clock import utcnow
from swapflow.domain.commissions import (
    Accrual,
    AccrualKind,
    Cadence,
    CadenceKind,
    Clawback,
    LineKind,
    PartnerKind,
    Period,
    PlanVersion,
    SettlementPeriod,
    Statement,
    Tier,
    period_containing,
    plan_in_force,
    previous_period,
    statement,
)
from swapflow.ops.alerts import (
    SETTLEMENT_PAYOUT_FAILED,
    SETTLEMENT_UNAPPROVED,
    raise_settlement_alert,
    resolve_settlement_alert,
)
from swapflow.payments.ledger import (
    BANK_CASH,
    COMMISSION_EXPENSE,
    Posting,
    partner_payable,
    post_transaction,
    provider_clearing,
)
from swapflow.payments.payouts import (
    FINAL_PAYOUT_STATUSES,
    PayoutMethod,
    PayoutProvider,
    PayoutRequest,
    PayoutStatus,
    ProviderPayout,
    payout_key,
)
from swapflow.payments.provider import ProviderDeclined, ProviderTimeout
from swapflow.settings import Settings
from swapflow.workflows.settlement_contract import (
    BankResultRecord,
    DecisionRecord,
    DueRequest,
    FreezeRequest,
    PayoutOutcomeUnknownError,
    PayoutProgress,
    PayoutRef,
    Reminder,
    RunStatus,
    SettlementRefusedError,
    SettlementStart,
    SettlementState,
    settlement_run_id,
    settlement_workflow_id,
)

SUBMITTED = "submitted"  # a payout row recorded before its provider was asked
ADJUSTMENT_LINES = frozenset({LineKind.TIER_ADJUSTMENT, LineKind.CAP})
_ACCRUAL_KINDS = {kind.value: kind for kind in AccrualKind}
_ROLES = {role.value: role for role in PartnerKind}
_ACCRUAL_COLUMNS = (
    CommissionAccrual.order_id,
    CommissionAccrual.at,
    CommissionAccrual.role,
    CommissionAccrual.kind,
    CommissionAccrual.amount_minor,
    CommissionAccrual.currency,
    CommissionAccrual.plan_id,
    CommissionAccrual.plan_version,
    CommissionAccrual.basis_minor,
    CommissionAccrual.rate_bp,
    CommissionAccrual.level,
)


def _accrual(partner_id: str, row: Sequence[Any]) -> Accrual:
    # Rows this table got from validated domain accruals: built without validating each of a period's
    # (100k and more) again.
    swap_id, at, role, kind, amount, currency, plan_id, version, basis, rate, level = row
    return Accrual.model_construct(
        swap_id=swap_id,
        at=at,
        partner_id=partner_id,
        role=_ROLES[role],
        kind=_ACCRUAL_KINDS[kind],
        amount_minor=amount,
        currency=currency,
        plan_id=plan_id,
        plan_version=version,
        basis_minor=basis,
        rate_bp=rate,
        level=level,
    )


def _plan_version(row: CommissionPlanVersion) -> PlanVersion:
    return PlanVersion(
        plan_id=row.plan_id,
        version=row.version,
        effective_from=row.effective_from,
        currency=row.currency,
        percent_bp=row.percent_bp,
        fixed_minor=row.fixed_minor,
        tiers=tuple(Tier(**tier) for tier in row.tiers),
        overrides_bp=tuple(row.overrides_bp),
        cap_minor=row.cap_minor,
        minimum_payout_minor=row.minimum_payout_minor,
    )


def adjustments_key(run_id: str, revision: int) -> str:
    """The ledger transaction of a revision's tier and cap lines."""
    return f"settlement:{run_id}:adjustments:{revision}"


def _audit(
    session: AsyncSession, actor: str, action: str, run: SettlementRun, before: Any, after: Any, reason: str = ""
) -> None:
    session.add(
        AuditEvent(
            actor=actor,
            action=action,
            entity="settlement_run",
            entity_id=run.id,
            before=before,
            after=after,
            reason=reason,
        )
    )


def _figures(run: SettlementRun) -> dict[str, Any]:
    return {"status": run.status, "revision": run.revision, "total_minor": run.total_minor}


async def _run(session: AsyncSession, run_id: str, *, lock: bool = False) -> SettlementRun:
    run = await session.get(SettlementRun, run_id, with_for_update=lock)
    if run is None:
        raise SettlementRefusedError(f"no settlement run {run_id}")
    return run


async def _plan_edited_by(session: AsyncSession, run: SettlementRun) -> tuple[str, ...]:
    """Who prepared the plan versions the run's statement used (its lines' and its terms')."""
    details = await session.scalars(
        select(SettlementLine.detail).where(SettlementLine.run_id == run.id, SettlementLine.kind != LineKind.CLAWBACK)
    )
    used = {(detail["plan_id"], detail["plan_version"]) for detail in details if "plan_version" in detail}
    if run.plan_id is not None and run.plan_version is not None:
        used.add((run.plan_id, run.plan_version))
    if not used:
        return ()
    versions = await session.execute(
        select(CommissionPlanVersion.plan_id, CommissionPlanVersion.version, CommissionPlanVersion.created_by).where(
            CommissionPlanVersion.plan_id.in_({plan_id for plan_id, _ in used})
        )
    )
    return tuple(sorted({by for plan_id, version, by in versions.all() if (plan_id, version) in used}))


async def _state(session: AsyncSession, run: SettlementRun) -> SettlementState:
    return SettlementState(
        run_id=run.id,
        status=RunStatus(run.status),
        revision=run.revision,
        total_minor=run.total_minor,
        currency=run.currency,
        prepared_by=run.prepared_by,
        plan_edited_by=await _plan_edited_by(session, run),
        failure_reason=run.failure_reason,
    )


async def _plans(
    session: AsyncSession, partner_id: str, period: Period, accruals: Sequence[Accrual]
) -> list[PlanVersion]:
    """The plan versions the accruals name, and the version of the partner's plan in force at the period's
    end (its cap and minimum payout apply)."""
    named = {(accrual.plan_id, accrual.plan_version) for accrual in accruals}
    assigned = await session.scalar(
        select(PlanAssignment.plan_id)
        .where(PlanAssignment.partner_id == partner_id, PlanAssignment.effective_from < period.end)
        .order_by(PlanAssignment.effective_from.desc())
        .limit(1)
    )
    plan_ids = {plan_id for plan_id, _ in named} | ({assigned} if assigned else set())
    rows = await session.scalars(select(CommissionPlanVersion).where(CommissionPlanVersion.plan_id.in_(plan_ids)))
    versions = [_plan_version(row) for row in rows]
    plans = [plan for plan in versions if (plan.plan_id, plan.version) in named]
    terms = plan_in_force(
        (plan for plan in versions if plan.plan_id == assigned and plan.effective_from < period.end), period.end
    )
    if terms is not None and terms not in plans:
        plans.append(terms)
    return plans


async def _book_adjustments(session: AsyncSession, run: SettlementRun, result: Statement) -> None:
    """Post the revision's tier and cap lines, after reversing the previous revision's."""
    if run.revision > 1:
        previous = adjustments_key(run.id, run.revision - 1)
        postings = (
            await session.execute(
                select(LedgerPosting.account, LedgerPosting.amount_minor)
                .join(LedgerTransaction, LedgerTransaction.id == LedgerPosting.transaction_id)
                .where(LedgerTransaction.key == previous)
            )
        ).all()
        if postings:
            await post_transaction(
                session,
                key=f"{previous}:reversal",
                kind="commission_adjustment",
                currency=run.currency,
                postings=[Posting(account, -amount) for account, amount in postings],
                memo=f"settlement {run.id} recomputed",
            )
    amount = sum(line.amount_minor for line in result.lines if line.kind in ADJUSTMENT_LINES)
    if amount:
        await post_transaction(
            session,
            key=adjustments_key(run.id, run.revision),
            kind="commission_adjustment",
            currency=run.currency,
            postings=[Posting(COMMISSION_EXPENSE, amount), Posting(partner_payable(run.partner_id), -amount)],
            memo=f"settlement {run.id}: volume tiers and cap",
        )


async def freeze(session: AsyncSession, request: FreezeRequest) -> SettlementState:
    """Freeze the run's period as `request.revision` and record its statement, in the caller's
    transaction: the run's row (created on revision 1), the period's accruals not in a run nor reversed
    and the partner's pending clawbacks of settled periods assigned to it, the statement computed with
    the previous run's carry-forward carried in, its lines and totals recorded and its tier and cap lines
    booked. A revision already recorded is answered as recorded."""
    start = request.start
    partner = (
        await session.execute(select(Partner.currency, Partner.cities).where(Partner.id == start.partner_id))
    ).one_or_none()
    if partner is None:
        raise SettlementRefusedError(f"no partner {start.partner_id}")
    currency, cities = partner
    run = await session.get(SettlementRun, start.run_id, with_for_update=True)
    if run is not None and run.revision >= request.revision and run.status != RunStatus.COMPUTING:
        return await _state(session, run)
    period = Period(start=start.period_start, end=start.period_end)
    if run is None:
        if period.end > utcnow():
            raise SettlementRefusedError(f"period {start.period_label} is not over yet")
        run = SettlementRun(
            id=start.run_id,
            partner_id=start.partner_id,
            city_code=cities[0] if cities else None,
            period_label=start.period_label,
            period_start=period.start,
            period_end=period.end,
            currency=currency,
            status=RunStatus.COMPUTING,
            workflow_id=settlement_workflow_id(start.partner_id, start.period_label),
            revision=request.revision,
            prepared_by=start.prepared_by,
        )
        session.add(run)
        await session.flush()
    before = _figures(run) if request.revision > 1 else None
    run.revision = request.revision

    await session.execute(
        update(CommissionAccrual)
        .where(
            CommissionAccrual.partner_id == start.partner_id,
            CommissionAccrual.at >= period.start,
            CommissionAccrual.at < period.end,
            CommissionAccrual.run_id.is_(None),
            CommissionAccrual.reversed_by_refund_id.is_(None),
        )
        .values(run_id=run.id)
        .execution_options(synchronize_session=False)  # a bulk UPDATE: no accrual is loaded as an object
    )
    # A refund after its accrual was frozen in the period's own (unpaid) run waits for the next period.
    settled = exists().where(CommissionAccrual.id == CommissionClawback.accrual_id, CommissionAccrual.at < period.start)
    await session.execute(
        update(CommissionClawback)
        .where(CommissionClawback.partner_id == start.partner_id, CommissionClawback.run_id.is_(None), settled)
        .values(run_id=run.id)
        .execution_options(synchronize_session=False)
    )
    rows = await session.execute(select(*_ACCRUAL_COLUMNS).where(CommissionAccrual.run_id == run.id))
    accruals = [_accrual(start.partner_id, row) for row in rows]
    clawed = await session.execute(
        select(CommissionClawback.refund_id, *_ACCRUAL_COLUMNS)
        .join(CommissionAccrual, CommissionAccrual.id == CommissionClawback.accrual_id)
        .where(CommissionClawback.run_id == run.id)
        .order_by(CommissionClawback.id)
    )
    clawbacks = [Clawback(accrual=_accrual(start.partner_id, row[1:]), refund_id=row[0]) for row in clawed]
    carried_in = await session.scalar(
        select(SettlementRun.carry_forward_minor)
        .where(SettlementRun.partner_id == start.partner_id, SettlementRun.period_start < period.start)
        .order_by(SettlementRun.period_start.desc())
        .limit(1)
    )
    plans = await _plans(session, start.partner_id, period, accruals)
    result = statement(
        start.partner_id,
        period,
        currency=currency,
        accruals=accruals,
        clawbacks=clawbacks,
        carried_in_minor=carried_in or 0,
        plans=plans,
    )

    await session.execute(delete(SettlementLine).where(SettlementLine.run_id == run.id))
    if result.lines:
        await session.execute(
            insert(SettlementLine),
            [
                {
                    "run_id": run.id,
                    "position": position,
                    "kind": line.kind,
                    "amount_minor": line.amount_minor,
                    "label": line.label,
                    "detail": line.model_dump(
                        mode="json", exclude={"kind", "amount_minor", "label"}, exclude_none=True
                    ),
                }
                for position, line in enumerate(result.lines, start=1)
            ],
        )
    run.plan_id, run.plan_version = result.plan_id, result.plan_version
    run.accruals_count = len(accruals)
    run.carried_in_minor = carried_in or 0
    run.total_minor, run.carry_forward_minor = result.total_minor, result.carry_forward_minor
    run.status = RunStatus.AWAITING_APPROVAL if result.total_minor > 0 else RunStatus.NOTHING_DUE
    run.failure_reason, run.approved_by, run.approved_at = None, None, None
    await _book_adjustments(session, run, result)
    if before is not None:
        _audit(session, request.by, "settlement.recompute", run, before, _figures(run))
    await session.flush()
    return await _state(session, run)


class SettlementActivities:
    """What the settlement workflows do to the database and the payout providers; one per worker."""

    def __init__(self, db: Database, settings: Settings, providers: dict[PayoutMethod, PayoutProvider]) -> None:
        self.db = db
        self.settings = settings
        self.providers = providers

    def activities(self) -> list[Callable[..., Any]]:
        """Every activity, for the worker to register."""
        return [
            self.freeze,
            self.record_decision,
            self.remind,
            self.submit_payout,
            self.poll_payout,
            self.record_bank_result,
            self.settle_payout,
            self.fail_payout,
            self.due,
        ]

    @activity.defn(name="freeze_settlement")
    async def freeze(self, request: FreezeRequest) -> SettlementState:
        """Freeze the period and record its statement (one transaction: all of it or nothing)."""
        async with self.db.transaction() as session:
            return await freeze(session, request)

    @activity.defn(name="record_settlement_decision")
    async def record_decision(self, record: DecisionRecord) -> None:
        """Record an approval or rejection of the run's revision (once), and close its reminder."""
        decision = record.decision
        verdict = "approved" if decision.approve else "rejected"
        async with self.db.transaction() as session:
            run = await _run(session, record.run_id, lock=True)
            known = await session.scalar(
                select(DecisionRow.id).where(
                    DecisionRow.run_id == run.id,
                    DecisionRow.revision == record.revision,
                    DecisionRow.decision == verdict,
                )
            )
            if known is not None:
                return
            before = _figures(run)
            session.add(
                DecisionRow(
                    run_id=run.id, revision=record.revision, decision=verdict, by=decision.by, reason=decision.reason
                )
            )
            if decision.approve:
                run.status, run.approved_by, run.approved_at = RunStatus.APPROVED, decision.by, utcnow()
            else:
                run.status, run.failure_reason = RunStatus.REJECTED, decision.reason
            _audit(
                session,
                decision.by,
                f"settlement.{'approve' if decision.approve else 'reject'}",
                run,
                before,
                _figures(run),
                decision.reason,
            )
            await resolve_settlement_alert(session, kind=SETTLEMENT_UNAPPROVED, run_id=run.id)

    @activity.defn(name="remind_settlement")
    async def remind(self, reminder: Reminder) -> None:
        """Remind finance (an alert; each reminder counts one more occurrence of it)."""
        hours = reminder.waited_s / 3600
        async with self.db.transaction() as session:
            await raise_settlement_alert(
                session,
                kind=SETTLEMENT_UNAPPROVED,
                run_id=reminder.run_id,
                message=f"settlement run {reminder.run_id} ({reminder.partner_id}, {reminder.period_label})"
                f" has awaited approval for {hours:.1f} h",
            )

    def _provider(self, method: str) -> PayoutProvider | None:
        try:
            return self.providers[PayoutMethod(method)]
        except (KeyError, ValueError):
            return None

    @activity.defn(name="submit_settlement_payout")
    async def submit_payout(self, ref: PayoutRef) -> PayoutProgress:
        """Pay the run's total under the attempt's key. The attempt's row is recorded before the provider
        is asked; a retry finding it still unanswered asks the provider for the key first, so a lost answer
        never pays twice."""
        key = payout_key(ref.run_id, ref.attempt)
        async with self.db.transaction() as session:
            payout = await session.scalar(
                select(PartnerPayout).where(PartnerPayout.run_id == ref.run_id, PartnerPayout.attempt == ref.attempt)
            )
            fresh = payout is None
            run = await _run(session, ref.run_id, lock=True)
            partner = present(await session.get(Partner, run.partner_id), f"partner {run.partner_id}")
            if payout is None:
                payout = PartnerPayout(
                    key=key,
                    run_id=run.id,
                    attempt=ref.attempt,
                    partner_id=partner.id,
                    method=partner.payout_method,
                    amount_minor=run.total_minor,
                    currency=run.currency,
                    status=SUBMITTED,
                )
                session.add(payout)
                before = _figures(run)
                run.status, run.failure_reason = RunStatus.PAYING, None
                if ref.attempt > 1:
                    _audit(session, ref.by, "settlement.retry_payout", run, before, _figures(run))
            elif payout.status != SUBMITTED:
                return _progress(payout)
            request = PayoutRequest(
                key=key,
                partner_id=partner.id,
                amount_minor=payout.amount_minor,
                currency=payout.currency,
                account=partner.payout_account,
                details={name: str(value) for name, value in partner.payout_details.items()},
                description=f"swapflow commission {run.period_label}",
            )
            method = payout.method
        provider = self._provider(method)
        if provider is None:  # nothing was sent: a failed payout finance retries once the method is set up
            return await self._record(key, None, f"no payout provider {method!r} is configured here")
        found: ProviderPayout | None = None
        declined: str | None = None
        try:
            found = None if fresh else await provider.find_payout(key)
            if found is None:
                found = await provider.pay(request)
        except ProviderDeclined as exc:
            declined = str(exc) or "declined by the provider"
        except ProviderTimeout:
            found = await provider.find_payout(key)
            if found is None:
                raise PayoutOutcomeUnknownError(f"payout {key}: no answer, and the provider shows none yet") from None
        return await self._record(key, found, declined)

    async def _record(self, key: str, found: ProviderPayout | None, declined: str | None = None) -> PayoutProgress:
        async with self.db.transaction() as session:
            payout = present(
                await session.scalar(select(PartnerPayout).where(PartnerPayout.key == key)), f"payout {key}"
            )
            if payout.status in FINAL_PAYOUT_STATUSES:
                return _progress(payout)
            if declined is not None:
                payout.status, payout.failure_reason = PayoutStatus.FAILED, declined
            elif found is not None:
                payout.status, payout.provider_ref = found.status, found.payout_id
                payout.failure_reason = found.failure_reason
            if payout.status in FINAL_PAYOUT_STATUSES:
                payout.final_at = utcnow()
            return _progress(payout)

    @activity.defn(name="poll_settlement_payout")
    async def poll_payout(self, ref: PayoutRef) -> PayoutProgress:
        """Ask the provider where the attempt's payout is, and record it."""
        key = payout_key(ref.run_id, ref.attempt)
        async with self.db.sessions() as session:
            payout = present(
                await session.scalar(select(PartnerPayout).where(PartnerPayout.key == key)), f"payout {key}"
            )
        if payout.status in FINAL_PAYOUT_STATUSES:
            return _progress(payout)
        provider = self._provider(payout.method)
        if provider is None:  # retried until this worker has it again
            raise RuntimeError(f"no payout provider {payout.method!r} is configured here")
        return await self._record(key, await provider.find_payout(key))

    @activity.defn(name="record_bank_result")
    async def record_bank_result(self, record: BankResultRecord) -> PayoutProgress:
        """Record finance's word on a bank transfer: paid (the bank's reference) or returned."""
        result = record.result
        async with self.db.transaction() as session:
            payout = present(
                await session.scalar(
                    select(PartnerPayout).where(
                        PartnerPayout.run_id == record.run_id, PartnerPayout.attempt == record.attempt
                    )
                ),
                f"payout {record.attempt} of {record.run_id}",
            )
            if payout.status in FINAL_PAYOUT_STATUSES:
                return _progress(payout)
            run = await _run(session, record.run_id)
            before = {"payout_status": payout.status}
            if result.paid:
                payout.status, payout.provider_ref, payout.paid_by = PayoutStatus.SUCCEEDED, result.reference, result.by
            else:
                payout.status, payout.failure_reason = (
                    PayoutStatus.RETURNED,
                    f"returned by the bank: {result.reference}",
                )
            payout.final_at = utcnow()
            _audit(
                session,
                result.by,
                "settlement.bank_result",
                run,
                before,
                {"payout_status": payout.status},
                result.reference,
            )
            return _progress(payout)

    @activity.defn(name="settle_settlement_payout")
    async def settle_payout(self, ref: PayoutRef) -> None:
        """Book a succeeded payout (the partner's payable cleared against where the money left from) and
        mark the run paid."""
        key = payout_key(ref.run_id, ref.attempt)
        async with self.db.transaction() as session:
            payout = present(
                await session.scalar(select(PartnerPayout).where(PartnerPayout.key == key)), f"payout {key}"
            )
            if payout.status != PayoutStatus.SUCCEEDED:
                raise SettlementRefusedError(f"payout {key} is {payout.status}, not succeeded")
            run = await _run(session, ref.run_id, lock=True)
            source = BANK_CASH if payout.method == PayoutMethod.BANK else provider_clearing(payout.method)
            await post_transaction(
                session,
                key=f"{key}:paid",
                kind="partner_payout",
                currency=payout.currency,
                postings=[
                    Posting(partner_payable(payout.partner_id), payout.amount_minor),
                    Posting(source, -payout.amount_minor),
                ],
                memo=f"settlement {run.id} paid",
            )
            run.status, run.failure_reason = RunStatus.PAID, None
            await resolve_settlement_alert(session, kind=SETTLEMENT_PAYOUT_FAILED, run_id=run.id)

    @activity.defn(name="fail_settlement_payout")
    async def fail_payout(self, ref: PayoutRef) -> None:
        """The attempt's payout failed or came back: nothing is booked (the payable stays owed), the run
        is marked failed with the reason and finance alerted."""
        key = payout_key(ref.run_id, ref.attempt)
        async with self.db.transaction() as session:
            payout = present(
                await session.scalar(select(PartnerPayout).where(PartnerPayout.key == key)), f"payout {key}"
            )
            run = await _run(session, ref.run_id, lock=True)
            reason = payout.failure_reason or f"payout {payout.status}"
            run.status, run.failure_reason = RunStatus.PAYOUT_FAILED, reason
            await raise_settlement_alert(
                session,
                kind=SETTLEMENT_PAYOUT_FAILED,
                run_id=run.id,
                message=f"settlement run {run.id}: payout {ref.attempt} {payout.status} ({reason});"
                f" {payout.amount_minor} {payout.currency} still owed to {payout.partner_id}",
            )

    @activity.defn(name="settlements_due")
    async def due(self, request: DueRequest) -> list[SettlementStart]:
        """Per partner whose plan in force is on the cadence: its earliest period, closed at least
        `settle_after_s` ago, that holds an accrual in no run, or the last closed one if only clawbacks
        wait; unless that period has a run. One period per partner and tick: the runs of one partner
        go in order, each carrying in the previous one's carry-forward."""
        now = utcnow()
        closed_before = now - timedelta(seconds=self.settings.settlement.settle_after_s)
        async with self.db.sessions() as session:
            partners = await _partners_on(session, request.cadence, now)
            starts = []
            for partner_id, zone_name in partners:
                period = await _due_period(session, partner_id, request.cadence, ZoneInfo(zone_name), closed_before)
                if period is not None:
                    starts.append(self._start(partner_id, period))
        return starts

    def _start(self, partner_id: str, period: SettlementPeriod) -> SettlementStart:
        settings = self.settings.settlement
        return SettlementStart(
            run_id=settlement_run_id(partner_id, period.label),
            partner_id=partner_id,
            period_label=period.label,
            period_start=period.start,
            period_end=period.end,
            prepared_by="schedule",
            remind_after_s=settings.remind_after_s,
            payout_poll_schedule_s=tuple(settings.payout_poll_schedule_s),
        )


def _progress(payout: PartnerPayout) -> PayoutProgress:
    return PayoutProgress(
        run_id=payout.run_id,
        attempt=payout.attempt,
        key=payout.key,
        status=payout.status,
        failure_reason=payout.failure_reason,
    )


async def _partners_on(session: AsyncSession, cadence: Cadence, now: datetime) -> list[tuple[str, str]]:
    """Active partners whose plan in force now is on `cadence`: (id, time zone)."""
    assignments = await session.execute(
        select(PlanAssignment.partner_id, PlanAssignment.plan_id)
        .where(PlanAssignment.effective_from <= now)
        .order_by(PlanAssignment.partner_id, PlanAssignment.effective_from)
    )
    current = dict(assignments.all())  # the latest assignment of each partner wins
    plans = select(CommissionPlan.id).where(CommissionPlan.cadence == cadence.kind)
    if cadence.kind == CadenceKind.MINUTES:
        plans = plans.where(CommissionPlan.cadence_minutes == cadence.minutes)
    on_cadence = set((await session.scalars(plans)).all())
    chosen = sorted(partner for partner, plan in current.items() if plan in on_cadence)
    if not chosen:
        return []
    rows = await session.execute(
        select(Partner.id, Partner.time_zone)
        .where(Partner.id.in_(chosen), Partner.active.is_(True))
        .order_by(Partner.id)
    )
    return [(partner_id, zone) for partner_id, zone in rows.all()]


async def _due_period(
    session: AsyncSession, partner_id: str, cadence: Cadence, zone: ZoneInfo, closed_before: datetime
) -> SettlementPeriod | None:
    """The partner's earliest closed period without a run that holds an accrual in no run; else the last
    closed one, without a run, if a clawback waits; else None."""
    last_closed = previous_period(period_containing(closed_before, cadence, zone), cadence, zone)

    async def has_run(period: SettlementPeriod) -> bool:
        found = await session.scalar(
            select(SettlementRun.id).where(
                SettlementRun.partner_id == partner_id, SettlementRun.period_start == period.start
            )
        )
        return found is not None

    after: datetime | None = None
    while True:
        # An accrual left behind in a period that has its run (it came in after the freeze) is skipped.
        unsettled = select(func.min(CommissionAccrual.at)).where(
            CommissionAccrual.partner_id == partner_id,
            CommissionAccrual.run_id.is_(None),
            CommissionAccrual.reversed_by_refund_id.is_(None),
            CommissionAccrual.at < last_closed.end,
        )
        earliest = await session.scalar(unsettled if after is None else unsettled.where(CommissionAccrual.at >= after))
        if earliest is None:
            break
        period = period_containing(earliest, cadence, zone)
        if not await has_run(period):
            return period
        after = period.end
    pending = await session.scalar(
        select(CommissionClawback.id)
        .where(CommissionClawback.partner_id == partner_id, CommissionClawback.run_id.is_(None))
        .limit(1)
    )
    return last_closed if pending is not None and not await has_run(last_closed) else None
