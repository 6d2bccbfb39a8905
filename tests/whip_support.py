"""A WHIP endpoint the tests control: a real aiortc receiver behind it (it decodes what robotcam
publishes), or canned failures (401, 404, 429 + Retry-After, garbage, an answer whose media
address never answers). Every request is recorded with its time."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from robotcam.video.sources.testpattern import decode_frame_number
from tests.viewer import TrackReaders


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: str
    at: float = field(default_factory=time.monotonic)


class Receiver:
    """The media server's side of one session: decodes the video, notes the sound."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.numbers: list[int | None] = []
        self.audio_frames = 0
        self.readers = TrackReaders(self.pc, self._on_frame)

    def _on_frame(self, track: Any, frame: Any) -> None:
        if track.kind == "video":
            self.numbers.append(decode_frame_number(frame))
        else:
            self.audio_frames += 1

    async def answer(self, offer: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription.sdp

    async def close(self) -> None:
        await self.pc.close()
        await self.readers.close()


class WhipEndpoint:
    """POST /whip/{stream}; sessions at /session/{n}. `mode` says how POST answers:
    accept, status (self.status/self.headers/self.body), no-location, not-sdp, ok-200,
    unreachable (a real answer, then its receiver closes: ICE never completes)."""

    def __init__(self) -> None:
        self.mode = "accept"
        self.status, self.headers, self.body = 401, {}, ""
        self.trickle = False  # answer with Accept-Patch: application/trickle-ice-sdpfrag
        self.token: str | None = None  # when set, POST needs this bearer token
        self.links: list[str] = []  # Link header values (ICE servers) on OPTIONS and 201
        self.requests: list[Request] = []
        self.receivers: dict[str, Receiver] = {}
        self._count = 0
        app = web.Application()
        app.router.add_route("*", "/whip/{stream}", self._endpoint)
        app.router.add_route("*", "/old/{stream}", self._moved)
        app.router.add_route("*", "/session/{n}", self._session)
        self.server = TestServer(app, host="127.0.0.1")

    async def __aenter__(self) -> WhipEndpoint:
        await self.server.start_server()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.gather(*(r.close() for r in self.receivers.values()))
        await self.server.close()

    def url(self, path: str = "/whip/robot7") -> str:
        return str(self.server.make_url(path))

    def of(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    async def _record(self, request: web.Request) -> Request:
        entry = Request(request.method, request.path, dict(request.headers), (await request.read()).decode())
        self.requests.append(entry)
        return entry

    async def _moved(self, request: web.Request) -> web.Response:
        await self._record(request)
        raise web.HTTPPermanentRedirect(f"/whip/{request.match_info['stream']}")  # 308

    async def _endpoint(self, request: web.Request) -> web.Response:
        entry = await self._record(request)
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=[("Link", link) for link in self.links])
        if request.method != "POST":
            return web.Response(status=405)
        if self.token and entry.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="bad token")
        if self.mode == "status":
            return web.Response(status=self.status, headers=self.headers, text=self.body)
        if self.mode == "not-sdp":
            return web.Response(status=201, headers={"Location": "/session/0"}, text="<html>hello</html>")
        if self.mode == "ok-200":
            return web.Response(status=200, text="OK")
        receiver = Receiver()
        answer = await receiver.answer(entry.body)
        self._count += 1
        key = str(self._count)
        self.receivers[key] = receiver
        if self.mode in ("unreachable", "no-location"):
            await receiver.close()  # no media address answers (or no way to DELETE it)
        headers = {"Location": f"../session/{key}", "ETag": f'"etag-{key}"', "Content-Type": "application/sdp"}
        if self.trickle:
            headers["Accept-Patch"] = "application/trickle-ice-sdpfrag"
        if self.mode == "no-location":
            del headers["Location"]
        return web.Response(
            status=201, headers=[*headers.items(), *(("Link", link) for link in self.links)], text=answer
        )

    async def _session(self, request: web.Request) -> web.Response:
        await self._record(request)
        receiver = self.receivers.get(request.match_info["n"])
        if receiver is None:
            return web.Response(status=404)
        if request.method == "DELETE":
            del self.receivers[request.match_info["n"]]
            await receiver.close()
            return web.Response(status=200)
        if request.method == "PATCH":
            return web.Response(status=204)
        return web.Response(status=405)
