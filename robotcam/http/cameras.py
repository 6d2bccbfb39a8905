"""Choosing cameras over HTTP: `?camera=` on the signaling routes, and POST /api/camera, which
moves one of a viewer's video sections to another camera without a new offer.

`?camera=front` picks the camera of an offer's (first) video section; `?camera=front,arm` (or the
parameter repeated) names them in order; sections not named get the other cameras in config
order. An unknown name is a 404 whose JSON lists the names there are.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from robotcam.http.auth import IDENTITY
from robotcam.http.errors import json_error
from robotcam.service.daemon import Daemon
from robotcam.webrtc.peers import OfferError

log = logging.getLogger(__name__)

DAEMON = web.AppKey("cameras_daemon", Daemon)


def wanted_cameras(query: MultiMapping[str]) -> list[str] | None:
    """The camera names a request's query asks for, in order, or None (config order)."""
    names = [name.strip() for value in query.getall("camera", []) for name in value.split(",")]
    names = [name for name in names if name]
    return names or None


def read_switch(data: Any) -> tuple[str, int, str]:
    """(session key, video section, camera) from a switch request, or OfferError 400."""
    if not isinstance(data, dict):
        raise OfferError(400, 'send JSON {"session": "...", "video": 0, "camera": "NAME"}')
    session, video, camera = data.get("session"), data.get("video", 0), data.get("camera")
    if not isinstance(session, str) or not session:
        raise OfferError(400, "missing field 'session': the X-Robotcam-Session of the viewer")
    if not isinstance(video, int) or isinstance(video, bool):
        raise OfferError(400, "field 'video' must be the index of a video section (0 is the first)")
    if not isinstance(camera, str) or not camera:
        raise OfferError(400, "missing field 'camera': the name of the camera to show")
    return session, video, camera


async def switch_camera(request: web.Request) -> web.Response:
    """POST /api/camera {"session", "video", "camera"}: show another camera in one of the
    viewer's video sections, from that camera's next keyframe (asked for at once)."""
    daemon = request.app[DAEMON]
    try:
        data = json.loads(await request.read() or b"null")
    except (ValueError, UnicodeDecodeError):
        return json_error(400, 'the body is not JSON: send {"session": "...", "video": 0, "camera": "NAME"}')
    try:
        key, index, camera = read_switch(data)
        session = daemon.peers.owned_by(key, request[IDENTITY])
        if session is None:
            raise OfferError(404, "unknown session: it has ended or never existed; connect again")
        video = daemon.peers.switch_camera(session, index, camera)
    except OfferError as exc:
        return json_error(exc.status, exc.message, **exc.extra)
    return web.json_response({"video": video.index, "camera": video.camera, "cameras": daemon.cameras.names})


def add_routes(app: web.Application, daemon: Daemon) -> None:
    app[DAEMON] = daemon
    app.router.add_post("/api/camera", switch_camera)
