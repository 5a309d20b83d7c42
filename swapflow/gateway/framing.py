"""Tower-protocol framing: a 4-byte big-endian body length, then that many bytes of UTF-8 JSON."""

from __future__ import annotations

import asyncio
import struct

from pydantic import BaseModel

HEADER = struct.Struct(">I")


class FrameError(Exception):
    """A frame that cannot be read. `fatal` when the stream has lost its framing and the connection must
    close (the next length prefix cannot be found); `reason` is a short label for metrics."""

    def __init__(self, message: str, *, reason: str, fatal: bool, data: bytes = b"") -> None:
        super().__init__(message)
        self.reason = reason
        self.fatal = fatal
        self.data = data


async def read_frame(reader: asyncio.StreamReader, max_bytes: int, timeout_s: float | None) -> bytes | None:
    """The next frame's body; None when the peer closed the connection between frames. TimeoutError
    when no complete frame arrives within `timeout_s` (a silent or half-open link; None: no limit of its
    own, the caller's deadline governs); FrameError for a
    frame that breaks the rules."""
    async with asyncio.timeout(timeout_s):
        try:
            header = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise FrameError(
                "connection closed inside a length prefix", reason="truncated", fatal=True, data=exc.partial
            ) from None
        (length,) = HEADER.unpack(header)
        if length == 0:
            raise FrameError("empty frame (length 0)", reason="empty", fatal=False, data=header)
        if length > max_bytes:
            raise FrameError(
                f"frame length {length} exceeds the maximum of {max_bytes} bytes",
                reason="oversized",
                fatal=True,
                data=header,
            )
        try:
            return await reader.readexactly(length)
        except asyncio.IncompleteReadError as exc:
            raise FrameError(
                f"connection closed after {len(exc.partial)} of {length} bytes",
                reason="truncated",
                fatal=True,
                data=exc.partial,
            ) from None


def encode_frame(body: bytes) -> bytes:
    """Length prefix + body."""
    return HEADER.pack(len(body)) + body


def encode_message(message: BaseModel) -> bytes:
    """A tower message as one frame (fields that are None left out)."""
    return encode_frame(message.model_dump_json(exclude_none=True).encode())
