"""commissions: partners, plans, accruals, settlement runs, payouts; the audit trail

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 14:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "audit_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("actor", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("entity", sa.String(length=40), nullable=False),
        sa.Column("entity_id", sa.String(length=120), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_events_actor"), ["actor"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_events_at"), ["at"], unique=False)
        batch_op.create_index("ix_audit_events_entity", ["entity", "entity_id"], unique=False)

    op.create_table(
        "commission_plans",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("cadence", sa.String(length=16), nullable=False),
        sa.Column("cadence_minutes", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "partners",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("parent_id", sa.String(length=40), nullable=True),
        sa.Column("cities", sa.JSON(), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("referral_code", sa.String(length=40), nullable=True),
        sa.Column("payout_method", sa.String(length=16), nullable=False),
        sa.Column("payout_account", sa.String(length=120), nullable=True),
        sa.Column("payout_details", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["parent_id"],
            ["partners.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("referral_code"),
    )
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_partners_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_partners_parent_id"), ["parent_id"], unique=False)

    op.create_table(
        "sandbox_payouts",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("idempotency_key", sa.String(length=160), nullable=False),
        sa.Column("account", sa.String(length=120), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settles_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("idempotency_key"),
    )
    op.create_table(
        "city_franchisees",
        sa.Column("city_code", sa.String(length=16), nullable=False),
        sa.Column("partner_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["city_code"],
            ["cities.code"],
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
        ),
        sa.PrimaryKeyConstraint("city_code"),
    )
    with op.batch_alter_table("city_franchisees", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_city_franchisees_partner_id"), ["partner_id"], unique=False)

    op.create_table(
        "commission_plan_versions",
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("percent_bp", sa.Integer(), nullable=False),
        sa.Column("fixed_minor", sa.BigInteger(), nullable=False),
        sa.Column("tiers", sa.JSON(), nullable=False),
        sa.Column("overrides_bp", sa.JSON(), nullable=False),
        sa.Column("cap_minor", sa.BigInteger(), nullable=True),
        sa.Column("minimum_payout_minor", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["commission_plans.id"],
        ),
        sa.PrimaryKeyConstraint("plan_id", "version"),
    )
    op.create_table(
        "plan_assignments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("partner_id", sa.String(length=40), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("effective_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("assigned_by", sa.String(length=40), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["commission_plans.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("partner_id", "effective_from"),
    )
    with op.batch_alter_table("plan_assignments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_plan_assignments_partner_id"), ["partner_id"], unique=False)

    op.create_table(
        "settlement_runs",
        sa.Column("id", sa.String(length=80), nullable=False),
        sa.Column("partner_id", sa.String(length=40), nullable=False),
        sa.Column("city_code", sa.String(length=16), nullable=True),
        sa.Column("period_label", sa.String(length=40), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("workflow_id", sa.String(length=120), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=True),
        sa.Column("plan_version", sa.Integer(), nullable=True),
        sa.Column("accruals_count", sa.Integer(), nullable=False),
        sa.Column("carried_in_minor", sa.BigInteger(), nullable=False),
        sa.Column("total_minor", sa.BigInteger(), nullable=False),
        sa.Column("carry_forward_minor", sa.BigInteger(), nullable=False),
        sa.Column("prepared_by", sa.String(length=40), nullable=False),
        sa.Column("approved_by", sa.String(length=40), nullable=True),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("partner_id", "period_start"),
    )
    with op.batch_alter_table("settlement_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_settlement_runs_city_code"), ["city_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_settlement_runs_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_settlement_runs_partner_id"), ["partner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_settlement_runs_status"), ["status"], unique=False)

    op.create_table(
        "commission_accruals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("order_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=40), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("level", sa.Integer(), nullable=True),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("plan_id", sa.String(length=40), nullable=False),
        sa.Column("plan_version", sa.Integer(), nullable=False),
        sa.Column("basis_minor", sa.BigInteger(), nullable=True),
        sa.Column("rate_bp", sa.Integer(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=80), nullable=True),
        sa.Column("reversed_by_refund_id", sa.String(length=80), nullable=True),
        sa.Column("reversed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["settlement_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("commission_accruals", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_commission_accruals_order_id"), ["order_id"], unique=False)
        batch_op.create_index("ix_commission_accruals_partner_at", ["partner_id", "at"], unique=False)
        batch_op.create_index(batch_op.f("ix_commission_accruals_run_id"), ["run_id"], unique=False)

    op.create_table(
        "partner_attributions",
        sa.Column("rider_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=40), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("by", sa.String(length=40), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
        ),
        sa.ForeignKeyConstraint(
            ["rider_id"],
            ["riders.id"],
        ),
        sa.PrimaryKeyConstraint("rider_id"),
    )
    with op.batch_alter_table("partner_attributions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_partner_attributions_partner_id"), ["partner_id"], unique=False)

    op.create_table(
        "partner_payouts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=160), nullable=False),
        sa.Column("run_id", sa.String(length=80), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("partner_id", sa.String(length=40), nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("provider_ref", sa.String(length=120), nullable=True),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("final_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_by", sa.String(length=40), nullable=True),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["settlement_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
        sa.UniqueConstraint("run_id", "attempt"),
    )
    with op.batch_alter_table("partner_payouts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_partner_payouts_partner_id"), ["partner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_partner_payouts_run_id"), ["run_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_partner_payouts_status"), ["status"], unique=False)

    op.create_table(
        "settlement_decisions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.String(length=80), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=16), nullable=False),
        sa.Column("by", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["settlement_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("settlement_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_settlement_decisions_run_id"), ["run_id"], unique=False)

    op.create_table(
        "settlement_lines",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("run_id", sa.String(length=80), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["settlement_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "position"),
    )
    op.create_table(
        "station_hosts",
        sa.Column("station_id", sa.String(length=40), nullable=False),
        sa.Column("partner_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
        ),
        sa.ForeignKeyConstraint(
            ["station_id"],
            ["stations.id"],
        ),
        sa.PrimaryKeyConstraint("station_id"),
    )
    with op.batch_alter_table("station_hosts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_station_hosts_partner_id"), ["partner_id"], unique=False)

    op.create_table(
        "commission_clawbacks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("accrual_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("refund_id", sa.String(length=80), nullable=False),
        sa.Column("partner_id", sa.String(length=40), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=80), nullable=True),
        sa.ForeignKeyConstraint(
            ["accrual_id"],
            ["commission_accruals.id"],
        ),
        sa.ForeignKeyConstraint(
            ["partner_id"],
            ["partners.id"],
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["settlement_runs.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("accrual_id"),
    )
    with op.batch_alter_table("commission_clawbacks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_commission_clawbacks_partner_id"), ["partner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_commission_clawbacks_refund_id"), ["refund_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_commission_clawbacks_run_id"), ["run_id"], unique=False)

    # Finance's resolution of an escalated refund and of a reconciliation difference.
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resolution", sa.String(length=24), nullable=True))
        batch_op.add_column(sa.Column("resolution_method", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("resolution_ref", sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column("resolution_note", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("reconciliation_exceptions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("resolution_note", sa.Text(), nullable=True))
    # The console: a cabinet's open alerts and its recent swaps, probed per cabinet on every page.
    op.create_index("ix_alerts_cabinet_status", "alerts", ["cabinet_id", "status"], unique=False)
    op.create_index("ix_swap_orders_cabinet_created", "swap_orders", ["cabinet_id", "created_at"], unique=False)

    # Who acknowledged an alert and who resolved it by hand.
    with op.batch_alter_table("alerts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("acknowledged_by", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("resolved_by", sa.String(length=40), nullable=True))


def downgrade() -> None:
    op.drop_index("ix_swap_orders_cabinet_created", table_name="swap_orders")
    op.drop_index("ix_alerts_cabinet_status", table_name="alerts")

    with op.batch_alter_table("alerts", schema=None) as batch_op:
        for column in ("resolved_by", "acknowledged_by", "acknowledged_at"):
            batch_op.drop_column(column)

    with op.batch_alter_table("reconciliation_exceptions", schema=None) as batch_op:
        for column in ("resolution_note", "resolved_at", "resolved_by"):
            batch_op.drop_column(column)
    with op.batch_alter_table("refunds", schema=None) as batch_op:
        for column in (
            "resolved_at",
            "resolved_by",
            "resolution_note",
            "resolution_ref",
            "resolution_method",
            "resolution",
        ):
            batch_op.drop_column(column)

    with op.batch_alter_table("commission_clawbacks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commission_clawbacks_run_id"))
        batch_op.drop_index(batch_op.f("ix_commission_clawbacks_refund_id"))
        batch_op.drop_index(batch_op.f("ix_commission_clawbacks_partner_id"))

    op.drop_table("commission_clawbacks")
    with op.batch_alter_table("station_hosts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_station_hosts_partner_id"))

    op.drop_table("station_hosts")
    op.drop_table("settlement_lines")
    with op.batch_alter_table("settlement_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_settlement_decisions_run_id"))

    op.drop_table("settlement_decisions")
    with op.batch_alter_table("partner_payouts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_partner_payouts_status"))
        batch_op.drop_index(batch_op.f("ix_partner_payouts_run_id"))
        batch_op.drop_index(batch_op.f("ix_partner_payouts_partner_id"))

    op.drop_table("partner_payouts")
    with op.batch_alter_table("partner_attributions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_partner_attributions_partner_id"))

    op.drop_table("partner_attributions")
    with op.batch_alter_table("commission_accruals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commission_accruals_run_id"))
        batch_op.drop_index("ix_commission_accruals_partner_at")
        batch_op.drop_index(batch_op.f("ix_commission_accruals_order_id"))

    op.drop_table("commission_accruals")
    with op.batch_alter_table("settlement_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_settlement_runs_status"))
        batch_op.drop_index(batch_op.f("ix_settlement_runs_partner_id"))
        batch_op.drop_index(batch_op.f("ix_settlement_runs_created_at"))
        batch_op.drop_index(batch_op.f("ix_settlement_runs_city_code"))

    op.drop_table("settlement_runs")
    with op.batch_alter_table("plan_assignments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_plan_assignments_partner_id"))

    op.drop_table("plan_assignments")
    op.drop_table("commission_plan_versions")
    with op.batch_alter_table("city_franchisees", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_city_franchisees_partner_id"))

    op.drop_table("city_franchisees")
    op.drop_table("sandbox_payouts")
    with op.batch_alter_table("partners", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_partners_parent_id"))
        batch_op.drop_index(batch_op.f("ix_partners_kind"))

    op.drop_table("partners")
    op.drop_table("commission_plans")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_entity")
        batch_op.drop_index(batch_op.f("ix_audit_events_at"))
        batch_op.drop_index(batch_op.f("ix_audit_events_actor"))

    op.drop_table("audit_events")
