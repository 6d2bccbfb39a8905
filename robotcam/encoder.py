"""Shared encoders: each codec is encoded once, in its own thread, for every viewer.

The source thread drops frames into a one-slot mailbox (a newer frame replaces one not yet
encoded, so a slow encoder lowers the frame rate instead of building delay). The encoder thread
turns frames into `av.Packet`s with `pts` and `time_base` set (aiortc's RTCRtpSender silently
stops a viewer's video if either is missing) and hands them to a callback, which the pipeline
uses to publish them to the fan-out hub on the event loop.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable

import av

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 90000)  # the RTP video clock: no rescaling in aiortc's packer
KEYFRAME_MIN_INTERVAL = 0.3  # forced IDRs closer than this are merged into one

PacketCallback = Callable[[av.Packet], None]

# H.264 levels as (name, max macroblocks per frame, max macroblocks per second, max kbit/s
# for baseline), from ITU-T H.264 Table A-1.
_H264_LEVELS = [
    ("2", 396, 11880, 2000), ("2.1", 792, 19800, 4000), ("2.2", 1620, 20250, 4000),
    ("3", 1620, 40500, 10000), ("3.1", 3600, 108000, 14000), ("3.2", 5120, 216000, 20000),
    ("4", 8192, 245760, 20000), ("4.1", 8192, 245760, 50000), ("4.2", 8704, 522240, 50000),
    ("5", 22080, 589824, 135000), ("5.1", 36864, 983040, 240000), ("5.2", 36864, 2073600, 240000),
]


def h264_level(width: int, height: int, fps: float, bitrate: int) -> str:
    """The lowest H.264 level whose limits fit this picture size, rate and bitrate."""
    frame_mbs = math.ceil(width / 16) * math.ceil(height / 16)
    for name, max_fs, max_mbps, max_kbps in _H264_LEVELS:
        if frame_mbs <= max_fs and frame_mbs * fps <= max_mbps and bitrate <= max_kbps * 1000:
            return name
    return _H264_LEVELS[-1][0]


@dataclass(frozen=True)
class EncoderSettings:
    fps: float
    bitrate: int
    keyframe_interval: float  # seconds
    preset: str = "ultrafast"

    @property
    def gop(self) -> int:
        return max(1, round(self.fps * self.keyframe_interval))


class FrameEncoder(ABC):
    """One codec's encoder thread. Frames in through submit(), packets out through the callback."""

    codec: str  # the RTP codec name: "H264" or "VP8"

    def __init__(self, settings: EncoderSettings, on_packet: PacketCallback) -> None:
        self.settings = settings
        self._on_packet = on_packet
        self._cond = threading.Condition()
        self._pending: av.VideoFrame | None = None
        self._closing = False
        self._keyframe_wanted = False
        self._last_forced = -math.inf
        self._context: av.VideoCodecContext | None = None
        self._thread = threading.Thread(
            target=self._main, name=f"robotcam-encoder-{self.codec}", daemon=True
        )
        # counters, written by the encoder thread, read anywhere
        self.frames_in = 0
        self.frames_skipped = 0  # replaced in the mailbox before the encoder got to them
        self.frames_encoded = 0
        self.packets_out = 0
        self.keyframes_out = 0
        self.keyframes_forced = 0
        self.contexts_opened = 0
        self.errors = 0

    # --- called from other threads -----------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def submit(self, frame: av.VideoFrame) -> None:
        with self._cond:
            if self._closing:
                return
            self.frames_in += 1
            if self._pending is not None:
                self.frames_skipped += 1
            self._pending = frame
            self._cond.notify()

    def request_keyframe(self) -> None:
        """Ask for an IDR soon. Requests within KEYFRAME_MIN_INTERVAL of the last one merge."""
        with self._cond:
            self._keyframe_wanted = True

    def update(self, settings: EncoderSettings) -> None:
        """New bitrate, rate or GOP: the context is reopened at the next frame (an IDR)."""
        with self._cond:
            self.settings = settings
            self._context = None

    def close(self) -> None:
        """Ask the thread to finish; join() waits for it."""
        with self._cond:
            self._closing = True
            self._pending = None
            self._cond.notify()

    def join(self, timeout: float = 2.0) -> None:
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the encoder thread -------------------------------------------------------------------

    def _main(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                if self._closing:
                    break
                frame, self._pending = self._pending, None
                force = False
                now = time.monotonic()
                if self._keyframe_wanted and now - self._last_forced >= KEYFRAME_MIN_INTERVAL:
                    force, self._keyframe_wanted, self._last_forced = True, False, now
                settings = self.settings
            try:
                self._encode(frame, force, settings)
            except Exception:  # noqa: BLE001 - one bad frame must not end the stream
                self.errors += 1
                self._context = None
                if self.errors <= 3 or self.errors % 100 == 0:
                    log.exception("%s encoder failed on a frame (%d so far); reopening", self.codec, self.errors)
        self._context = None

    def _encode(self, frame: av.VideoFrame, force: bool, settings: EncoderSettings) -> None:
        ctx = self._context
        if ctx is None or ctx.width != frame.width or ctx.height != frame.height:
            ctx = self._context = self._open(frame.width, frame.height, settings)
            self.contexts_opened += 1
            force = True  # a fresh context starts with an IDR anyway: count it as one
        if force:
            self.keyframes_forced += 1
        frame.pict_type = av.video.frame.PictureType.I if force else av.video.frame.PictureType.NONE
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        for packet in ctx.encode(frame):
            packet.time_base = TIME_BASE
            if packet.pts is None:
                packet.pts = frame.pts
            self.packets_out += 1
            if packet.is_keyframe:
                self.keyframes_out += 1
            self._on_packet(packet)
        self.frames_encoded += 1

    @abstractmethod
    def _open(self, width: int, height: int, settings: EncoderSettings) -> av.VideoCodecContext: ...


class H264Encoder(FrameEncoder):
    """libx264, constrained baseline: the bitstream matches the profile-level-id 42e01f aiortc
    signals and every browser decodes. No B-frames, zerolatency (no lookahead), and SPS/PPS in
    front of every IDR so a viewer can start at any keyframe."""

    codec = "H264"

    def _open(self, width: int, height: int, settings: EncoderSettings) -> av.VideoCodecContext:
        ctx = av.CodecContext.create("libx264", "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = Fraction(settings.fps).limit_denominator(1001)
        ctx.bit_rate = settings.bitrate
        ctx.gop_size = settings.gop
        ctx.max_b_frames = 0
        kbps = max(1, settings.bitrate // 1000)
        level = h264_level(width, height, settings.fps, settings.bitrate)
        ctx.options = {
            "preset": settings.preset,
            "tune": "zerolatency",
            "profile": "baseline",
            "level": level,
            "forced-idr": "1",
            "x264-params": ":".join([
                f"keyint={settings.gop}", f"min-keyint={settings.gop}", "scenecut=0",
                "bframes=0", "repeat-headers=1", "annexb=1",
                f"vbv-maxrate={kbps}", f"vbv-bufsize={kbps}",
            ]),
        }
        ctx.open()
        log.info(
            "H.264 encoder: libx264 %dx%d@%g constrained baseline level %s, %d kbit/s, "
            "keyframe every %d frames, preset %s", width, height, settings.fps, level, kbps,
            settings.gop, settings.preset,
        )
        return ctx


class VP8Encoder(FrameEncoder):
    """libvpx in realtime mode, with the rate-control settings aiortc's own VP8 encoder uses.
    Only started for browsers that offer no H.264."""

    codec = "VP8"

    def _open(self, width: int, height: int, settings: EncoderSettings) -> av.VideoCodecContext:
        ctx = av.CodecContext.create("libvpx", "w")
        ctx.width, ctx.height = width, height
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = TIME_BASE
        ctx.framerate = Fraction(settings.fps).limit_denominator(1001)
        ctx.bit_rate = settings.bitrate
        ctx.gop_size = settings.gop
        ctx.qmin, ctx.qmax = 2, 56
        ctx.thread_count = 2 if width * height >= 640 * 480 else 1
        ctx.options = {
            "bufsize": str(settings.bitrate),
            "cpu-used": "-6" if settings.preset != "ultrafast" else "-8",
            "deadline": "realtime",
            "lag-in-frames": "0",
            "minrate": str(settings.bitrate),
            "maxrate": str(settings.bitrate),
            "noise-sensitivity": "4",
            "overshoot-pct": "15",
            "partitions": "0",
            "static-thresh": "1",
            "undershoot-pct": "100",
        }
        ctx.open()
        log.info(
            "VP8 encoder: libvpx %dx%d@%g, %d kbit/s, keyframe every %d frames",
            width, height, settings.fps, settings.bitrate // 1000, settings.gop,
        )
        return ctx


ENCODERS: dict[str, type[FrameEncoder]] = {"H264": H264Encoder, "VP8": VP8Encoder}
