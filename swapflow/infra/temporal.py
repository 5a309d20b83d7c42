"""Connecting to Temporal with the data converter every swapflow process must share."""

from __future__ import annotations

import asyncio
import logging

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from swapflow.settings import Settings

log = logging.getLogger(__name__)


async def connect_temporal(settings: Settings, *, wait_s: float = 60.0) -> Client:
    """Connect to the configured Temporal frontend, waiting up to `wait_s` for it to come up."""
    deadline = asyncio.get_running_loop().time() + wait_s
    while True:
        try:
            return await Client.connect(
                settings.temporal.effective_address,
                namespace=settings.temporal.namespace,
                data_converter=pydantic_data_converter,
            )
        except RuntimeError as exc:  # the SDK reports an unreachable server as RuntimeError
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.info("waiting for Temporal at %s (%s)", settings.temporal.effective_address, exc)
            await asyncio.sleep(1.0)
