"""Fake `picamera2.encoders.encoder`: the Encoder base class (picamera2 0.3.x shape) plus the
libx264 helper the fake H.264 encoders share."""

from __future__ import annotations

import threading
from enum import Enum
from fractions import Fraction

import av
from av.video.frame import PictureType

from ..outputs import Output


class Quality(Enum):
    VERY_LOW = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    VERY_HIGH = 4


class FakeEncoderFailure(OSError):
    """What the fake raises for Picamera2.fake_fail_after (as an ioctl error would)."""


class Encoder:
    """Base class for encoders (same attributes and methods as picamera2's)."""

    #: every encoder constructed since Picamera2.fake_reset(), for assertions
    instances: list[Encoder] = []
    #: knob: the codec fails (the encoder's thread raises and ends) after this many frames
    fake_fail_after: int | None = None

    def __init__(self, framerate=30):
        self._width = 0
        self._height = 0
        self._stride = 0
        self._format = None
        self._output = []
        self._running = False
        self._name = None
        self._framerate = framerate
        self._lock = threading.Lock()
        self.firsttimestamp = None
        self.frame_skip_count = 1
        self._skip_count = 0
        self._output_lock = threading.Lock()
        self.audio = False
        self.frames_encoded = 0
        # fake bookkeeping
        self.fake_starts = 0
        self.fake_stops = 0
        self.fake_keyframes_forced = 0  # force_key_frame() calls
        self.fake_idrs_forced = 0  # IDRs the fake actually encoded because of them
        Encoder.instances.append(self)

    @property
    def running(self):
        return self._running

    @property
    def width(self):
        return self._width

    @width.setter
    def width(self, value):
        if not isinstance(value, int):
            raise RuntimeError("Width must be integer")
        self._width = value

    @property
    def height(self):
        return self._height

    @height.setter
    def height(self, value):
        if not isinstance(value, int):
            raise RuntimeError("Height must be integer")
        self._height = value

    @property
    def size(self):
        return (self._width, self._height)

    @size.setter
    def size(self, value):
        self.width, self.height = value

    @property
    def stride(self):
        return self._stride

    @stride.setter
    def stride(self, value):
        self._stride = value

    @property
    def format(self):
        return self._format

    @format.setter
    def format(self, value):
        self._format = value

    @property
    def output(self):
        return self._output[0] if len(self._output) == 1 else self._output

    @output.setter
    def output(self, value):
        if isinstance(value, list):
            for out in value:
                if not isinstance(out, Output):
                    raise RuntimeError("Must pass Output")
        elif isinstance(value, Output):
            value = [value]
        else:
            raise RuntimeError("Must pass Output")
        self._output = value

    @property
    def name(self):
        return self._name

    @name.setter
    def name(self, value):
        if not isinstance(value, str):
            raise RuntimeError("Name must be string")
        self._name = value

    def encode(self, stream, request):
        if self._skip_count == 0:
            with self._lock:
                if not self._running:
                    return
                self._encode(stream, request)
        self._skip_count = (self._skip_count + 1) % self.frame_skip_count
        self.frames_encoded += 1

    def _encode(self, stream, request):
        self.outputframe(b"", keyframe=True, timestamp=self._timestamp(request))

    def start(self, quality=None):
        with self._lock:
            if self._running:
                raise RuntimeError("Encoder already running")
            self.frames_encoded = 0
            self._setup(quality)
            self._running = True
            self.firsttimestamp = None
            for out in self._output:
                out.start()
            self._start()
            self.fake_starts += 1

    def _start(self):
        pass

    def stop(self):
        with self._lock:
            if not self._running:
                raise RuntimeError("Encoder already stopped")
            self._running = False
            self._stop()
            for out in self._output:
                out.stop()
            self.fake_stops += 1

    def _stop(self):
        pass

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
        with self._output_lock:
            for out in self._output:
                out.outputframe(frame, keyframe, timestamp, packet, audio)

    def _setup(self, quality):
        pass

    def _timestamp(self, request):
        # The sensor timestamp (ns) in us, relative to the first frame since start().
        ts = int(request.sensor_timestamp_ns / 1000)
        if self.firsttimestamp is None:
            self.firsttimestamp = ts
            return 0
        return ts - self.firsttimestamp


class FakeX264:
    """libx264 through PyAV with the settings an H.264 encoder object asked for."""

    def __init__(self, width, height, framerate, bitrate, iperiod, repeat, profile, preset="ultrafast"):
        self.container = av.open("/dev/null", "w", format="null")
        self.stream = self.container.add_stream("libx264", rate=Fraction(framerate).limit_denominator(1000))
        ctx = self.stream.codec_context
        ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
        ctx.time_base = Fraction(1, 1_000_000)
        if bitrate:
            ctx.bit_rate = int(bitrate)
        params = ["scenecut=0", "forced-idr=1", "bframes=0"]
        if iperiod:
            params += [f"keyint={iperiod}", f"min-keyint={iperiod}"]
        if repeat:
            params.append("repeat-headers=1")
        options = {"preset": preset, "tune": "zerolatency", "x264-params": ":".join(params)}
        if profile and "baseline" in profile.lower():
            options["profile"] = "baseline"  # x264 writes constraint_set1 too: constrained baseline
        elif profile:
            options["profile"] = profile.lower()
        ctx.options = options
        if not repeat:
            ctx.flags |= av.codec.context.Flags.global_header
        self.encoded = 0

    def encode(self, frame: av.VideoFrame, pts_us: int, force_idr: bool) -> list[av.Packet]:
        frame.pts = pts_us
        frame.time_base = Fraction(1, 1_000_000)
        if force_idr:
            frame.pict_type = PictureType.I
        packets = list(self.stream.encode(frame))
        self.encoded += 1
        return packets

    def close(self) -> None:
        try:
            for _ in self.stream.encode(None):
                pass
        finally:
            self.container.close()
