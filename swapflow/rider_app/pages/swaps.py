"""The rider's swaps: the list, and a swap's live page, which says in words what to do as the cabinet
acts ("Door 7 is open — put your pack in", "Take your charged pack from door 3", "Done — 86% charged")
or why the swap failed and where its refund is. The page follows the swap by itself over Server-Sent
Events: the swap's row is read again every `rider_app.live_poll_s` and the stage sent when it changed,
until the swap and its refund are over. Another rider's swap does not exist for the rider."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from swapflow.api.deps import DatabaseDep, SessionDep, SettingsDep
from swapflow.console.live import StreamPool, event_stream
from swapflow.db.engine import Database
from swapflow.domain.swaps import SwapStage, SwapStatus
from swapflow.payments.provider import PaymentMethod
from swapflow.rider_app.rendering import fragment, money, render
from swapflow.rider_app.session import RiderUser
from swapflow.services import rider_app
from swapflow.services.rider_app import RiderSwap

router = APIRouter()

SwapId = Annotated[str, Path(min_length=1, max_length=40)]
HISTORY = 50
RIDER_STREAMS = StreamPool()

STEPS = ("Pay", "Put your pack in", "Take the charged pack", "Done")
"""The swap as the rider lives it; a stage is one of these (its index), all of them once done."""

REASONS = (
    ("rider_not_eligible", "your account may not swap now"),
    ("rider_holds_no_battery", "we have no pack on record as yours"),
    ("unknown_cabinet", "this cabinet is unknown"),
    ("cabinet_offline_mid_swap", "the cabinet went offline during the swap"),
    ("cabinet_offline", "the cabinet is offline"),
    ("no_charged_battery", "the cabinet has no charged pack for you"),
    ("no_free_slot", "the cabinet has no free slot for your pack"),
    ("payment_declined", "your payment was declined"),
    ("payment outcome unknown", "your payment could not be confirmed"),
    ("battery_not_returned_in_time", "your pack was not put in in time"),
    ("return_not_confirmed", "the cabinet did not confirm your pack"),
    ("return_door_not_closed", "the door was left open"),
    ("returned_battery_unreadable", "the cabinet could not read your pack"),
    ("returned_battery_not_registered", "that pack is not one of ours"),
    ("returned_battery_not_riders", "that pack is not the one on record as yours"),
    ("temperature", "your pack is outside its safety limits (temperature)"),
    ("voltage", "your pack is outside its safety limits (voltage)"),
    ("SoH", "your pack is too worn to take back"),
    ("fault codes", "your pack reports a fault"),
    ("charged_battery_not_taken", "the charged pack was not taken"),
    ("charged_take_not_confirmed", "the cabinet did not confirm the charged pack was taken"),
    ("no_working_return_slot", "no door would open for your pack"),
    ("no_working_charged_slot", "the door of the charged pack would not open"),
)
"""A failure reason's beginning → what the rider reads (the first that matches)."""

REFUND_STATES = {
    "requested": "started",
    "processing": "on its way",
    "succeeded": "done",
    "escalated": "with our finance team, who will contact you",
    "rejected": "refused; please contact support",
}
REFUND_TO: dict[str, str] = {
    PaymentMethod.WALLET: "to your wallet",
    PaymentMethod.SUBSCRIPTION: "to your plan (the swap is yours again)",
}
FINAL_REFUND = frozenset({"succeeded", "escalated", "rejected"})
"""Refund states the page stops following at (an escalated one waits for finance, for days)."""


def reason_words(reason: str | None) -> str:
    """Why a swap failed, for the rider."""
    if not reason:
        return "the swap could not finish"
    for prefix, words in REASONS:
        if reason.startswith(prefix):
            return words
    return f"the swap could not finish ({reason})"


@dataclass(frozen=True)
class StageView:
    """A swap's stage as the rider reads it: a headline, what to do or what happened, the current step."""

    words: str
    detail: str | None
    step: int
    """Index into STEPS; len(STEPS) once done."""
    failed: bool = False


