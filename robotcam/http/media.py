"""HTTP for what the camera gives besides WebRTC: GET /snapshot.jpg, GET /stream.mjpg,
GET /metrics, GET /api/recordings and GET /api/recordings/{name}. One add_routes() call from
server.build_app.

Errors are JSON `{"error": "..."}` (these paths are API paths for server._is_api).
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from robotcam.service.daemon import Daemon
from robotcam.http.errors import json_error
from robotcam.video.cameras import UnknownCamera
from robotcam.video.mjpeg import MjpegFull
from robotcam.video.stills import StillError

log = logging.getLogger(__name__)

_DAEMON = web.AppKey("robotcam.media.daemon", Daemon)

#: Route -> the permission a caller needs. The access-control layer (issue #9) reads this
#: table; nothing here checks it. "view": anyone allowed to watch; "metrics": a Prometheus
#: bearer token (or admin); "admin": the robot's owner.
PERMISSIONS: dict[str, str] = {  # merged into robotcam/auth/http.py's route table
    "/snapshot.jpg": "view",
    "/stream.mjpg": "view",
    "/metrics": "metrics",
    "/api/recordings": "admin",
    "/api/recordings/{name}": "admin",
}
#: Paths whose errors are JSON and whose answers are never cached (see server._is_api).
API_PATHS = frozenset(path for path in PERMISSIONS if "{" not in path)
API_PREFIXES = ("/api/recordings/",)

BOUNDARY = "robotcamframe"
MJPEG_WRITE_TIMEOUT = 20.0  # seconds a client may stop reading before it is dropped


def is_api(path: str) -> bool:
    return path in API_PATHS or path.startswith(API_PREFIXES)


def add_routes(app: web.Application, daemon: Daemon) -> None:
    app[_DAEMON] = daemon
    app.router.add_get("/snapshot.jpg", snapshot)
    app.router.add_get("/stream.mjpg", mjpeg_stream)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/recordings", recordings)
    app.router.add_get("/api/recordings/{name}", recording)
    app.on_shutdown.append(_end_streams)


def unknown_camera(request: web.Request) -> web.Response | None:
    """A 404 for `?camera=NAME` naming no camera; None for a known one or no parameter."""
    try:
        request.app[_DAEMON].cameras.get(request.query.get("camera"))
    except UnknownCamera as exc:
        return json_error(404, str(exc), cameras=exc.known)
    return None


async def _end_streams(app: web.Application) -> None:
    """Before aiohttp waits for open handlers: end the MJPEG streams, which never end."""
    await app[_DAEMON].mjpeg.stop()


async def snapshot(request: web.Request) -> web.StreamResponse:
    if (refused := unknown_camera(request)) is not None:
        return refused
    try:
        jpeg = await request.app[_DAEMON].snapshots.jpeg(request.query.get("camera"))
    except StillError as exc:
        return json_error(503, f"no snapshot: {exc}")
    return web.Response(body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def mjpeg_stream(request: web.Request) -> web.StreamResponse:
    if (refused := unknown_camera(request)) is not None:
        return refused
    daemon = request.app[_DAEMON]
    camera = request.query.get("camera")
    problem = daemon.cameras.get(camera).picture_problem()
    if problem is not None:
        return json_error(503, f"no stream: {problem}")
    try:
        client = daemon.mjpeg.join(camera)
    except MjpegFull as exc:
        return json_error(503, str(exc), max_clients=daemon.mjpeg.config.max_clients)
    response = web.StreamResponse(headers={
        "Content-Type": f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        "Cache-Control": "no-store",
        "Connection": "close",
    })
    try:
        await response.prepare(request)
        while (jpeg := await client.next()) is not None:
            head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    f"Content-Length: {len(jpeg)}\r\n\r\n").encode()
            await asyncio.wait_for(response.write(head + jpeg + b"\r\n"), MJPEG_WRITE_TIMEOUT)
    except (ConnectionError, asyncio.TimeoutError):
        log.debug("MJPEG client %d went away", client.number)
    finally:
        daemon.mjpeg.leave(client)
    return response


async def metrics(request: web.Request) -> web.Response:
    body = await request.app[_DAEMON].metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def recordings(request: web.Request) -> web.Response:
    """The segments in recording.path, oldest first: name, start, duration, bytes."""
    recorder = request.app[_DAEMON].recorder
    segments = await asyncio.to_thread(recorder.list_segments)
    return web.json_response({
        "recording": recorder.health(),
        "segments": [segment.as_json() for segment in segments],
    })


async def recording(request: web.Request) -> web.StreamResponse:
    """One segment, by the name the listing gave; nothing else, and nothing outside the folder."""
    name = request.match_info["name"]
    recorder = request.app[_DAEMON].recorder
    path = recorder.segment_path(name)
    if path is None:
        return json_error(400, f"not a recording's name: {name!r} (see GET /api/recordings)")
    if not await asyncio.to_thread(path.is_file):
        return json_error(404, f"no recording named {name!r}")
    return web.FileResponse(path, headers={
        "Content-Type": "video/mp4",
        "Content-Disposition": f'attachment; filename="{name}"',
    })
