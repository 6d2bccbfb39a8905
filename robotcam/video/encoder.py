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
import queue
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
    h264_codec: str = "libx264"  # or "h264_v4l2m2m" (the Pi 4's hardware encoder)

    @property
    def gop(self) -> int:
        return max(1, round(self.fps * self.keyframe_interval))


def _video_context(name: str, width: int, height: int, settings: EncoderSettings) -> av.VideoCodecContext:
    """An encoder context with what every codec here shares: size, 4:2:0, the 90 kHz RTP
    clock as time base, rate, bitrate, keyframe interval, no B-frames."""
    ctx = av.CodecContext.create(name, "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = "yuv420p"
    ctx.time_base = TIME_BASE
    ctx.framerate = Fraction(settings.fps).limit_denominator(1001)
    ctx.bit_rate = settings.bitrate
    ctx.gop_size = settings.gop
    ctx.max_b_frames = 0
    return ctx


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
        if frame.format.name != "yuv420p":
            frame = frame.reformat(format="yuv420p")
        if force:
            self.keyframes_forced += 1
            frame = _own_copy(frame)
        frame.pict_type = av.video.frame.PictureType.I if force else av.video.frame.PictureType.NONE
        for packet in ctx.encode(frame):
            packet.time_base = TIME_BASE
            if packet.pts is None:
                packet.pts = frame.pts
            self.packets_out += 1
            if packet.is_keyframe:
                self.keyframes_out += 1
            self._emit(packet)
        self.frames_encoded += 1

    def _emit(self, packet: av.Packet) -> None:
        self._on_packet(packet)

    @property
    def implementation(self) -> str:
        """What /health shows as the encoder in use."""
        return self._implementation

    _implementation = "software"

    @abstractmethod
    def _open(self, width: int, height: int, settings: EncoderSettings) -> av.VideoCodecContext: ...


def _own_copy(frame: av.VideoFrame) -> av.VideoFrame:
    """A private copy of a yuv420p frame, to mark as an IDR: the same picture may go to other
    encoders' threads too (H.264 and VP8 of a rung, two rungs of one size), and one of them
    writing pict_type NONE on it between our write and our encode would lose the keyframe."""
    copy = av.VideoFrame.from_ndarray(frame.to_ndarray(), format="yuv420p")
    copy.pts = frame.pts
    if frame.time_base is not None:
        copy.time_base = frame.time_base
    return copy


def _nal_types(data: bytes) -> list[int]:
    types, i = [], data.find(b"\x00\x00\x01")
    while i != -1 and i + 3 < len(data):
        types.append(data[i + 3] & 0x1F)
        i = data.find(b"\x00\x00\x01", i + 3)
    return types


class H264Encoder(FrameEncoder):
    """H.264, constrained baseline: the bitstream matches the profile-level-id 42e01f aiortc
    signals and every browser decodes. No B-frames, no lookahead, and SPS/PPS in front of every
    IDR so a viewer can start at any keyframe. libx264 in software, or the V4L2 memory-to-memory
    hardware encoder (h264_v4l2m2m, a Raspberry Pi 4's) when chosen."""

    codec = "H264"
    _parameter_sets = b""

    @property
    def implementation(self) -> str:
        return self.settings.h264_codec

    def _emit(self, packet: av.Packet) -> None:
        """Hardware encoders may send SPS/PPS only once: put them back in front of every IDR,
        or a viewer joining later could never start decoding."""
        if self.settings.h264_codec != "libx264":
            data = bytes(packet)
            types = _nal_types(data)
            if 7 in types and 8 in types:
                first_slice = min(data.find(b"\x00\x00\x01\x65"), data.find(b"\x00\x00\x01\x25"), key=lambda i: i if i >= 0 else len(data))
                while first_slice > 0 and data[first_slice - 1] == 0:
                    first_slice -= 1  # the slice's 4-byte start code (a PPS ends non-zero)
                self._parameter_sets = data[:first_slice]
            elif packet.is_keyframe and self._parameter_sets:
                fixed = av.Packet(self._parameter_sets + data)
                fixed.pts, fixed.time_base, fixed.is_keyframe = packet.pts, packet.time_base, True
                packet = fixed
        super()._emit(packet)

    def _open(self, width: int, height: int, settings: EncoderSettings) -> av.VideoCodecContext:
        if settings.h264_codec == "h264_v4l2m2m":
            return open_v4l2m2m(width, height, settings)
        ctx = _video_context("libx264", width, height, settings)
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


def open_v4l2m2m(width: int, height: int, settings: EncoderSettings) -> av.VideoCodecContext:
    """The V4L2 M2M hardware H.264 encoder (bcm2835-codec on a Pi 4) through FFmpeg."""
    ctx = _video_context("h264_v4l2m2m", width, height, settings)
    for name in ("Constrained Baseline", "constrained_baseline"):
        try:
            ctx.profile = name
            break
        except Exception:  # noqa: BLE001 - PyAV versions spell profiles differently
            continue
    ctx.options = {"num_capture_buffers": "8"}
    ctx.open()
    log.info("H.264 encoder: h264_v4l2m2m (hardware) %dx%d@%g, %d kbit/s, keyframe every %d frames",
             width, height, settings.fps, settings.bitrate // 1000, settings.gop)
    return ctx


def choose_h264_codec(preference: str, width: int, height: int, fps: float) -> tuple[str, str]:
    """Which H.264 encoder to use, and why. `auto` takes the hardware encoder only when it
    opens and encodes a frame here; otherwise libx264. Blocking (probes a device): off the loop."""
    if preference == "libx264":
        return "libx264", "video.encoder is libx264"
    settings = EncoderSettings(fps=fps, bitrate=1_000_000, keyframe_interval=1.0, h264_codec="h264_v4l2m2m")
    try:
        ctx = open_v4l2m2m(width, height, settings)
        frame = av.VideoFrame(width, height, "yuv420p")
        frame.pts, frame.time_base = 0, TIME_BASE
        ctx.encode(frame)
        ctx.encode(None)
        return "h264_v4l2m2m", "the hardware encoder (h264_v4l2m2m) works here"
    except Exception as exc:  # noqa: BLE001 - any failure means: not usable here
        reason = f"h264_v4l2m2m unusable here: {exc}"
        if preference == "h264_v4l2m2m":
            return "libx264", f"video.encoder is h264_v4l2m2m but {reason}; using libx264"
        return "libx264", f"{reason}; using libx264"


class VP8Encoder(FrameEncoder):
    """libvpx in realtime mode, with the rate-control settings aiortc's own VP8 encoder uses.
    Only started for browsers that offer no H.264."""

    codec = "VP8"
    _implementation = "libvpx"

    def _open(self, width: int, height: int, settings: EncoderSettings) -> av.VideoCodecContext:
        ctx = _video_context("libvpx", width, height, settings)
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


class Transcoder:
    """VP8 for a source that encodes H.264 itself (the Pi camera): decode its packets and feed
    a shared VP8 encoder. Only runs while a browser without H.264 watches. Packets are decoded
    in order from a bounded queue; on overflow it skips to the next keyframe."""

    codec = "VP8"
    implementation = "libvpx (transcoded from the camera's H.264)"

    def __init__(
        self, settings: EncoderSettings, on_packet: PacketCallback,
        request_source_keyframe: Callable[[], None],
    ) -> None:
        self.vp8 = VP8Encoder(settings, on_packet)
        self.settings = settings
        self._request_source_keyframe = request_source_keyframe
        self._queue: queue.Queue[av.Packet | None] = queue.Queue(max(8, round(settings.fps)))
        self._waiting_for_keyframe = True
        self._thread = threading.Thread(target=self._main, name="robotcam-transcoder", daemon=True)
        self.packets_in = 0
        self.packets_skipped = 0
        self.errors = 0

    def start(self) -> None:
        self.vp8.start()
        self._thread.start()

    def submit_packet(self, packet: av.Packet) -> None:
        """From the source thread: never blocks."""
        self.packets_in += 1
        if self._waiting_for_keyframe and not packet.is_keyframe:
            self.packets_skipped += 1
            return
        self._waiting_for_keyframe = False
        try:
            self._queue.put_nowait(packet)
        except queue.Full:
            self._waiting_for_keyframe = True
            self.packets_skipped += 1
            self._request_source_keyframe()

    def request_keyframe(self) -> None:
        self.vp8.request_keyframe()

    def update(self, settings: EncoderSettings) -> None:
        self.settings = settings
        self.vp8.update(settings)

    def close(self) -> None:
        self.vp8.close()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass

    def join(self, timeout: float = 2.0) -> None:
        self._thread.join(timeout)
        self.vp8.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() or self.vp8.alive

    @property
    def frames_encoded(self) -> int:
        return self.vp8.frames_encoded

    @property
    def frames_skipped(self) -> int:
        return self.vp8.frames_skipped + self.packets_skipped

    @property
    def keyframes_out(self) -> int:
        return self.vp8.keyframes_out

    @property
    def keyframes_forced(self) -> int:
        return self.vp8.keyframes_forced

    def _main(self) -> None:
        decoder = av.CodecContext.create("h264", "r")
        while True:
            packet = self._queue.get()
            if packet is None:
                break
            try:
                for frame in decoder.decode(packet):
                    frame.pts, frame.time_base = packet.pts, packet.time_base
                    self.vp8.submit(frame)
            except Exception:  # noqa: BLE001 - resync at the next keyframe
                self.errors += 1
                self._waiting_for_keyframe = True
                decoder = av.CodecContext.create("h264", "r")
                if self.errors <= 3:
                    log.warning("transcoder could not decode a camera packet; waiting for a keyframe")
