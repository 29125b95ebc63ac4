"""Reading a request body with a hard size limit, never buffering more than the limit.

Works on the ASGI `receive` channel, so the webhook router and Starlette endpoints (through
`request.receive`) share it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import Receive


class BodyTooLargeError(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


class ClientDisconnectedError(Exception):
    """The client hung up before sending the whole body: there is nobody to answer."""


async def read_limited(receive: Receive, content_length: str | None, limit: int) -> bytes:
    # ASCII digits only: str.isdigit() also admits digits int() refuses ("²"). The HTTP parser
    # has refused a Content-Length that is no number, or past 2^64, before this runs.
    if (
        content_length is not None
        and content_length.isascii()
        and content_length.isdigit()
        and int(content_length) > limit
    ):
        raise BodyTooLargeError(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnectedError
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
