"""HTTP: the web client at /, signaling at POST /offer, and GET /health.

Every error from the API is JSON `{"error": "..."}` saying what was wrong, so a client author
can act on it; nothing a client sends can take the daemon down for other viewers.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import Awaitable, Callable

from aiohttp import web

from robotcam.http.audio import add_routes as add_audio_routes
from robotcam.http.auth import IDENTITY, access_middleware
from robotcam.http.auth import add_routes as add_auth_routes
from robotcam.http.cameras import add_routes as add_camera_routes
from robotcam.http.cameras import wanted_cameras
from robotcam.service.daemon import Daemon
from robotcam.http.errors import json_error
from robotcam.http.media import PERMISSIONS as MEDIA_PERMISSIONS
from robotcam.http.media import add_routes as add_media_routes
from robotcam.http.media import is_api as is_media_api
from robotcam.service.logs import quiet_bad_requests
from robotcam.http.payload import RequestPayloadError, abandon_body, body_problem
from robotcam.webrtc.peers import OfferError
from robotcam.http.signaling import add_routes as add_signaling_routes
from robotcam.http.signaling.whep import problem as whep_problem

log = logging.getLogger(__name__)

DAEMON = web.AppKey("daemon", Daemon)
SESSION_HEADER = "X-Robotcam-Session"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def web_root() -> Path:
    """The web client's files: the checkout's `web/` when running from one, else the copy that
    packaging put inside the package (pyproject maps web/ to robotcam.web)."""
    checkout = Path(__file__).resolve().parent.parent / "web"
    if (checkout / "index.html").is_file():
        return checkout
    return Path(str(resources.files("robotcam.web")))


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """API routes answer errors in JSON, including aiohttp's own (404, 405, 413)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or not _is_api(request):
            raise
        message = {413: "request body too large"}.get(exc.status, exc.reason)
        return json_error(exc.status, message)
    except RequestPayloadError as exc:  # a Content-Encoding that does not decode, broken chunks
        if not _is_api(request):
            raise
        abandon_body(request)
        response = json_error(400, body_problem(exc))
        response.force_close()  # what follows the broken body on this connection is no request
        return response
    except Exception:  # noqa: BLE001 - a bug must cost one request, not the daemon
        if not _is_api(request):
            raise
        log.exception("internal error on %s %s", request.method, request.path)
        return json_error(500, "internal error: see the robot's log")


def _is_api(request: web.Request) -> bool:
    return (
        request.path in ("/offer", "/connect", "/health")
        or request.path.startswith("/api/")
        or is_media_api(request.path)
    )


async def read_offer(request: web.Request, limit: int) -> str:
    """The SDP of a `{"sdp": ..., "type": "offer"}` body, or an OfferError saying what is wrong.

    Any content type is accepted: the seeds' clients post JSON as text/plain."""
    if request.content_length is not None and request.content_length > limit:
        raise OfferError(413, f"request body too large: the limit is {limit} bytes")
    body = b""
    while chunk := await request.content.read(limit + 1 - len(body)):  # may return a part
        body += chunk
        if len(body) > limit:
            raise OfferError(413, f"request body too large: the limit is {limit} bytes")
    if not body.strip():
        raise OfferError(400, 'empty body: send JSON {"sdp": "...", "type": "offer"}')
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise OfferError(400, f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise OfferError(400, 'body must be a JSON object {"sdp": "...", "type": "offer"}')
    kind, sdp = data.get("type"), data.get("sdp")
    if kind is None:
        raise OfferError(400, "missing field 'type': it must be \"offer\"")
    if kind != "offer":
        raise OfferError(400, f"field 'type' must be \"offer\" (got {json.dumps(kind)})")
    if sdp is None:
        raise OfferError(400, "missing field 'sdp'")
    if not isinstance(sdp, str):
        raise OfferError(400, f"field 'sdp' must be a string (got {type(sdp).__name__})")
    if not sdp.strip():
        raise OfferError(400, "field 'sdp' is empty")
    return sdp


async def offer(request: web.Request) -> web.Response:
    daemon = request.app[DAEMON]
    try:
        sdp = await read_offer(request, daemon.config.server.max_body_bytes)
        session, answer = await daemon.peers.open_session(sdp, request[IDENTITY], wanted_cameras(request.query))
    except OfferError as exc:
        log.info("offer from %s refused (%d): %s", request.remote, exc.status, exc.message)
        return json_error(exc.status, exc.message, **exc.extra)
    # The body stays exactly {sdp, type}: clients do RTCSessionDescription(**answer). The
    # header names this viewer in later requests (talk-back); plain clients ignore it.
    return web.json_response(
        {"sdp": answer, "type": "answer"}, headers={SESSION_HEADER: session.key}
    )


async def viewer_quality(request: web.Request) -> web.Response:
    """GET /api/viewer?session=KEY: the rendition a viewer receives and why, and its link, for
    the page's stats overlay (its own session only, as for talking)."""
    daemon = request.app[DAEMON]
    session = daemon.peers.owned_by(request.query.get("session", ""), request[IDENTITY])
    if session is None:
        return json_error(404, "unknown session: it has ended or never existed; connect again")
    policy = session.policy
    rungs = policy.rungs if policy else []
    rung = min(policy.rung, len(rungs) - 1) if policy and rungs else 0
    return web.json_response({
        "rung": rung,
        "rungs": len(rungs),
        "rendition": rungs[rung].describe() if rungs else None,
        "why": policy.why if policy else None,
        "link": session.link.describe() if session.link else None,
    })


async def client_config(request: web.Request) -> web.Response:
    """What the web client needs before its offer: ICE servers and the features on offer."""
    return web.json_response(request.app[DAEMON].peers.client_config(request[IDENTITY]))


async def health(request: web.Request) -> web.Response:
    """The full report needs `view`; without it only {"status"} with the same HTTP code, so
    probes and uptime monitors work without a credential."""
    daemon = request.app[DAEMON]
    report = daemon.health()
    status = 200 if report["status"] != "failing" else 503
    if not request[IDENTITY].allows("view"):
        report = {"status": report["status"]}
    return web.json_response(report, status=status)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(web_root() / "index.html", headers={"Cache-Control": "no-cache"})


@web.middleware
async def no_cache_api(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    if _is_api(request):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def build_app(daemon: Daemon) -> web.Application:
    quiet_bad_requests()  # a malformed request is the client's problem, not an ERROR of ours
    app = web.Application(
        client_max_size=daemon.config.server.max_body_bytes,
        middlewares=[json_errors, no_cache_api, access_middleware(whep_problem)],
    )
    app[DAEMON] = daemon

    async def close_viewers_of(login: str) -> int:
        return daemon.peers.revoke(lambda identity: identity.login != login, "signed out")

    # /api/login, /api/logout, /api/session, and who may use which route
    add_auth_routes(app, daemon.access, close_viewers_of, MEDIA_PERMISSIONS)
    app.router.add_get("/", index)
    app.router.add_post("/offer", offer)
    app.router.add_post("/connect", offer)  # RTCBot's client posts its offer here
    app.router.add_get("/health", health)
    app.router.add_get("/api/config", client_config)
    app.router.add_get("/api/viewer", viewer_quality)
    add_signaling_routes(app, daemon)  # /whep, /whep/{key}, /ws
    add_camera_routes(app, daemon)  # /api/camera
    add_audio_routes(app, daemon)  # /api/talk, /api/events, /robotcam-ca.crt
    add_media_routes(app, daemon)  # /snapshot.jpg, /stream.mjpg, /metrics, /api/recordings
    app.router.add_static("/static/", web_root(), show_index=False, append_version=False)
    return app
