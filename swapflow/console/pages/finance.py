"""Finance's pages: settlement runs (a page at a time with filters; a run with its lines, decisions,
payouts and its workflow's history; approve, reject with a reason, recompute, retry a payout, a bank
transfer's result; its statement as CSV), the refunds that need finance with their resolutions,
reconciliation differences with their resolution, and revenue and refunds per day as a chart. Finance
accounts and admins, of their cities. Actions call the services the API calls; what a service refuses
(four eyes, a run not waiting for it) is shown on the page beside the form."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from swapflow.api.auth import Principal, check_rider_access
from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep, TemporalDep
from swapflow.console.rendering import render
from swapflow.console.session import console_require
from swapflow.db.commissions import SettlementRun
from swapflow.db.money import ReconciliationException
from swapflow.domain.clock import utcnow
from swapflow.domain.errors import DomainError, Forbidden, Invalid, NotFound
from swapflow.domain.ops import OperatorRole
from swapflow.payments.bank_payouts import major_units
from swapflow.services import console_finance, console_swaps, refunds, settlements
from swapflow.services import settlement_statements as statements
from swapflow.services.reconciliation import resolve_exception
from swapflow.services.temporal import connect
from swapflow.settings import Settings
from swapflow.workflows.refund_contract import refund_workflow_id
from swapflow.workflows.settlement_contract import BankResult, RunStatus, SettlementActor, SettlementDecision

router = APIRouter(prefix="/finance")

FinanceUser = Annotated[Principal, Depends(console_require(OperatorRole.FINANCE))]
PAGE = 50
CHART_DAYS = 30
Text = Annotated[str, Form(max_length=500)]


def _htmx(request: Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _money(amount_minor: int | None, currency: str) -> str:
    return "—" if amount_minor is None else f"{major_units(amount_minor, currency)} {currency}"


def _context(**values: Any) -> dict[str, Any]:
    return {"section": "finance", "money": _money, **values}


def _query(**params: Any) -> str:
    """A listing's query string, without its empty filters."""
    return urlencode({key: value for key, value in params.items() if value not in (None, "")})


# ---------------------------------------------------------------------------------- overview


@router.get("", response_class=HTMLResponse)
async def overview(request: Request, session: SessionDep, user: FinanceUser) -> HTMLResponse:
    """Revenue and refunds per day, and what waits for finance."""
    cities = user.visible_cities()
    end = utcnow().date()
    series = await console_finance.revenue_and_refunds(
        session, start=end - timedelta(days=CHART_DAYS - 1), end=end, cities=cities
    )
    waiting = await statements.list_runs(session, cities=cities, statuses=[RunStatus.AWAITING_APPROVAL], limit=PAGE)
    failed = await statements.list_runs(session, cities=cities, statuses=[RunStatus.PAYOUT_FAILED], limit=PAGE)
    needing = await console_finance.refunds_needing_finance(session, cities)
    differences = await console_finance.difference_page(session, limit=PAGE)
    charts = [
        {
            "id": f"money-{figures.currency.lower()}",
            "label": f"Revenue and refunds per day, {figures.currency} (UTC days)",
            "currency": figures.currency,
            "days": figures.days,
            "data": {
                "x": [_epoch(day) for day in figures.days],
                "series": [
                    {"label": "revenue", "values": [_major(v, figures.currency) for v in figures.revenue_minor]},
                    {"label": "refunds", "values": [_major(v, figures.currency) for v in figures.refunds_minor]},
                ],
                "steps": False,
            },
            "revenue": sum(figures.revenue_minor),
            "refunds": sum(figures.refunds_minor),
        }
        for figures in series
    ]
    return render(
        request,
        "finance/overview.html",
        _context(
            charts=charts,
            days=CHART_DAYS,
            awaiting=waiting.runs,
            failed=failed.runs,
            escalated=sum(1 for row in needing if row.escalated),
            stuck=sum(1 for row in needing if not row.escalated),
            differences=len(differences.differences),
            more_differences=differences.next_cursor is not None,
        ),
        user=user,
    )


def _epoch(day: date) -> int:
    return int(datetime.combine(day, time.min, UTC).timestamp())


def _major(amount_minor: int, currency: str) -> float:
    """A chart's value: major units."""
    return float(major_units(amount_minor, currency))


# ---------------------------------------------------------------------------------- settlement runs


