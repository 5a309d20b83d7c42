"""What partners earn (pure): a swap's accruals under the plan version in force, overrides up the agent
tree to its depth, and a period's statement with marginal tiers, cap, clawbacks and minimum payout, whose
lines add up exactly to what is paid."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from swapflow.domain.commissions import (
    Accrual,
    AccrualKind,
    Clawback,
    CompletedSwap,
    CurrencyMismatch,
    LineKind,
    Partner,
    PartnerKind,
    Period,
    PlanVersion,
    Statement,
    Tier,
    accrue,
    statement,
)

NOVEMBER = Period(start=datetime(2026, 11, 1, tzinfo=UTC), end=datetime(2026, 12, 1, tzinfo=UTC))
OCTOBER = datetime(2026, 10, 10, tzinfo=UTC)
HOST = Partner(id="host-1", kind=PartnerKind.STATION_HOST)
FRANCHISEE = Partner(id="fr-sh", kind=PartnerKind.CITY_FRANCHISEE)


def plan(plan_id: str = "plan", version: int = 1, **terms: Any) -> PlanVersion:
    terms.setdefault("effective_from", datetime(2026, 1, 1, tzinfo=UTC))
    terms.setdefault("currency", "CNY")
    return PlanVersion(plan_id=plan_id, version=version, **terms)


def swap(n: int, net: int, *, at: datetime | None = None, currency: str = "CNY") -> CompletedSwap:
    when = at if at is not None else NOVEMBER.start + timedelta(minutes=n)
    return CompletedSwap(id=f"swap-{n}", completed_at=when, net_revenue_minor=net, currency=currency)


def hosted(terms: PlanVersion, revenues: Sequence[int]) -> list[Accrual]:
    """The host's accruals on November's swaps of these net revenues, in this order."""
    return [
        line
        for n, net in enumerate(revenues, start=1)
        for line in accrue(swap(n, net), host=HOST, franchisee=None, agents=(), plans={HOST.id: [terms]})
    ]


def settle(terms: PlanVersion, accruals: Sequence[Accrual], **more: Any) -> Statement:
    return statement(HOST.id, NOVEMBER, currency="CNY", accruals=accruals, plans=[terms], **more)


def lines_of(result: Statement, kind: LineKind) -> list[int]:
    return [line.amount_minor for line in result.lines if line.kind == kind]


def agent_tree(depth: int) -> list[Partner]:
    """An agent and its ancestors, parent first: agent-0 recruited by agent-1, by agent-2, …"""
    return [
        Partner(id=f"agent-{n}", kind=PartnerKind.CHANNEL_AGENT, parent_id=f"agent-{n + 1}" if n < depth else None)
        for n in range(depth + 1)
    ]


# Accrual of one swap


def test_a_percentage_plan_earns_its_basis_points_of_the_net_revenue_rounded_half_up() -> None:
    five_percent = plan(percent_bp=500)

    [half] = hosted(five_percent, [1990])  # 99.5
    [below_half] = hosted(five_percent, [1989])  # 99.45

    assert (half.kind, half.amount_minor, half.basis_minor, half.rate_bp) == (AccrualKind.PERCENTAGE, 100, 1990, 500)
    assert below_half.amount_minor == 99


def test_a_fixed_plan_earns_its_amount_per_swap_whatever_the_revenue() -> None:
    lines = hosted(plan(fixed_minor=50), [0, 1990])

    assert [(line.kind, line.amount_minor, line.basis_minor) for line in lines] == [(AccrualKind.FIXED, 50, None)] * 2


def test_host_and_franchisee_each_earn_on_the_whole_net_revenue() -> None:
    plans = {HOST.id: [plan("hosts", percent_bp=1000)], FRANCHISEE.id: [plan("franchise", percent_bp=500)]}

    lines = accrue(swap(1, 2000), host=HOST, franchisee=FRANCHISEE, agents=(), plans=plans)

    assert [(line.partner_id, line.role, line.plan_id, line.amount_minor) for line in lines] == [
        (HOST.id, PartnerKind.STATION_HOST, "hosts", 200),
        (FRANCHISEE.id, PartnerKind.CITY_FRANCHISEE, "franchise", 100),
    ]


def test_the_agents_ancestors_earn_their_levels_percentage_of_the_agents_commission() -> None:
    agent, parent, grandparent = agent_tree(2)
    agents_plan = plan("agents", percent_bp=1000, fixed_minor=5, overrides_bp=(2000, 1000))

    lines = accrue(
        swap(1, 1000), host=None, franchisee=None, agents=[agent, parent, grandparent], plans={agent.id: [agents_plan]}
    )

    # The agent earns 100 + 5; each level's percentage is of those 105, not of the level below's override.
    assert [(line.partner_id, line.kind, line.level, line.basis_minor, line.amount_minor) for line in lines] == [
        (agent.id, AccrualKind.PERCENTAGE, None, 1000, 100),
        (agent.id, AccrualKind.FIXED, None, None, 5),
        (parent.id, AccrualKind.OVERRIDE, 1, 105, 21),
        (grandparent.id, AccrualKind.OVERRIDE, 2, 105, 11),  # 10.5, half up
    ]
    assert {line.plan_id for line in lines} == {"agents"}


def test_overrides_stop_at_the_configured_depth() -> None:
    chain = agent_tree(4)

    lines = accrue(
        swap(1, 1000),
        host=None,
        franchisee=None,
        agents=chain,
        plans={"agent-0": [plan(percent_bp=1000, overrides_bp=(2000, 1000))]},
    )

    assert [line.partner_id for line in lines if line.kind == AccrualKind.OVERRIDE] == ["agent-1", "agent-2"]


def test_overrides_stop_at_the_top_of_the_tree() -> None:
    agent, parent = agent_tree(1)

    lines = accrue(
        swap(1, 1000),
        host=None,
        franchisee=None,
        agents=[agent, parent],
        plans={agent.id: [plan(percent_bp=1000, overrides_bp=(2000, 1000, 500))]},
    )

    assert [line.level for line in lines if line.kind == AccrualKind.OVERRIDE] == [1]


def test_an_agent_chain_must_go_from_child_to_parent() -> None:
    agent, parent, grandparent = agent_tree(2)

    with pytest.raises(ValueError, match="not the parent"):
        accrue(swap(1, 1000), host=None, franchisee=None, agents=[agent, grandparent], plans={})


def test_the_plan_version_in_force_at_the_swaps_completion_applies() -> None:
    march = datetime(2026, 3, 1, tzinfo=UTC)
    versions = [plan(version=1, percent_bp=500), plan(version=2, effective_from=march, percent_bp=700)]

    def version_at(at: datetime) -> list[int]:
        lines = accrue(swap(1, 1000, at=at), host=HOST, franchisee=None, agents=(), plans={HOST.id: versions})
        return [line.plan_version for line in lines]

    assert version_at(datetime(2025, 12, 31, tzinfo=UTC)) == []  # before any version: nothing accrues
    assert version_at(march - timedelta(microseconds=1)) == [1]
    assert version_at(march) == [2]
    assert version_at(datetime(2026, 11, 5, tzinfo=UTC)) == [2]


def test_a_plan_in_another_currency_than_the_swap_refuses_to_accrue() -> None:
    with pytest.raises(CurrencyMismatch):
        accrue(
            swap(1, 1000, currency="EUR"),
            host=HOST,
            franchisee=None,
            agents=(),
            plans={HOST.id: [plan(percent_bp=500)]},
        )


def test_a_statement_refuses_an_accrual_in_another_currency() -> None:
    euro_plan = plan(currency="EUR", percent_bp=500)
    euros = accrue(swap(1, 1000, currency="EUR"), host=HOST, franchisee=None, agents=(), plans={HOST.id: [euro_plan]})

    with pytest.raises(CurrencyMismatch):
        statement(HOST.id, NOVEMBER, currency="CNY", accruals=euros, plans=[plan(percent_bp=500)])


# The statement of a period


def test_volume_tiers_are_marginal_only_the_swaps_above_a_threshold_earn_its_rate() -> None:
    tiered = plan(percent_bp=500, tiers=(Tier(above_swaps=1000, percent_bp=700),))  # 5 % up to 1,000, 7 % above

    at_threshold = settle(tiered, hosted(tiered, [1000] * 1000))
    above = settle(tiered, hosted(tiered, [1000] * 1000 + [3000]))

    assert at_threshold.total_minor == 50_000 and lines_of(at_threshold, LineKind.TIER_ADJUSTMENT) == []
    # The 1,001st swap earns 7 % (150 accrued at 5 %, 60 more); the first thousand stay at 5 %.
    assert lines_of(above, LineKind.TIER_ADJUSTMENT) == [60]
    assert above.total_minor == 50_000 + 210


def test_tiers_number_the_swaps_by_completion_time() -> None:
    tiered = plan(percent_bp=500, tiers=(Tier(above_swaps=1, percent_bp=1000),))
    accruals = hosted(tiered, [1000, 3000])

    result = settle(tiered, list(reversed(accruals)))

    [tier] = [line for line in result.lines if line.kind == LineKind.TIER_ADJUSTMENT]
    assert (tier.swaps, tier.basis_minor, tier.amount_minor) == (1, 3000, 150)  # the later swap, not the first given


def test_a_cap_cuts_what_the_period_earned_above_it() -> None:
    capped = plan(percent_bp=1000, cap_minor=250)

    result = settle(capped, hosted(capped, [1000, 1000, 1000]))

    assert lines_of(result, LineKind.CAP) == [-50]
    assert result.total_minor == 250


def test_a_cap_limits_earnings_not_what_is_carried_in() -> None:
    capped = plan(percent_bp=1000, cap_minor=250)

    result = settle(capped, hosted(capped, [1000, 1000, 1000]), carried_in_minor=40)

    assert result.total_minor == 290


def test_below_the_minimum_payout_the_amount_carries_forward_to_the_next_period() -> None:
    terms = plan(percent_bp=1000, minimum_payout_minor=500)
    november = settle(terms, hosted(terms, [3000]))

    december = statement(
        HOST.id,
        Period(start=NOVEMBER.end, end=datetime(2027, 1, 1, tzinfo=UTC)),
        currency="CNY",
        accruals=[line.model_copy(update={"at": NOVEMBER.end}) for line in hosted(terms, [3000])],
        carried_in_minor=november.carry_forward_minor,
        plans=[terms],
    )

    assert (november.total_minor, november.carry_forward_minor, lines_of(november, LineKind.CARRY_FORWARD)) == (
        0,
        300,
        [-300],
    )
    assert (december.total_minor, december.carry_forward_minor, lines_of(december, LineKind.CARRIED_IN)) == (
        600,
        0,
        [300],
    )


def test_a_clawback_is_a_negative_line_pointing_at_its_refund() -> None:
    terms = plan(percent_bp=1000)
    [settled] = hosted(terms, [2000])
    refunded = Clawback(accrual=settled.model_copy(update={"at": OCTOBER}), refund_id="swap-refund-7")

    result = settle(terms, hosted(terms, [5000]), clawbacks=[refunded])

    [clawback] = [line for line in result.lines if line.kind == LineKind.CLAWBACK]
    assert (clawback.amount_minor, clawback.swap_id, clawback.refund_id) == (-200, settled.swap_id, "swap-refund-7")
    assert result.total_minor == 300


def test_clawbacks_beyond_what_the_period_earned_carry_forward_as_owed() -> None:
    terms = plan(percent_bp=1000)
    [settled] = hosted(terms, [9000])
    refunded = Clawback(accrual=settled.model_copy(update={"at": OCTOBER}), refund_id="r-1")

    result = settle(terms, hosted(terms, [1000]), clawbacks=[refunded])

    assert (result.total_minor, result.carry_forward_minor) == (0, -800)


def test_a_refund_within_the_open_period_is_not_a_clawback() -> None:
    terms = plan(percent_bp=1000)
    [open_accrual] = hosted(terms, [1000])

    with pytest.raises(ValueError, match="not in a settled period"):
        settle(terms, [], clawbacks=[Clawback(accrual=open_accrual, refund_id="r-1")])


def test_a_swap_of_another_period_is_refused() -> None:
    terms = plan(percent_bp=1000)
    [accrual] = hosted(terms, [1000])

    with pytest.raises(ValueError, match="outside the period"):
        settle(terms, [accrual.model_copy(update={"at": OCTOBER})])


AWKWARD = [
    # terms, net revenues of the period's swaps, what is paid
    pytest.param(dict(percent_bp=333), [1, 15, 16, 149, 150, 99_999], 3341, id="odd-rate"),
    pytest.param(dict(percent_bp=500), [10, 30, 50], 6, id="half-up-not-half-even"),  # .5, 1.5, 2.5
    pytest.param(dict(percent_bp=500, tiers=(Tier(above_swaps=2, percent_bp=750),)), [101] * 4, 25, id="tier"),
    pytest.param(dict(percent_bp=1000, fixed_minor=7, cap_minor=100), [999, 999], 100, id="cap"),
    pytest.param(dict(fixed_minor=1), [0, 0, 0], 3, id="fixed-on-free-swaps"),
    pytest.param(dict(percent_bp=9999), [2**31 - 1], 2_147_268_899, id="large"),
    pytest.param(dict(percent_bp=1, minimum_payout_minor=1), [4999, 4999], 0, id="all-rounded-away"),
]


@pytest.mark.parametrize(("terms", "revenues", "paid"), AWKWARD)
def test_a_statements_lines_add_up_exactly_to_its_total(terms: dict[str, Any], revenues: list[int], paid: int) -> None:
    result = settle(plan(**terms), hosted(plan(**terms), revenues))

    assert result.total_minor == paid
    assert sum(line.amount_minor for line in result.lines) == result.total_minor
