"""The platform's MQTT client (swapflow.infra.mqtt): a task cancelled while it waits for the broker's
answer stops, even when the answer arrives in the same moment (aiomqtt's own wait loses that
cancellation on Python 3.11, and a publish loop then outlives its shutdown)."""

from __future__ import annotations

import asyncio

import pytest

from swapflow.infra.mqtt import mqtt_client
from swapflow.settings import Settings


async def test_a_cancellation_landing_as_the_broker_answers_is_not_lost(settings: Settings) -> None:
    client = mqtt_client(settings, "cancel-test")
    answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    waiting = asyncio.create_task(client._wait_for(answer, timeout=5.0))
    await asyncio.sleep(0)  # the task now waits for the answer
    answer.set_result(None)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
