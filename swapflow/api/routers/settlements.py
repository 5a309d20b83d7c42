"""Settlement endpoints: finance (and admins) list and read runs of their cities, download a statement
and act on a run through its workflow (approve, reject, recompute, retry a failed payout, say how a bank
transfer ended); a partner reads its own statements once finance has approved them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from swapflow.api.auth import Finance, Principal, require
from swapflow.api.deps import DatabaseDep, SessionDep, TemporalDep
from swapflow.api.problems import problem_responses
from swapflow.api.settlement_schemas import (
    BankPaid,
    BankResultBody,
    PartnerStatementPage,
    PartnerStatementSummary,
    PartnerStatementView,
    RejectBody,
    SettlementRunDetail,
    SettlementRunPage,
    SettlementRunSummary,
    SettlementStateView,
)
from swapflow.db.commissions import SettlementRun
from swapflow.domain.errors import Forbidden, NotFound
from swapflow.payments.bank_payouts import BANK_FILE_COLUMNS
from swapflow.services import settlement_statements as statements
from swapflow.services import settlements
from swapflow.services.settlement_statements import PARTNER_VISIBLE
from swapflow.services.temporal import connect
from swapflow.workflows.settlement_contract import (
    BankResult,
    RunStatus,
    SettlementActor,
    SettlementDecision,
    SettlementState,
)

router = APIRouter(tags=["settlements"])


async def _partner(principal: Annotated[Principal, Depends(require(partners=True))]) -> Principal:
    if not principal.is_partner:
        raise Forbidden("statements here are a partner account's own; finance reads runs at /v1/finance/settlements")
    return principal


PartnerCaller = Annotated[Principal, Depends(_partner)]
Limit = Annotated[int, Query(ge=1, le=500)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=80, description="The previous page's `next_cursor`.")]
CURSOR_PROBLEMS = problem_responses(404)
"""A listing's cursor that names no run of it."""
CSV = "text/csv"
CSV_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The statement: a row per line in order, then the total row (columns: "
        + ", ".join(statements.STATEMENT_COLUMNS)
        + "; amounts in minor units and in major units with the currency's decimals)",
        "content": {CSV: {"schema": {"type": "string"}}},
    }
}


def _csv(detail: statements.RunDetail) -> Response:
    return Response(
        statements.statement_csv(detail),
        media_type=f"{CSV}; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="statement-{detail.run.id}.csv"'},
    )


async def _finance_run(session: AsyncSession, principal: Principal, run_id: str) -> SettlementRun:
    """The run, if in the caller's cities (a run of no city: admins only)."""
    run = await statements.find_run(session, run_id)
    principal.check_city(run.city_code or "", "settlement run", run_id)
    return run


async def _partner_run(session: AsyncSession, principal: Principal, run_id: str) -> SettlementRun:
    """The partner's own run, once approved: another's, or a draft, does not exist for it."""
    run = await statements.find_run(session, run_id)
    if run.partner_id != principal.id or run.status not in PARTNER_VISIBLE:
        raise NotFound("settlement run", run_id)
    return run


# ---------------------------------------------------------------------------------- finance


