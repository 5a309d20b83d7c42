"""The `swapflow` command: `up` runs the whole stack; the other commands run one part each (the
processes `up` starts, or what docker-compose runs in production)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Coroutine
from datetime import date
from typing import Any

import uvloop

from swapflow.settings import Settings, get_settings


def _run_until_signal(main: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine; SIGINT/SIGTERM cancel it so it can clean up."""

    async def runner() -> Any:
        task = asyncio.ensure_future(main)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return 0

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as loop_runner:
        return loop_runner.run(runner())


def _configure_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Each poll and publish is logged at INFO by these libraries; too loud for a fleet.
    for noisy in ("httpx", "amqtt", "transitions", "aiosqlite"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from swapflow.simulator.faults import FaultPlan, FaultSpecError
    from swapflow.stack.supervisor import UpOptions, run_up

    logging.basicConfig(level=logging.WARNING)
    try:
        plan = FaultPlan.parse(args.faults)
    except FaultSpecError as exc:
        raise SystemExit(f"swapflow up: --faults: {exc}") from None
    # Payment faults are the sandbox provider's: they reach the worker through its settings.
    settings = settings.updated(payments=plan.payment_rates())
    options = UpOptions(simulate=args.simulate, riders=args.riders, faults=args.faults)
    return int(_run_until_signal(run_up(settings, options)) or 0)


def cmd_api(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    from swapflow.api.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    return 0


def cmd_worker(settings: Settings, _args: argparse.Namespace) -> int:
    from swapflow.worker import run_worker

    _run_until_signal(run_worker(settings))
    return 0


def cmd_adapter(settings: Settings, _args: argparse.Namespace) -> int:
    from swapflow.device_adapter.adapter import run_adapter

    _run_until_signal(run_adapter(settings))
    return 0


def cmd_broker(settings: Settings, _args: argparse.Namespace) -> int:
    from swapflow.stack.broker import run_broker

    _run_until_signal(run_broker(settings))
    return 0


def cmd_gateway(settings: Settings, _args: argparse.Namespace) -> int:
    from swapflow.gateway.server import run_gateway

    _run_until_signal(run_gateway(settings))
    return 0


def cmd_cabinets(settings: Settings, args: argparse.Namespace) -> int:
    """`cabinets provision`: fresh credentials per cabinet, each secret printed once."""
    from pathlib import Path

    from sqlalchemy.orm import Session

    from swapflow.db.engine import create_sync_engine
    from swapflow.identity.credentials import (
        ProvisioningError,
        ensure_service_account,
        provision_cabinet,
        service_login,
    )
    from swapflow.identity.mosquitto import write_mosquitto_files

    engine = create_sync_engine(settings.effective_database_url)
    try:
        with Session(engine) as session, session.begin():
            ensure_service_account(session, service_login(settings))
            for cabinet_id in args.cabinet_ids:
                try:
                    secret = provision_cabinet(session, cabinet_id, rotate=not args.keep)
                except ProvisioningError as exc:
                    raise SystemExit(f"swapflow cabinets provision: {exc}") from None
                print(
                    f"{cabinet_id}: kept its credentials"
                    if secret is None
                    else f"{cabinet_id}: username {cabinet_id} password {secret}  (shown once; store it now)"
                )
        if args.mosquitto_dir:
            passwords, acl = write_mosquitto_files(engine, Path(args.mosquitto_dir), settings.mqtt.topic_prefix)
            print(f"wrote {passwords} and {acl}; send Mosquitto a SIGHUP to reload them")
    finally:
        engine.dispose()
    return 0


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from swapflow.simulator.fleet import run_fleet

    _run_until_signal(run_fleet(settings, riders=args.riders, faults=args.faults or None))
    return 0


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from swapflow.db.migrate import upgrade

    upgrade(settings.effective_database_url)
    print(f"migrated {settings.effective_database_url}")
    return 0


def cmd_seed(settings: Settings, _args: argparse.Namespace) -> int:
    from swapflow.db.engine import create_sync_engine
    from swapflow.db.migrate import upgrade
    from swapflow.demo.accounts import seed_demo_accounts, tokens_path
    from swapflow.demo.network import seed_demo_network

    upgrade(settings.effective_database_url)
    engine = create_sync_engine(settings.effective_database_url)
    seeded = seed_demo_network(engine, tower_share=settings.devices.tower_share)
    print("seeded the demo network" if seeded else "database already holds a network; nothing seeded")
    if seed_demo_accounts(engine, settings.data_dir):
        print(f"demo accounts' tokens written to {tokens_path(settings.data_dir)}")
    return 0


def cmd_operators(settings: Settings, args: argparse.Namespace) -> int:
    """Create (or update) an operator account and print a new token for it."""
    from sqlalchemy.orm import Session

    from swapflow.db.engine import create_sync_engine
    from swapflow.domain.ops import OperatorRole
    from swapflow.ops.accounts import create_operator

    cities = [c for c in args.cities.split(",") if c]
    engine = create_sync_engine(settings.effective_database_url)
    try:
        location: tuple[float, float] | None = None
        if args.location:
            lat, lon = (float(v) for v in args.location.split(","))
            location = (lat, lon)
        start, end = (int(v.split(":")[0]) * 60 + int(v.split(":")[1]) for v in args.shift.split("-"))
        with Session(engine) as session, session.begin():
            token = create_operator(
                session,
                args.id,
                args.name or args.id,
                OperatorRole(args.role),
                cities,
                location=location,
                shift=(start, end),
            )
    except ValueError as exc:
        raise SystemExit(f"swapflow operators create: {exc}") from None
    finally:
        engine.dispose()
    print(token)
    return 0


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    """Check the invariants once; the exit status says whether they all hold."""
    from datetime import timedelta

    from swapflow.db.engine import Database
    from swapflow.ops.invariants import InvariantReport, check_invariants

    stuck_after = None if args.stuck_after_minutes is None else timedelta(minutes=args.stuck_after_minutes)

    async def check() -> InvariantReport:
        db = Database(settings.effective_database_url)
        try:
            return await check_invariants(db, stuck_after=stuck_after)
        finally:
            await db.dispose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        report = runner.run(check())
    print(
        f"checked {report.batteries} batteries, {report.slots} slots, {report.custody_events} custody events, "
        f"{report.ledger_transactions} ledger transactions ({report.ledger_postings} postings), "
        f"{report.swaps} swaps"
    )
    by_status = ", ".join(f"{n} {status}" for status, n in sorted(report.swaps_by_status.items()))
    refunds = ", ".join(f"{n} {status}" for status, n in sorted(report.refunds_by_status.items()))
    print(f"swaps: {by_status or 'none'}; refunds: {refunds or 'none'}")
    for violation in report.violations:
        print(f"{violation.rule} {violation.subject}: {violation.detail}")
    print("all invariants hold" if report.ok else f"{len(report.violations)} violation(s)")
    return 0 if report.ok else 1


def cmd_reconcile(settings: Settings, args: argparse.Namespace) -> int:
    """Reconcile one day with every provider now (what the daily schedule does); exit 1 on differences."""
    from swapflow.db.engine import Database
    from swapflow.payments.registry import providers_from_settings
    from swapflow.services.reconciliation import reconcile_provider

    async def reconcile() -> int:
        db = Database(settings.effective_database_url)
        try:
            differences = 0
            for provider in providers_from_settings(settings, db).values():
                result = await reconcile_provider(db, provider, args.date)
                differences += result.exceptions
                print(
                    f"{args.date} {result.provider}: ours {result.ours}, provider's {result.theirs}, "
                    f"matched {result.matched}, exceptions {result.exceptions}"
                )
            return differences
        finally:
            await db.dispose()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return 1 if runner.run(reconcile()) else 0


def cmd_partners(settings: Settings, args: argparse.Namespace) -> int:
    """`partners …` and `plans …`: what the admin API does to partners and plans, through the same services
    (each change audited as made by `--by`)."""
    from datetime import datetime

    from swapflow.db.engine import Database
    from swapflow.domain.clock import as_utc, utcnow
    from swapflow.domain.commissions import PartnerKind
    from swapflow.domain.errors import DomainError
    from swapflow.payments.payouts import PayoutMethod
    from swapflow.services import partners

    def since() -> datetime:
        return as_utc(datetime.fromisoformat(args.since)) if args.since else utcnow()  # naive: UTC

    def terms() -> dict[str, Any]:
        return {
            "effective_from": since(),
            "currency": args.currency,
            "percent_bp": args.percent_bp,
            "fixed_minor": args.fixed_minor,
            "tiers": [dict(zip(("above_swaps", "percent_bp"), map(int, t.split(":")), strict=True)) for t in args.tier],
            "overrides_bp": [int(bp) for bp in args.overrides_bp.split(",") if bp],
            "cap_minor": args.cap_minor,
            "minimum_payout_minor": args.minimum_payout_minor,
        }

    async def act(session: Any) -> str:
        by, what = args.by, (args.command, args.action)
        if what == ("partners", "create"):
            partner = await partners.create_partner(
                session,
                actor=by,
                partner_id=args.id,
                kind=PartnerKind(args.kind),
                name=args.name or args.id,
                parent_id=args.parent,
                cities=[c for c in args.cities.split(",") if c],
                time_zone=args.time_zone,
                currency=args.currency,
                referral_code=args.referral_code,
                payout_method=PayoutMethod(args.payout_method),
                payout_account=args.payout_account,
                payout_details=dict(d.split("=", 1) for d in args.detail),
            )
            return partner.id
        if what == ("partners", "list"):
            rows = await partners.list_partners(session, None, limit=1_000_000)
            return "\n".join(
                f"{p.id}\t{p.kind}\t{p.name}\t{','.join(p.cities)}\t{p.parent_id or '-'}\t{p.active}" for p in rows
            )
        if what == ("partners", "token"):
            return await partners.issue_partner_token(session, args.partner_id, actor=by)
        if what == ("partners", "assign"):
            row = await partners.assign_plan(session, args.partner_id, args.plan, since(), actor=by)
            return f"{row.partner_id} on {row.plan_id} from {row.effective_from.isoformat()}"
        if what == ("partners", "attribute"):
            await partners.attribute_rider(session, args.target, args.partner, actor=by)
        elif what == ("partners", "host"):
            await partners.set_station_host(session, args.target, args.partner, actor=by)
        elif what == ("partners", "franchise"):
            await partners.set_city_franchisee(session, args.target, args.partner, actor=by)
        elif what == ("plans", "create"):
            plan = await partners.create_plan(
                session,
                actor=by,
                plan_id=args.id,
                name=args.name,
                cadence=args.cadence,
                cadence_minutes=args.cadence_minutes,
                terms=terms(),
            )
            return plan.plan.id
        else:
            version = await partners.add_plan_version(session, args.plan_id, terms(), actor=by)
            return f"{version.plan_id} v{version.version}"
        return f"{args.target}: {args.partner}"

    async def run() -> str:
        db = Database(settings.effective_database_url)
        try:
            async with db.transaction() as session:
                return await act(session)
        finally:
            await db.dispose()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            print(runner.run(run()))
    except DomainError as refused:
        raise SystemExit(f"swapflow {args.command} {args.action}: {refused.title}: {refused.detail}") from None
    return 0


def _partner_commands(sub: Any) -> None:
    """The `partners` and `plans` commands' arguments."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--by", default="cli", help="the account recorded in the audit trail")
    partners = sub.add_parser("partners", help="partners: hosts, franchisees, agents").add_subparsers(
        dest="action", required=True
    )
    create = partners.add_parser("create", parents=[common], help="create a partner; prints its id")
    create.add_argument("--id")
    create.add_argument("--kind", required=True, choices=["station_host", "city_franchisee", "channel_agent"])
    create.add_argument("--name", default="")
    create.add_argument("--cities", required=True, help="comma-separated city codes; the first gives zone and currency")
    create.add_argument("--parent", help="the recruiting agent (agents)")
    create.add_argument("--time-zone")
    create.add_argument("--currency")
    create.add_argument("--referral-code")
    create.add_argument("--payout-method", default="bank", choices=["wechat", "stripe", "bank", "sandbox"])
    create.add_argument("--payout-account")
    create.add_argument("--detail", action="append", default=[], metavar="KEY=VALUE", help="bank transfer details")
    partners.add_parser("list", parents=[common], help="every partner, tab-separated")
    partners.add_parser("token", parents=[common], help="a new login token (shown once)").add_argument("partner_id")
    assign = partners.add_parser("assign", parents=[common], help="put a partner on a plan")
    assign.add_argument("partner_id")
    assign.add_argument("--plan", required=True)
    assign.add_argument("--since", help="ISO time it takes effect (default: now)")
    for name, target in (("attribute", "rider_id"), ("host", "station_id"), ("franchise", "city_code")):
        link = partners.add_parser(name, parents=[common], help=f"link a {target.split('_')[0]} to a partner")
        link.add_argument("target", metavar=target.upper())
        link.add_argument("--partner", required=True)
    plans = sub.add_parser("plans", help="commission plans and their versions").add_subparsers(
        dest="action", required=True
    )
    terms = argparse.ArgumentParser(add_help=False, parents=[common])
    terms.add_argument("--since", help="ISO time the terms take effect (default: now)")
    terms.add_argument("--currency", required=True)
    terms.add_argument("--percent-bp", type=int, default=0)
    terms.add_argument("--fixed-minor", type=int, default=0)
    terms.add_argument("--tier", action="append", default=[], metavar="ABOVE_SWAPS:BP")
    terms.add_argument("--overrides-bp", default="", help="comma-separated, parent first")
    terms.add_argument("--cap-minor", type=int)
    terms.add_argument("--minimum-payout-minor", type=int, default=0)
    plan = plans.add_parser("create", parents=[terms], help="a new plan and its version 1")
    plan.add_argument("--id")
    plan.add_argument("--name", required=True)
    plan.add_argument("--cadence", default="monthly", choices=["weekly", "monthly", "minutes"])
    plan.add_argument("--cadence-minutes", type=int)
    plans.add_parser("version", parents=[terms], help="the plan's next version").add_argument("plan_id")


def cmd_settlements(settings: Settings, args: argparse.Namespace) -> int:
    """Settle a partner's period now (what the schedules do), once: print the run's state."""
    from swapflow.db.engine import Database
    from swapflow.domain.errors import DomainError
    from swapflow.infra.temporal import connect_temporal
    from swapflow.services.settlements import last_closed_period, start_settlement
    from swapflow.workflows.settlement_contract import SettlementState, settlement_workflow_id

    async def run() -> tuple[str, SettlementState]:
        db = Database(settings.effective_database_url)
        try:
            label = args.period or (await last_closed_period(db, args.partner)).label
            client = await connect_temporal(settings, wait_s=5.0)
            return label, await start_settlement(client, settings, db, args.partner, label, args.by)
        finally:
            await db.dispose()

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            label, state = runner.run(run())
    except DomainError as exc:
        raise SystemExit(f"swapflow settlements run: {exc.title}: {exc.detail}") from None
    except RuntimeError as exc:
        raise SystemExit(f"swapflow settlements run: Temporal unreachable: {exc}") from None
    reason = f" ({state.failure_reason})" if state.failure_reason else ""
    print(
        f"{settlement_workflow_id(args.partner, label)}: {state.status.value}, revision {state.revision}, "
        f"total {state.total_minor} {state.currency or '-'}{reason}"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swapflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole stack (embedded defaults unless SWAPFLOW_* say otherwise)")
    up.add_argument("--simulate", action="store_true", help="also run simulated cabinets and riders")
    up.add_argument("--riders", type=int, default=20, help="simulated riders (with --simulate)")
    up.add_argument(
        "--faults",
        default="",
        metavar="NAME=RATE,...",
        help="inject faults at these rates, e.g. jam=0.02,drop_ack=0.02,offline=0.01,no_insert=0.02,"
        "wrong_pack=0.01,hot_pack=0.01,walk_away=0.01,duplicate=0.05,decline=0.02,"
        "payment_timeout=0.02 (see swapflow/simulator/faults.py)",
    )
    sub.add_parser("api", help="run the HTTP API")
    sub.add_parser("worker", help="run the Temporal worker")
    sub.add_parser("adapter", help="run the MQTT device adapter")
    sub.add_parser("broker", help="run the embedded MQTT broker")
    sub.add_parser("gateway", help="run the tower-protocol TCP gateway (legacy cabinets)")
    cabinets = sub.add_parser("cabinets", help="manage cabinets' device identity")
    cabinets_sub = cabinets.add_subparsers(dest="cabinets_command", required=True)
    provision = cabinets_sub.add_parser(
        "provision", help="create (or rotate) cabinets' MQTT credentials (a tower cabinet: its gateway login secret)"
    )
    provision.add_argument("cabinet_ids", nargs="+", metavar="CABINET_ID")
    provision.add_argument("--keep", action="store_true", help="leave cabinets that have credentials as they are")
    provision.add_argument(
        "--mosquitto-dir",
        metavar="DIR",
        help="also (re)write Mosquitto's password and ACL files in DIR (see deploy/mosquitto.conf)",
    )
    sim = sub.add_parser("simulate", help="run simulated cabinets and riders against a running stack")
    sim.add_argument("--riders", type=int, default=20)
    sim.add_argument("--faults", default="", metavar="NAME=RATE,...", help="as for `up`")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("seed", help="migrate and seed the demo network into an empty database, and demo accounts")
    operators = sub.add_parser("operators", help="operator accounts").add_subparsers(dest="action", required=True)
    create = operators.add_parser("create", help="create or update an account; prints a new bearer token")
    create.add_argument("--id", required=True)
    create.add_argument("--name", default="")
    create.add_argument("--role", required=True, choices=["operator", "technician", "city_lead", "finance", "admin"])
    create.add_argument("--cities", default="", help="comma-separated city codes (admins see all)")
    create.add_argument("--location", default="", help="lat,lon (technicians)")
    create.add_argument("--shift", default="00:00-24:00", help="HH:MM-HH:MM local time (technicians)")
    check = sub.add_parser("check", help="check the custody, money and swap invariants; exit 1 on any violation")
    check.add_argument(
        "--stuck-after-minutes",
        type=float,
        default=None,
        help="report swaps in progress for longer than this as stuck (and reservations held this long past expiry)",
    )
    reconcile = sub.add_parser("reconcile", help="reconcile a day with the payment providers; exit 1 on differences")
    reconcile.add_argument("--date", type=date.fromisoformat, required=True, help="YYYY-MM-DD (UTC)")
    _partner_commands(sub)
    settlements = sub.add_parser("settlements", help="commission settlement runs").add_subparsers(
        dest="action", required=True
    )
    settle = settlements.add_parser("run", help="settle a partner's period once (a second run shows the first)")
    settle.add_argument("--partner", required=True)
    period = settle.add_mutually_exclusive_group(required=True)
    period.add_argument("--period", help="its label: 2026-11 (monthly), 2026-W48 (weekly), 2026-12-07T1430 (minutes)")
    period.add_argument("--previous", action="store_true", help="the partner's last period that is over")
    settle.add_argument("--by", default="cli", help="who prepares the run (may not approve it)")
    return parser


COMMANDS = {
    "up": cmd_up,
    "api": cmd_api,
    "worker": cmd_worker,
    "adapter": cmd_adapter,
    "broker": cmd_broker,
    "gateway": cmd_gateway,
    "cabinets": cmd_cabinets,
    "simulate": cmd_simulate,
    "migrate": cmd_migrate,
    "seed": cmd_seed,
    "check": cmd_check,
    "reconcile": cmd_reconcile,
    "settlements": cmd_settlements,
    "operators": cmd_operators,
    "partners": cmd_partners,
    "plans": cmd_partners,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `swapflow` command."""
    args = build_parser().parse_args(argv)
    settings = get_settings()
    if args.command != "up":
        _configure_logging(settings)
    return COMMANDS[args.command](settings, args)
