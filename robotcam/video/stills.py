"""Still pictures: what the pipeline keeps so a JPEG can be made on request, and the JPEG encoder.

Nothing here runs per frame beyond keeping a reference: a frame source's latest raw frame is
held as it is (no copy, no conversion, no encoding); an encoding source (the Pi camera) is asked
for a capture from its running camera, and failing that the H.264 packets since the last
keyframe are kept (references too) and decoded only when someone asks. So a robot nobody asks
for pictures spends nothing on them, and an answer never waits for the next keyframe.
"""

from __future__ import annotations

import asyncio
import threading
import time
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable

import av

from robotcam.config import Config, SnapshotConfig
from robotcam.video.transform import prepare

if TYPE_CHECKING:
    from robotcam.video.pipeline import VideoPipeline

GOP_LIMIT = 600  # packets kept since the last keyframe (20 s at 30 fps): bounds memory


class StillError(Exception):
    """No picture can be made now (no frame yet, the source stalled); the message says why."""


def jpeg_qscale(quality: int) -> int:
    """A 1-100 quality (100 best) as FFmpeg's MJPEG qscale (2 best .. 31 smallest)."""
    return round(31 - (min(100, max(1, quality)) - 1) * 29 / 99)


class JpegEncoder:
    """PyAV's MJPEG encoder for one picture size; reopened when the size changes. One thread
    at a time (callers own an instance each, or serialise)."""

    def __init__(self, quality: int) -> None:
        self.quality = quality
        self._context: av.VideoCodecContext | None = None
        self._count = 0  # the context wants increasing timestamps

    def encode(self, frame: av.VideoFrame) -> bytes:
        ctx = self._context
        if ctx is None or (ctx.width, ctx.height) != (frame.width, frame.height):
            ctx = self._context = self._open(frame.width, frame.height)
        # JPEG is full range: yuvj420p converts the video range of yuv420p properly
        picture = frame.reformat(format="yuvj420p")
        picture.pts, picture.time_base = self._count, ctx.time_base
        self._count += 1
        return b"".join(bytes(p) for p in ctx.encode(picture))

    def _open(self, width: int, height: int) -> av.VideoCodecContext:
        ctx = av.CodecContext.create("mjpeg", "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuvj420p"
        ctx.time_base = Fraction(1, 30)
        ctx.qmin = ctx.qmax = jpeg_qscale(self.quality)
        ctx.open()
        return ctx


def encode_jpeg(frame: av.VideoFrame, quality: int) -> bytes:
    """One JPEG from one frame (blocking: call it in a thread)."""
    return JpegEncoder(quality).encode(frame)


class LatestPicture:
    """The pipeline's memory of the newest picture. Written by the source thread (a reference
    swap, nothing more), read by whoever wants a still, in a thread of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: av.VideoFrame | None = None
        self._gop: list[av.Packet] = []
        self.sequence = 0  # rises with every frame or packet: a reader can tell "new"

    def clear(self) -> None:
        """A new source: what the old one showed is no longer the current picture."""
        with self._lock:
            self._frame, self._gop = None, []

    def on_frame(self, frame: av.VideoFrame) -> None:
        self._frame = frame  # one reference swap: atomic under the GIL
        self.sequence += 1

    def on_packet(self, packet: av.Packet) -> None:
        with self._lock:
            if packet.is_keyframe:
                self._gop = [packet]
            elif self._gop and len(self._gop) < GOP_LIMIT:
                self._gop.append(packet)
        self.sequence += 1

    def picture(
        self, width: int, height: int, flips: tuple[bool, bool],
        capture: Callable[[], av.VideoFrame | None] | None = None,
    ) -> av.VideoFrame:
        """The newest picture as yuv420p at width x height (blocking). `capture` is the
        source's own still capture, tried first for encoding sources."""
        frame = self._frame
        if frame is not None:
            return prepare(frame, width, height, *flips)
        if capture is not None:
            captured = capture()
            if captured is not None:
                return prepare(captured, width, height, False, False)
        with self._lock:
            packets = list(self._gop)
        if not packets:
            raise StillError("no picture yet: the camera has not delivered a keyframe")
        decoder = av.CodecContext.create("h264", "r")
        decoded: av.VideoFrame | None = None
        for packet in packets:
            for decoded in decoder.decode(packet):
                pass
        for decoded in decoder.decode(None):
            pass
        if decoded is None:
            raise StillError("the camera's latest pictures could not be decoded")
        return prepare(decoded, width, height, False, False)


class Snapshots:
    """GET /snapshot.jpg's worker (a daemon component): one JPEG per request, made in a thread
    from the newest picture; requests for the same picture share one encoding."""

    name = "snapshot"

    def __init__(self, camera: Callable[[str | None], VideoPipeline], config: SnapshotConfig) -> None:
        self.camera = camera  # name (None: the first) -> that camera's pipeline
        self.quality = config.quality
        self._lock = asyncio.Lock()  # one encoding at a time: a burst of requests queues
        self._cached: dict[str, tuple[int, int, bytes]] = {}  # camera -> (sequence, quality, jpeg)
        self.served = 0
        self.encoded = 0
        self.failures = 0
        self.encode_seconds = 0.0

    async def jpeg(self, camera: str | None = None) -> bytes:
        """The newest picture of `camera` (None: the first) as a JPEG; StillError when the
        camera has none to give (UnknownCamera for a name no camera has)."""
        pipeline = self.camera(camera)
        problem = pipeline.picture_problem()
        if problem is not None:
            self.failures += 1
            raise StillError(problem)
        async with self._lock:
            sequence = pipeline.latest.sequence
            cached = self._cached.get(pipeline.name)
            if cached is not None and cached[:2] == (sequence, self.quality):
                self.served += 1
                return cached[2]
            started = time.perf_counter()
            try:
                data = await asyncio.to_thread(lambda: encode_jpeg(pipeline.picture(), self.quality))
            except StillError:
                self.failures += 1
                raise
            self.encode_seconds += time.perf_counter() - started
            self.encoded += 1
            self.served += 1
            self._cached[pipeline.name] = (sequence, self.quality, data)
            return data

    async def start(self) -> None: ...

    async def stop(self) -> None:
        async with self._lock:  # an encoding under way finishes first
            self._cached.clear()

    def health(self) -> dict[str, Any]:
        return {"served": self.served, "encoded": self.encoded, "failures": self.failures}

    def apply_config(self, config: Config) -> None:
        self.quality = config.snapshot.quality