@router.get("/v1/finance/settlements", response_model=SettlementRunPage, responses=CURSOR_PROBLEMS)
async def list_settlements(
    session: SessionDep,
    principal: Finance,
    status: Annotated[RunStatus | None, Query()] = None,
    city: Annotated[str | None, Query(max_length=16)] = None,
    partner: Annotated[str | None, Query(max_length=40, description="A partner id.")] = None,
    period: Annotated[str | None, Query(max_length=40, description="A period label: 2026-12, 2026-W49.")] = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> SettlementRunPage:
    """Settlement runs of the caller's cities, latest period first, a page at a time."""
    page = await statements.list_runs(
        session,
        cities=principal.visible_cities(city),
        statuses=None if status is None else [status],
        partner_id=partner,
        period_label=period,
        cursor=cursor,
        limit=limit,
    )
    return SettlementRunPage(
        items=[SettlementRunSummary.model_validate(run) for run in page.runs], next_cursor=page.next_cursor
    )


@router.get(
    "/v1/finance/settlements/bank-file",
    response_class=Response,
    responses={
        200: {
            "description": "UTF-8 CSV, a row per payout, oldest first (columns: "
            + ", ".join(BANK_FILE_COLUMNS)
            + "; payment_reference is the payout's key, which the bank's statement carries)",
            "content": {CSV: {"schema": {"type": "string"}}},
        },
        **problem_responses(409),
    },
)
async def settlement_bank_file(
    session: SessionDep, principal: Finance, city: Annotated[str | None, Query(max_length=16)] = None
) -> Response:
    """The bank transfer file of the caller's cities: every bank payout waiting for the bank. Finance
    sends it to the bank, then marks each run's payout paid or returned (`bank-result`). 409 if a
    partner in it lacks the bank details a transfer needs."""
    return Response(
        await statements.bank_file(session, cities=principal.visible_cities(city)),
        media_type=f"{CSV}; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="bank-transfers.csv"'},
    )


@router.get("/v1/finance/settlements/{run_id}", response_model=SettlementRunDetail)
async def get_settlement(run_id: str, session: SessionDep, principal: Finance) -> SettlementRunDetail:
    """A run: partner, period, status, totals, plan version, decisions, payouts, its workflow and its lines."""
    run = await _finance_run(session, principal, run_id)
    return SettlementRunDetail.of(await statements.run_detail(session, run))


@router.get("/v1/finance/settlements/{run_id}/statement.csv", response_class=Response, responses=CSV_RESPONSE)
async def settlement_statement(run_id: str, session: SessionDep, principal: Finance) -> Response:
    """The run's statement as CSV."""
    run = await _finance_run(session, principal, run_id)
    return _csv(await statements.run_detail(session, run))


ACTION_PROBLEMS = problem_responses(409, 503)
"""What an action may answer besides the new state: the run is not waiting for it, or no workflow service
(403: four eyes; 404: no such run in the caller's cities)."""


async def _workflow(db: DatabaseDep, temporal: TemporalDep, principal: Principal, run_id: str) -> tuple[Client, str]:
    """The client and the run's workflow id, once the run is found in the caller's cities."""
    async with db.sessions() as session:
        run = await _finance_run(session, principal, run_id)
    return await connect(temporal, settlements.UNAVAILABLE), run.workflow_id


def _answer(state: SettlementState, workflow_id: str) -> SettlementStateView:
    return SettlementStateView.model_validate({**state.model_dump(), "workflow_id": workflow_id})


@router.post("/v1/finance/settlements/{run_id}/approve", response_model=SettlementStateView, responses=ACTION_PROBLEMS)
async def approve_settlement(
    run_id: str, db: DatabaseDep, temporal: TemporalDep, principal: Finance
) -> SettlementStateView:
    """Approve a run awaiting approval: its payout goes out. Four eyes: whoever prepared the run or a plan
    version it uses may not (403)."""
    client, workflow_id = await _workflow(db, temporal, principal, run_id)
    decision = SettlementDecision(by=principal.id, approve=True)
    return _answer(await settlements.decide(client, workflow_id, decision), workflow_id)


@router.post("/v1/finance/settlements/{run_id}/reject", response_model=SettlementStateView, responses=ACTION_PROBLEMS)
async def reject_settlement(
    run_id: str, body: RejectBody, db: DatabaseDep, temporal: TemporalDep, principal: Finance
) -> SettlementStateView:
    """Reject a run awaiting approval, saying why; after corrections, `recompute` computes it again."""
    client, workflow_id = await _workflow(db, temporal, principal, run_id)
    decision = SettlementDecision(by=principal.id, approve=False, reason=body.reason)
    return _answer(await settlements.decide(client, workflow_id, decision), workflow_id)


@router.post(
    "/v1/finance/settlements/{run_id}/recompute", response_model=SettlementStateView, responses=ACTION_PROBLEMS
)
async def recompute_settlement(
    run_id: str, db: DatabaseDep, temporal: TemporalDep, principal: Finance
) -> SettlementStateView:
    """Freeze and compute a rejected run again, as its next revision, awaiting approval."""
    client, workflow_id = await _workflow(db, temporal, principal, run_id)
    return _answer(await settlements.recompute(client, workflow_id, SettlementActor(by=principal.id)), workflow_id)


@router.post(
    "/v1/finance/settlements/{run_id}/retry-payout", response_model=SettlementStateView, responses=ACTION_PROBLEMS
)
async def retry_settlement_payout(
    run_id: str, db: DatabaseDep, temporal: TemporalDep, principal: Finance
) -> SettlementStateView:
    """Pay a run whose payout failed or came back again, as a new payout."""
    client, workflow_id = await _workflow(db, temporal, principal, run_id)
    return _answer(await settlements.retry_payout(client, workflow_id, SettlementActor(by=principal.id)), workflow_id)


@router.post(
    "/v1/finance/settlements/{run_id}/bank-result", response_model=SettlementStateView, responses=ACTION_PROBLEMS
)
async def settlement_bank_result(
    run_id: str, body: BankResultBody, db: DatabaseDep, temporal: TemporalDep, principal: Finance
) -> SettlementStateView:
    """How a bank-transfer payout ended: `paid` with the bank's reference, or `returned` with why."""
    client, workflow_id = await _workflow(db, temporal, principal, run_id)
    if isinstance(body, BankPaid):
        result = BankResult(by=principal.id, paid=True, reference=body.reference)
    else:
        result = BankResult(by=principal.id, paid=False, reference=body.reason)
    return _answer(await settlements.bank_result(client, workflow_id, result), workflow_id)


# ---------------------------------------------------------------------------------- partners


@router.get("/v1/partner/statements", response_model=PartnerStatementPage, responses=CURSOR_PROBLEMS)
async def list_partner_statements(
    session: SessionDep, principal: PartnerCaller, cursor: Cursor = None, limit: Limit = 100
) -> PartnerStatementPage:
    """The calling partner's approved statements, latest period first, a page at a time."""
    page = await statements.list_runs(
        session, cities=None, statuses=PARTNER_VISIBLE, partner_id=principal.id, cursor=cursor, limit=limit
    )
    return PartnerStatementPage(
        items=[PartnerStatementSummary.model_validate(run) for run in page.runs], next_cursor=page.next_cursor
    )


@router.get("/v1/partner/statements/{run_id}", response_model=PartnerStatementView)
async def get_partner_statement(run_id: str, session: SessionDep, principal: PartnerCaller) -> PartnerStatementView:
    """One of the calling partner's statements: its lines and its payouts."""
    run = await _partner_run(session, principal, run_id)
    return PartnerStatementView.of(await statements.run_detail(session, run))


@router.get("/v1/partner/statements/{run_id}/statement.csv", response_class=Response, responses=CSV_RESPONSE)
async def partner_statement_csv(run_id: str, session: SessionDep, principal: PartnerCaller) -> Response:
    """One of the calling partner's statements as CSV."""
    run = await _partner_run(session, principal, run_id)
    return _csv(await statements.run_detail(session, run))