def stage_view(swap: RiderSwap) -> StageView:
    order = swap.order
    if order.status == SwapStatus.COMPLETED:
        pack = swap.issued
        if pack is None:
            return StageView("Done", "Ride on.", len(STEPS))
        return StageView(
            f"Done — {pack.soc:.0f}% charged",
            f"Your pack {pack.serial}: {pack.soc:.0f}% charged, health {pack.soh:.0f}%. Paid "
            f"{money(order.price_minor, order.currency)}.",
            len(STEPS),
        )
    if order.status == SwapStatus.FAILED:
        return StageView(f"Swap failed: {reason_words(order.failure_reason)}", _refund_words(swap), 0, failed=True)
    stage = order.stage
    if stage == SwapStage.RETURN_DOOR_OPEN:
        return StageView(f"Door {order.return_slot_no} is open — put your pack in", "Then close the door behind it.", 1)
    if stage in (SwapStage.RETURN_INSERTED, SwapStage.RETURN_VERIFIED):
        return StageView("Checking your pack", "A door opens for your charged pack in a moment.", 1)
    if stage == SwapStage.CHARGED_DOOR_OPEN:
        return StageView(
            f"Take your charged pack from door {order.charged_slot_no}", "Then close the door behind you.", 2
        )
    if stage == SwapStage.CHARGED_TAKEN:
        return StageView("Finishing", "Close the door, and your swap is done.", 3)
    if stage == SwapStage.COMPENSATING:
        return StageView("Something went wrong — undoing the swap", "Any money taken is given back.", 0, True)
    if swap.pay_sheet is not None:
        return StageView(
            f"Pay {money(order.price_minor, order.currency)} with WeChat Pay",
            "The door for your flat pack opens once you have paid.",
            0,
        )
    return StageView("Getting your swap ready", "Reserving your charged pack and paying.", 0)


def _refund_words(swap: RiderSwap) -> str:
    order, refund = swap.order, swap.refund
    if refund is None:
        if order.payment_ref is None:
            return "You were not charged."
        return f"Your refund of {money(order.price_minor, order.currency)} is being opened."
    amount = money(refund.amount_minor, refund.currency)
    state = REFUND_STATES.get(refund.status, refund.status)
    where = REFUND_TO.get(refund.method, "to how you paid")
    words = f"Refund of {amount} {where}: {state}."
    if refund.status in ("requested", "processing") and refund.expected_by is not None:
        words += f" Expected by {refund.expected_by:%d %b %Y}."
    return words


def following(swap: RiderSwap) -> bool:
    """Whether the page still has something to wait for: the swap running, or its refund on its way."""
    order = swap.order
    if order.status == SwapStatus.IN_PROGRESS:
        return True
    if order.status == SwapStatus.FAILED and order.payment_ref is not None:
        return swap.refund is None or swap.refund.status not in FINAL_REFUND
    return False


def _stage_context(swap: RiderSwap) -> dict[str, object]:
    return {
        "o": swap.order,
        "refund": swap.refund,
        "view": stage_view(swap),
        "steps": STEPS,
        "pay_sheet": swap.pay_sheet,
    }


@router.get("/swaps", response_class=HTMLResponse)
async def history(request: Request, rider: RiderUser, session: SessionDep) -> HTMLResponse:
    swaps = await rider_app.rider_swaps(session, rider.id, HISTORY)
    return render(
        request, "swaps.html", {"section": "swaps", "swaps": swaps, "reason_words": reason_words}, rider=rider
    )


@router.get("/swaps/{swap_id}", response_class=HTMLResponse)
async def swap_page(request: Request, rider: RiderUser, session: SessionDep, swap_id: SwapId) -> HTMLResponse:
    swap = await rider_app.rider_swap(session, rider.id, swap_id)
    context = {"section": "swaps", "following": following(swap), **_stage_context(swap)}
    return render(request, "swap.html", context, rider=rider)


class SwapFollower:
    """Renders a rider's swap's stage for its live page, remembering whether anything is left to follow."""

    def __init__(self, db: Database, rider_id: str, swap_id: str) -> None:
        self.db, self.rider_id, self.swap_id = db, rider_id, swap_id
        self.over = False

    async def render(self) -> str:
        async with self.db.sessions() as session:
            swap = await rider_app.rider_swap(session, self.rider_id, self.swap_id)
        self.over = not following(swap)
        return fragment("_stage.html", _stage_context(swap))


@router.get("/swaps/{swap_id}/live")
async def swap_live(
    request: Request, rider: RiderUser, db: DatabaseDep, settings: SettingsDep, swap_id: SwapId
) -> StreamingResponse:
    """The swap's stage, sent whenever it changes, until the swap (and its refund) is over; then `end`."""
    async with db.sessions() as session:
        await rider_app.rider_swap(session, rider.id, swap_id)  # another rider's: 404
    follower = SwapFollower(db, rider.id, swap_id)
    return event_stream(
        request,
        "stage",
        follower.render,
        pool=RIDER_STREAMS,
        max_streams=settings.rider_app.live_max_streams,
        poll_s=settings.rider_app.live_poll_s,
        max_s=settings.rider_app.live_max_s,
        ended=lambda: follower.over,
    )