@router.get("/settlements", response_class=HTMLResponse)
async def settlement_runs(
    request: Request,
    session: SessionDep,
    user: FinanceUser,
    status: Annotated[RunStatus | None, Query()] = None,
    city: Annotated[str | None, Query(max_length=16)] = None,
    partner: Annotated[str | None, Query(max_length=40)] = None,
    period: Annotated[str | None, Query(max_length=40)] = None,
    cursor: Annotated[str | None, Query(max_length=80)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = PAGE,
) -> HTMLResponse:
    """Settlement runs of the user's cities, latest period first, `limit` a page."""
    city, partner, period = city or None, partner or None, period or None
    page = await statements.list_runs(
        session,
        cities=user.visible_cities(city),
        statuses=None if status is None else [status],
        partner_id=partner,
        period_label=period,
        cursor=cursor or None,
        limit=limit,
    )
    filters = {
        "status": status.value if status else "",
        "city": city,
        "partner": partner,
        "period": period,
        "limit": limit if limit != PAGE else None,
    }
    return render(
        request,
        "finance/settlements.html",
        _context(
            runs=page.runs,
            filters=filters,
            statuses=list(RunStatus),
            cities=sorted(user.cities) if user.cities is not None else None,
            next_query=_query(**filters, cursor=page.next_cursor) if page.next_cursor else None,
            first_query=_query(**filters) if cursor else None,
        ),
        user=user,
    )


async def _visible_run(session: AsyncSession, user: Principal, run_id: str) -> SettlementRun:
    """The run, if in the user's cities (a run of no city: admins only)."""
    run = await statements.find_run(session, run_id)
    user.check_city(run.city_code or "", "settlement run", run_id)
    return run


async def _run_page(
    request: Request,
    db: DatabaseDep,
    settings: Settings,
    temporal: TemporalDep,
    user: Principal,
    run_id: str,
    *,
    message: str | None = None,
    error: DomainError | None = None,
) -> HTMLResponse:
    """A run's page, or (to an htmx form) its part that changes, with what the last action said."""
    async with db.sessions() as session:
        run = await _visible_run(session, user, run_id)
        detail = await statements.run_detail(session, run)
    context = _context(
        detail=detail,
        run=detail.run,
        history=await console_swaps.workflow_history(temporal, settings.temporal, detail.run.workflow_id),
        message=message,
        error=error,
        awaiting=detail.run.status == RunStatus.AWAITING_APPROVAL,
        rejected=detail.run.status == RunStatus.REJECTED,
        payout_failed=detail.run.status == RunStatus.PAYOUT_FAILED,
        awaiting_bank=any(p.status == "awaiting_bank" for p in detail.payouts),
    )
    status_code = 200
    if error is not None and not _htmx(request):
        status_code = 403 if isinstance(error, Forbidden) else 422 if isinstance(error, Invalid) else 409
    template = "finance/_run.html" if _htmx(request) else "finance/run.html"
    return render(request, template, context, user=user, status_code=status_code)


@router.get("/settlements/{run_id}", response_class=HTMLResponse)
async def settlement_run(
    request: Request, run_id: str, db: DatabaseDep, settings: SettingsDep, temporal: TemporalDep, user: FinanceUser
) -> HTMLResponse:
    """A run: partner, period, status, totals, plan version, its lines, decisions, payouts and its
    workflow's history."""
    return await _run_page(request, db, settings, temporal, user, run_id)


@router.get("/settlements/{run_id}/statement.csv")
async def settlement_statement(run_id: str, session: SessionDep, user: FinanceUser) -> Response:
    """The run's statement as CSV (the API's columns)."""
    detail = await statements.run_detail(session, await _visible_run(session, user, run_id))
    return Response(
        statements.statement_csv(detail),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="statement-{run_id}.csv"'},
    )


async def _act(
    request: Request,
    db: DatabaseDep,
    settings: Settings,
    temporal: TemporalDep,
    user: Principal,
    run_id: str,
    action: Any,
    done: str,
) -> HTMLResponse:
    """Run `action(client, workflow_id)` on the run's workflow and show the run with what it said."""
    async with db.sessions() as session:
        run = await _visible_run(session, user, run_id)
    try:
        client: Client = await connect(temporal, settlements.UNAVAILABLE)
        state = await action(client, run.workflow_id)
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise
        return await _run_page(request, db, settings, temporal, user, run_id, error=exc)
    return await _run_page(
        request, db, settings, temporal, user, run_id, message=f"{done}: the run is {state.status.value}."
    )


@router.post("/settlements/{run_id}/approve", response_class=HTMLResponse)
async def approve(
    request: Request, run_id: str, db: DatabaseDep, settings: SettingsDep, temporal: TemporalDep, user: FinanceUser
) -> HTMLResponse:
    """Approve a run awaiting approval (four eyes: not whoever prepared it or a plan version it uses)."""
    decision = SettlementDecision(by=user.id, approve=True)
    return await _act(
        request, db, settings, temporal, user, run_id, lambda c, w: settlements.decide(c, w, decision), "Approved"
    )


@router.post("/settlements/{run_id}/reject", response_class=HTMLResponse)
async def reject(
    request: Request,
    run_id: str,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: FinanceUser,
    reason: Text = "",
) -> HTMLResponse:
    """Reject a run awaiting approval, saying why."""
    if not reason.strip():
        return await _run_page(
            request, db, settings, temporal, user, run_id, error=Invalid("a rejection says why: write a reason")
        )
    decision = SettlementDecision(by=user.id, approve=False, reason=reason.strip())
    return await _act(
        request, db, settings, temporal, user, run_id, lambda c, w: settlements.decide(c, w, decision), "Rejected"
    )


@router.post("/settlements/{run_id}/recompute", response_class=HTMLResponse)
async def recompute(
    request: Request, run_id: str, db: DatabaseDep, settings: SettingsDep, temporal: TemporalDep, user: FinanceUser
) -> HTMLResponse:
    """Compute a rejected run again, as its next revision."""
    actor = SettlementActor(by=user.id)
    return await _act(
        request, db, settings, temporal, user, run_id, lambda c, w: settlements.recompute(c, w, actor), "Recomputed"
    )


@router.post("/settlements/{run_id}/retry-payout", response_class=HTMLResponse)
async def retry_payout(
    request: Request, run_id: str, db: DatabaseDep, settings: SettingsDep, temporal: TemporalDep, user: FinanceUser
) -> HTMLResponse:
    """Pay a run whose payout failed or came back again."""
    actor = SettlementActor(by=user.id)
    return await _act(
        request,
        db,
        settings,
        temporal,
        user,
        run_id,
        lambda c, w: settlements.retry_payout(c, w, actor),
        "Payout retried",
    )


@router.post("/settlements/{run_id}/bank-result", response_class=HTMLResponse)
async def bank_result(
    request: Request,
    run_id: str,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: FinanceUser,
    outcome: Annotated[str, Form(pattern="^(paid|returned)$")],
    reference: Text = "",
) -> HTMLResponse:
    """How a bank transfer ended: paid (the bank's reference) or returned (why)."""
    if not reference.strip():
        what = "the bank's reference" if outcome == "paid" else "why it came back"
        return await _run_page(request, db, settings, temporal, user, run_id, error=Invalid(f"say {what}"))
    result = BankResult(by=user.id, paid=outcome == "paid", reference=reference.strip())
    return await _act(
        request,
        db,
        settings,
        temporal,
        user,
        run_id,
        lambda c, w: settlements.bank_result(c, w, result),
        "Bank result recorded",
    )


# ---------------------------------------------------------------------------------- refunds


async def _refunds_page(
    request: Request, db: DatabaseDep, user: Principal, *, message: str | None = None, error: DomainError | None = None
) -> HTMLResponse:
    async with db.sessions() as session:
        rows = await console_finance.refunds_needing_finance(session, user.visible_cities())
    template = "finance/_refunds.html" if _htmx(request) else "finance/refunds.html"
    status_code = 409 if error is not None and not _htmx(request) else 200
    return render(
        request,
        template,
        _context(rows=rows, message=message, error=error, transfer_methods=list(refunds.TRANSFER_ACCOUNTS)),
        user=user,
        status_code=status_code,
    )


@router.get("/refunds", response_class=HTMLResponse)
async def refunds_page(request: Request, db: DatabaseDep, user: FinanceUser) -> HTMLResponse:
    """Refunds escalated to finance, and those stuck past their expected arrival."""
    return await _refunds_page(request, db, user)


@router.get("/refunds/{refund_id}", response_class=HTMLResponse)
async def refund_page(
    request: Request, refund_id: str, db: DatabaseDep, settings: SettingsDep, temporal: TemporalDep, user: FinanceUser
) -> HTMLResponse:
    """A refund: amount, method, status at the provider, how finance resolved it, and its workflow's
    history."""
    async with db.sessions() as session:
        refund = await refunds.find_refund(session, refund_id)
        await check_rider_access(session, user, refund.rider_id, "refund", refund_id)
    history = await console_swaps.workflow_history(temporal, settings.temporal, refund_workflow_id(refund.id))
    return render(request, "finance/refund.html", _context(refund=refund, history=history), user=user)


async def _check_refund(db: DatabaseDep, user: Principal, refund_id: str) -> None:
    """404 for a refund the user may not see (another city's rider's)."""
    async with db.sessions() as session:
        refund = await refunds.find_refund(session, refund_id)
        await check_rider_access(session, user, refund.rider_id, "refund", refund_id)


@router.post("/refunds/{refund_id}/resubmit", response_class=HTMLResponse)
async def resubmit(
    request: Request,
    refund_id: str,
    db: DatabaseDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    user: FinanceUser,
    note: Text = "",
) -> HTMLResponse:
    """Send an escalated refund to its provider again."""
    await _check_refund(db, user, refund_id)
    try:
        await refunds.resubmit_refund(db, settings, temporal, refund_id, actor=user.id, note=note)
    except DomainError as exc:
        return await _refunds_page(request, db, user, error=exc)
    return await _refunds_page(request, db, user, message=f"Refund {refund_id} sent to its provider again.")


@router.post("/refunds/{refund_id}/paid-by-transfer", response_class=HTMLResponse)
async def paid_by_transfer(
    request: Request,
    refund_id: str,
    db: DatabaseDep,
    user: FinanceUser,
    method: Annotated[str, Form(max_length=16)],
    reference: Annotated[str, Form(min_length=1, max_length=120)],
    note: Text = "",
) -> HTMLResponse:
    """Finance paid the rider an escalated refund another way."""
    await _check_refund(db, user, refund_id)
    try:
        async with db.transaction() as session:
            await refunds.pay_refund_by_transfer(
                session, refund_id, method=method, reference=reference, actor=user.id, note=note
            )
    except DomainError as exc:
        return await _refunds_page(request, db, user, error=exc)
    return await _refunds_page(request, db, user, message=f"Refund {refund_id} paid by {method} transfer {reference}.")


@router.post("/refunds/{refund_id}/refunded-offline", response_class=HTMLResponse)
async def refunded_offline(
    request: Request,
    refund_id: str,
    db: DatabaseDep,
    user: FinanceUser,
    reference: Annotated[str, Form(min_length=1, max_length=120)],
    note: Text = "",
) -> HTMLResponse:
    """An escalated refund was returned outside swapflow through its provider."""
    await _check_refund(db, user, refund_id)
    try:
        async with db.transaction() as session:
            await refunds.mark_refunded_offline(session, refund_id, reference=reference, actor=user.id, note=note)
    except DomainError as exc:
        return await _refunds_page(request, db, user, error=exc)
    return await _refunds_page(request, db, user, message=f"Refund {refund_id} marked refunded offline ({reference}).")


# ---------------------------------------------------------------------------------- reconciliation


@router.get("/reconciliation", response_class=HTMLResponse)
async def reconciliation(
    request: Request,
    session: SessionDep,
    user: FinanceUser,
    status: Annotated[str, Query(pattern="^(open|resolved|all)$")] = "open",
    provider: Annotated[str | None, Query(max_length=16)] = None,
    day: Annotated[date | None, Query()] = None,
    cursor: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    """Reconciliation differences, latest first, and the latest runs per provider."""
    provider = provider or None
    page = await console_finance.difference_page(
        session,
        status=None if status == "all" else status,
        provider=provider,
        day=day,
        cursor=cursor,
        limit=PAGE,
    )
    filters = {"status": status, "provider": provider, "day": day.isoformat() if day else ""}
    return render(
        request,
        "finance/reconciliation.html",
        _context(
            differences=page.differences,
            runs=await console_finance.latest_reconciliations(session),
            filters=filters,
            next_query=_query(**filters, cursor=page.next_cursor) if page.next_cursor else None,
            first_query=_query(**filters) if cursor else None,
        ),
        user=user,
    )


@router.post("/reconciliation/{exception_id}/resolve", response_class=HTMLResponse)
async def resolve_difference(
    request: Request,
    exception_id: int,
    db: DatabaseDep,
    user: FinanceUser,
    note: Text = "",
) -> HTMLResponse:
    """Mark a difference resolved, saying how."""
    error: DomainError | None = None
    if not note.strip():
        error = Invalid("say how the difference was resolved")
    else:
        try:
            async with db.transaction() as session:
                await resolve_exception(session, exception_id, actor=user.id, note=note.strip())
        except DomainError as exc:
            if isinstance(exc, NotFound):
                raise
            error = exc
    async with db.sessions() as session:
        difference = await session.get(ReconciliationException, exception_id)
    context = _context(difference=difference, error=error, message=None if error else "Resolved.")
    if _htmx(request):
        return render(request, "finance/_difference.html", context, user=user)
    return render(request, "finance/difference.html", context, user=user, status_code=422 if error else 200)
