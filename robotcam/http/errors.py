"""The API's error answer, `{"error": "..."}` plus details, shared by every route module."""

from __future__ import annotations

from typing import Any

from aiohttp import web


def json_error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)
