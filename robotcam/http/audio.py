"""HTTP for sound and HTTPS: POST /api/talk, GET /api/events, GET /robotcam-ca.crt, and
GET /help/https (the README's HTTPS section, which the page links to on plain HTTP).

`POST /api/talk` with JSON `{"session": KEY, "action": "start" | "stop"}`, where KEY is the
`X-Robotcam-Session` header of the viewer's /offer answer:
  200 {"talking": true, "max_seconds": ..., "remaining": ...}   start: the line is yours
  200 {"talking": false}                                         stop (also when not talking)
  409 {"error": "line busy", "talker": N}                        someone else holds it
  403 {"error": "talk-back is disabled ..." | "... unavailable: no output device ..."}
  404 {"error": "unknown session ..."}                           ended, or never existed
  400 {"error": ...}                                             not JSON, wrong fields
  503 {"error": "the robot's speaker cannot be used: ..."}
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import re
from importlib import metadata
from pathlib import Path
from typing import Any

from aiohttp import web

from robotcam.audio.talk import TalkError, TalkbackComponent
from robotcam.http.auth import IDENTITY
from robotcam.service.daemon import Daemon
from robotcam.http.events import EventHub
from robotcam.service.tls import TLSError, ca_certificate_der

log = logging.getLogger(__name__)

_DAEMON = web.AppKey("robotcam.audio.daemon", Daemon)
ACTIONS = ("start", "stop")


def add_routes(app: web.Application, daemon: Daemon) -> None:
    """Everything issue #4 serves; one call from server.build_app."""
    app[_DAEMON] = daemon
    app.router.add_post("/api/talk", talk)
    app.router.add_get("/api/events", events)
    app.router.add_get("/robotcam-ca.crt", ca_certificate)
    app.router.add_get("/help/https", https_help)
    app.on_shutdown.append(_close_event_streams)


def _error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


async def _close_event_streams(app: web.Application) -> None:
    """Before aiohttp waits for open handlers: end the never-ending ones."""
    await app[_DAEMON].events.close_clients()


def _talkback(request: web.Request) -> TalkbackComponent:
    return request.app[_DAEMON].talkback


async def events(request: web.Request) -> web.StreamResponse:
    hub: EventHub = request.app[_DAEMON].events
    return await hub.handle(request)


async def _read_talk_request(request: web.Request) -> tuple[str, str]:
    body = await request.read()  # bounded by client_max_size (server.max_body_bytes)
    example = '{"session": "<X-Robotcam-Session of your /offer answer>", "action": "start"}'
    if not body.strip():
        raise TalkError(400, f"empty body: send JSON {example}")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise TalkError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise TalkError(400, f"body must be a JSON object {example}")
    session, action = data.get("session"), data.get("action")
    if session is None:
        raise TalkError(400, "missing field 'session': the X-Robotcam-Session header of your /offer answer")
    if not isinstance(session, str) or not session:
        raise TalkError(400, "field 'session' must be a non-empty string")
    if action is None:
        raise TalkError(400, "missing field 'action': \"start\" or \"stop\"")
    if action not in ACTIONS:
        raise TalkError(400, f"field 'action' must be \"start\" or \"stop\" (got {json.dumps(action)})")
    return session, action


async def talk(request: web.Request) -> web.Response:
    daemon = request.app[_DAEMON]
    try:
        key, action = await _read_talk_request(request)
        session = daemon.peers.owned_by(key, request[IDENTITY])
        if session is None:
            raise TalkError(404, "unknown session: it has ended or never existed; connect again")
        if action == "stop":
            daemon.talkback.release(session, "let go")
            return web.json_response({"talking": False})
        return web.json_response(await daemon.talkback.request(session))
    except TalkError as exc:
        if exc.status != 409:
            log.info("talk request from %s refused (%d): %s", request.remote, exc.status, exc.message)
        return _error(exc.status, exc.message, **exc.extra)


async def ca_certificate(request: web.Request) -> web.Response:
    """The CA that signed the HTTPS certificate (made by `robotcam gen-cert`), for phones to
    install: the MIME type makes iOS offer a profile and Android save a certificate."""
    tls = request.app[_DAEMON].config.server.tls
    if not tls.enabled:
        raise web.HTTPNotFound(text="HTTPS is off: no certificate to install (see README, HTTPS)\n")
    try:
        der = await asyncio.to_thread(ca_certificate_der, tls.cert)
    except TLSError as exc:
        raise web.HTTPNotFound(text=f"{exc}\n") from None
    return web.Response(
        body=der, content_type="application/x-x509-ca-cert",
        headers={"Cache-Control": "no-cache"},
    )


HTTPS_FALLBACK = """## HTTPS

Browsers give the microphone (the talk button) only to secure pages. On the robot:

    sudo robotcam gen-cert

then add the two paths it prints under server.tls in /etc/robotcam.yaml, restart robotcam
(sudo systemctl restart robotcam), and install the robot's CA (ca.crt, also at
/robotcam-ca.crt on the robot) on each phone: see robotcam's README, section HTTPS.
"""


def _readme() -> str:
    checkout = Path(__file__).resolve().parents[2] / "README.md"
    try:
        return checkout.read_text(encoding="utf-8")
    except OSError:
        pass
    try:
        return metadata.metadata("robotcam").get_payload() or ""  # type: ignore[attr-defined]
    except (metadata.PackageNotFoundError, AttributeError):
        return ""


def https_section(readme: str) -> str:
    """The README's `## HTTPS` section, up to the next `## ` heading."""
    match = re.search(r"^## HTTPS\b.*?(?=^## |\Z)", readme, re.M | re.S)
    return match.group(0).strip() if match else HTTPS_FALLBACK.strip()


async def https_help(request: web.Request) -> web.Response:
    text = https_section(await asyncio.to_thread(_readme))
    page = (
        "<!doctype html><html lang=en><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        "<title>robotcam: HTTPS</title>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:1rem auto;padding:0 1rem}"
        "pre{white-space:pre-wrap;overflow-wrap:anywhere}</style>"
        f"<pre>{html.escape(text)}</pre>"
        "<p><a href=/robotcam-ca.crt>Download this robot's CA certificate</a> (when HTTPS is on)</p>"
    )
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-cache"})
