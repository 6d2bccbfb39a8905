#!/usr/bin/env python3
"""The comparison server for scripts/bench.py and scripts/bench_network.py: viewers served
the way aiortc's examples/webcam/webcam.py serves them.

One shared source track is relayed to every viewer through `aiortc.contrib.media.MediaRelay`
with its default `buffered=True` subscription, and each peer gets
`pc.addTrack(relay.subscribe(source))`: aiortc's RTCRtpSender then runs its own encoder per
viewer (libx264 with aiortc's settings for H.264, libvpx for VP8), fed from an unbounded
per-viewer queue, its bitrate set by the viewer's REMB. The source is robotcam's test pattern
(same size and rate, drawn as a `VideoStreamTrack`), or with `--file` a clip played through
aiortc's `MediaPlayer` as webcam.py plays its camera (one player, relayed), looped without end
by FFmpeg's concat demuxer (MediaPlayer's own `loop` restarts the timestamps, and then stops
pacing). Signaling is the same as robotcam's: `POST /offer` with `{"sdp", "type": "offer"}`
answers `{"sdp", "type": "answer"}`; `GET /health` answers 200; `GET /` is a viewer page like
webcam.py's (connects on load, no STUN). ICE host candidates are pinned to `--ice-address`
(127.0.0.1 by default) and no STUN/TURN server is used. `--codec video/H264` restricts the
answer to one codec, as webcam.py's `--video-codec` does; by default the viewer's preference
wins (VP8 for Chromium).

Like webcam.py, the source is opened at the first offer and peers that fail are closed.

    python scripts/bench_baseline.py --port 18081 --width 640 --height 480 --fps 30
    python scripts/bench_baseline.py --host 0.0.0.0 --ice-address 127.0.1.1 --file clip.mp4
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import aioice.ice
import av
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription, VideoStreamTrack
from aiortc.contrib.media import MediaPlayer, MediaRelay
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

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


LOOP_HOURS = 6.0  # how long --file plays before it ends


def endless_clip(clip: Path, workdir: Path) -> MediaStreamTrack:
    """The clip through aiortc's MediaPlayer, repeated for LOOP_HOURS by a concat list: its
    timestamps run on across repeats, so MediaPlayer paces it as it paces a single file."""
    with av.open(str(clip)) as container:
        seconds = float(container.duration or 0) / av.time_base or 1.0
    listing = workdir / "endless.txt"
    listing.write_text(f"file '{clip.resolve()}'\n" * math.ceil(LOOP_HOURS * 3600 / seconds))
    player = MediaPlayer(str(listing), format="concat", options={"safe": "0"})
    if player.video is None:
        raise SystemExit(f"{clip}: no video stream")
    return player.video


# webcam.py's index.html and client.js, reduced to what a benchmark viewer needs: video only,
# no STUN, connecting on load; `pc` is global there too.
VIEWER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>aiortc webcam example (baseline)</title></head>
<body><video id="video" autoplay playsinline muted></video>
<script>
var pc = new RTCPeerConnection({iceServers: []});
pc.addTransceiver('video', {direction: 'recvonly'});
pc.addEventListener('track', (evt) => { document.getElementById('video').srcObject = evt.streams[0]; });
pc.createOffer().then((offer) => pc.setLocalDescription(offer)).then(() => new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') resolve(); });
})).then(() => fetch('/offer', {method: 'POST', headers: {'Content-Type': 'application/json'},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: pc.localDescription.type})})
).then((response) => response.json()).then((answer) => pc.setRemoteDescription(answer));
</script></body></html>
"""


class BaselineServer:
    def __init__(self, open_source: Callable[[], MediaStreamTrack], codec: str | None = None) -> None:
        self.open_source = open_source
        self.codec = codec
        self.relay = MediaRelay()
        self.source: MediaStreamTrack | None = None
        self.pcs: set[RTCPeerConnection] = set()

    def shared_source(self) -> MediaStreamTrack:
        if self.source is None:  # webcam.py: create_local_tracks() opens the camera once
            self.source = self.open_source()
        return self.source

    def only_codec(self, pc: RTCPeerConnection, sender: RTCRtpSender) -> None:
        """webcam.py's --video-codec: answer with that codec alone."""
        codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == self.codec]
        transceiver = next(t for t in pc.getTransceivers() if t.sender == sender)
        transceiver.setCodecPreferences(codecs)

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
        sender = pc.addTrack(self.relay.subscribe(self.shared_source()))
        if self.codec:
            self.only_codec(pc, sender)
        await pc.setRemoteDescription(offer)
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    async def page(self, request: web.Request) -> web.Response:
        return web.Response(text=VIEWER_PAGE, content_type="text/html")

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "peers": len(self.pcs)})

    async def on_shutdown(self, app: web.Application) -> None:
        pcs, self.pcs = list(self.pcs), set()
        await asyncio.wait_for(
            asyncio.gather(*(pc.close() for pc in pcs), return_exceptions=True), timeout=5
        )
        if self.source is not None:
            self.source.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="WebRTC server in the style of aiortc's examples/webcam/webcam.py "
        "(MediaRelay + one aiortc encoder per viewer), for scripts/bench.py and scripts/bench_network.py."
    )
    parser.add_argument("--host", default="127.0.0.1", help="HTTP address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=18081)
    parser.add_argument("--width", type=int, default=640, help="test pattern width (default: 640)")
    parser.add_argument("--height", type=int, default=480, help="test pattern height (default: 480)")
    parser.add_argument("--fps", type=float, default=30.0, help="test pattern frame rate (default: 30)")
    parser.add_argument("--file", type=Path, help="play this clip (looped) instead of the test pattern")
    parser.add_argument("--ice-address", action="append", metavar="ADDR",
                        help="ICE host address, repeatable (default: 127.0.0.1)")
    parser.add_argument("--codec", metavar="MIME", help="answer with this codec only, e.g. video/H264")
    args = parser.parse_args(argv)
    if args.file and not args.file.is_file():
        parser.error(f"--file {args.file}: no such file")

    logging.basicConfig(level=logging.WARNING)
    addresses = args.ice_address or ["127.0.0.1"]
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: list(addresses)

    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as workdir:
        if args.file:
            server = BaselineServer(lambda: endless_clip(args.file, Path(workdir)), args.codec)
        else:
            server = BaselineServer(lambda: TestPatternTrack(args.width, args.height, args.fps), args.codec)
        app = web.Application()
        app.on_shutdown.append(server.on_shutdown)
        app.router.add_get("/", server.page)
        app.router.add_post("/offer", server.offer)
        app.router.add_get("/health", server.health)
        web.run_app(app, host=args.host, port=args.port, print=None, shutdown_timeout=3)


if __name__ == "__main__":
    main()
