#!/usr/bin/env python3
"""The comparison server for scripts/bench.py: viewers served the way aiortc's
examples/webcam/webcam.py serves them.

One shared source track (robotcam's test pattern, same size and rate, drawn as a
`VideoStreamTrack`) is relayed to every viewer through `aiortc.contrib.media.MediaRelay`
with its default `buffered=True` subscription, and each peer gets
`pc.addTrack(relay.subscribe(source))`: aiortc's RTCRtpSender then runs its own encoder per
viewer (libx264 with aiortc's settings for H.264, libvpx for VP8), fed from an unbounded
per-viewer queue. Signaling is the same as robotcam's: `POST /offer` with
`{"sdp", "type": "offer"}` answers `{"sdp", "type": "answer"}`; `GET /health` answers 200.
ICE host candidates are pinned to 127.0.0.1 and no STUN/TURN server is used.

Like webcam.py, the source is opened at the first offer and peers that fail are closed.

    python scripts/bench_baseline.py --port 18081 --width 640 --height 480 --fps 30
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import logging
import time
from typing import Any

import aioice.ice
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

from robotcam.video.sources.testpattern import TestPatternSource

VIDEO_CLOCK = 90000
TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)


class TestPatternTrack(VideoStreamTrack):
    """robotcam's test pattern as an aiortc track, paced like aiortc's VideoStreamTrack.

    Frame n is stamped with its capture time on the source's schedule (n / fps after the
    start, in 1/90000 s). When the event loop falls behind, frames are produced at once to
    catch up (as VideoStreamTrack.next_timestamp does), so a late frame carries its schedule
    time and the lateness shows up as delay at the viewer, the way a camera's frames would.
    """

    kind = "video"

    def __init__(self, width: int, height: int, fps: float) -> None:
        super().__init__()
        self._pattern = TestPatternSource(width, height, fps)
        self._fps = fps
        self._number = 0
        self._t0: float | None = None

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.time()
        if self._t0 is None:
            self._t0 = now
        due = self._t0 + self._number / self._fps
        if due > now:
            await asyncio.sleep(due - now)
        frame = self._pattern.render(self._number, time.time())
        frame.pts = round(self._number * VIDEO_CLOCK / self._fps)
        frame.time_base = TIME_BASE
        self._number += 1
        return frame


class BaselineServer:
    def __init__(self, width: int, height: int, fps: float) -> None:
        self.width, self.height, self.fps = width, height, fps
        self.relay = MediaRelay()
        self.source: TestPatternTrack | None = None
        self.pcs: set[RTCPeerConnection] = set()

    def shared_source(self) -> TestPatternTrack:
        if self.source is None:  # webcam.py: create_local_tracks() opens the camera once
            self.source = TestPatternTrack(self.width, self.height, self.fps)
        return self.source

    async def offer(self, request: web.Request) -> web.Response:
        params = await request.json()
        offer = RTCSessionDescription(sdp=params["sdp"], type=params["type"])
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pcs.add(pc)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "failed":
                await pc.close()
            if pc.connectionState in ("failed", "closed"):
                self.pcs.discard(pc)

        # webcam.py: pc.addTrack(relay.subscribe(webcam.video)) - buffered by default
        pc.addTrack(self.relay.subscribe(self.shared_source()))
        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "peers": len(self.pcs)})

    async def on_shutdown(self, app: web.Application) -> None:
        pcs, self.pcs = list(self.pcs), set()
        await asyncio.wait_for(
            asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True), timeout=5
        )
        if self.source is not None:
            self.source.stop()


def _loopback_only(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
    return ["127.0.0.1"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="WebRTC server in the style of aiortc's examples/webcam/webcam.py "
        "(MediaRelay + one aiortc encoder per viewer), for scripts/bench.py."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18081)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING)
    aioice.ice.get_host_addresses = _loopback_only

    server = BaselineServer(args.width, args.height, args.fps)
    app = web.Application()
    app.on_shutdown.append(server.on_shutdown)
    app.router.add_post("/offer", server.offer)
    app.router.add_get("/health", server.health)
    web.run_app(app, host=args.host, port=args.port, print=None, shutdown_timeout=3)


if __name__ == "__main__":
    main()
