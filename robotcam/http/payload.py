"""Request bodies that cannot be read at all: one wording for every route that reads one."""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

__all__ = ["RequestPayloadError", "body_problem", "abandon_body"]


def body_problem(exc: RequestPayloadError) -> str:
    """What the client got wrong (a Content-Encoding that does not decode, broken chunked
    encoding), on one line: "the request body cannot be read: Can not decode content-encoding: gzip"."""
    reason = " ".join(str(exc).split()).removeprefix("400, message: ")
    return f"the request body cannot be read: {reason}"


def abandon_body(request: web.Request) -> None:
    """Give up on an unreadable body: mark it ended. Otherwise aiohttp, once the 400 is sent,
    reads the rest of it to keep the connection alive, meets the same error again and logs it
    as an "Unhandled exception" with a traceback."""
    request.content.feed_eof()
