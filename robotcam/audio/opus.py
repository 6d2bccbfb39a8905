"""Opus encoded once for every viewer: one libopus encoder in its own thread.

Left to itself, aiortc gives every RTCRtpSender its own Opus encoder: each viewer costs a
resampler (to 48 kHz stereo), a 96 kbit/s stereo encode and a hop to the default thread pool,
50 times a second. Here the sound is encoded once and every PeerAudioTrack returns the same
`av.Packet`, which aiortc's sender packs as it is (codecs/opus.py `OpusEncoder.pack`: the bytes
become the payload, `pts` converted from `time_base` to the 48 kHz RTP clock is the
timestamp, so both must be set).

Measured (scripts/bench_audio.py: N aiortc viewers of the 440 Hz tone plus a 320x240/15 fps
test pattern; daemon CPU minus the same viewers without sound; 2-core x86 VM; two runs agreed
within ~0.03 cores):

    viewers                           1      4      8      16
    per viewer (aiortc's encoders)    0.067  0.142  0.294  0.427  cores
    encoded once (this module)        0.059  0.058  0.076  0.109  cores

Encoding once wins from the first viewer on, 2.4x at 4 and ~4x at 8 and 16, and its cost
barely grows: what remains per viewer is aiortc's RTP/SRTP work for 50 packets a second, which
no encoder choice removes. About 0.05 cores is fixed (the source's thread, stamping, the
encoder thread's wake-ups). Not measured on a Pi: expect every figure larger there.
`AudioComponent.shared_encoder = False` brings aiortc's per-viewer encoders back, for measuring.

The encoder runs only while someone listens. Its mailbox holds a few frames and drops the
oldest: a slow encoder costs a glitch, never growing delay.
"""

from __future__ import annotations

import collections
import logging
import threading
from fractions import Fraction
from typing import Callable

import av
import numpy as np

from robotcam.audio.clock import LAYOUTS

log = logging.getLogger(__name__)

OPUS_RATE = 48000
OPUS_FRAME = 960  # 20 ms, what browsers expect (a=ptime:20 is the default)
OPUS_TIME_BASE = Fraction(1, OPUS_RATE)
BITRATES = {1: 48_000, 2: 64_000}
MAILBOX = 8  # frames waiting for the encoder (160 ms at 20 ms blocks)


class SharedOpusEncoder:
    """AudioFrames in (any rate, s16), 20 ms Opus packets out, stamped on the 48 kHz clock."""

    def __init__(self, channels: int, publish: Callable[[av.Packet], None]) -> None:
        self.channels = channels
        self._publish = publish  # called from the encoder thread; must be thread-safe
        self._mailbox: collections.deque[av.AudioFrame] = collections.deque(maxlen=MAILBOX)
        self._wake = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.packets = 0
        self.dropped = 0
        self.error: str | None = None

    @property
    def implementation(self) -> str:
        return f"libopus, encoded once ({self.channels} ch, {BITRATES[self.channels] // 1000} kbit/s)"

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="robotcam-opus", daemon=True)
        self._thread.start()

    def submit(self, frame: av.AudioFrame) -> None:
        """Thread-safe, never blocks."""
        with self._wake:
            if len(self._mailbox) == self._mailbox.maxlen:
                self.dropped += 1
            self._mailbox.append(frame)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()

    def join(self, timeout: float = 2.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _next(self) -> av.AudioFrame | None:
        with self._wake:
            while not self._mailbox and not self._closed:
                self._wake.wait()
            if self._closed:
                return None
            return self._mailbox.popleft()

    def _run(self) -> None:
        try:
            _Encoder(self.channels, self._emit).run(self._next)
        except Exception as exc:  # noqa: BLE001 - the component restarts it on the next frame
            self.error = f"Opus encoder failed: {exc!r}"
            log.error("%s", self.error)

    def _emit(self, packet: av.Packet) -> None:
        self.packets += 1
        self._publish(packet)


class _Encoder:
    """The encoder thread's state: resampler, sample buffer, libopus context."""

    def __init__(self, channels: int, emit: Callable[[av.Packet], None]) -> None:
        self.layout = LAYOUTS[channels]
        self.emit = emit
        self.codec = av.CodecContext.create("libopus", "w")
        self.codec.sample_rate = OPUS_RATE
        self.codec.layout = self.layout
        self.codec.format = "s16"
        self.codec.bit_rate = BITRATES[channels]
        self.codec.time_base = OPUS_TIME_BASE
        self.codec.options = {"application": "voip", "frame_duration": "20"}
        self.codec.open()
        self.resampler: av.AudioResampler | None = None
        self.buffer = np.zeros((1, 0), dtype=np.int16)  # interleaved samples not yet encoded
        self.buffer_pts = 0  # 48 kHz pts of buffer[0]
        self.expected: int | None = None  # 48 kHz pts the next input frame should start at

    def run(self, next_frame: Callable[[], av.AudioFrame | None]) -> None:
        while (frame := next_frame()) is not None:
            self.feed(frame)

    def feed(self, frame: av.AudioFrame) -> None:
        start = (
            int(frame.pts * frame.time_base * OPUS_RATE)
            if frame.pts is not None and frame.time_base is not None else None
        )
        if start is not None and (self.expected is None or abs(start - self.expected) > OPUS_FRAME):
            # A new run of the source, or frames lost before us: start over at its time.
            self.resampler = None
            self.buffer = self.buffer[:, :0]
            self.buffer_pts = start
        if self.resampler is None:
            self.resampler = av.AudioResampler(format="s16", layout=self.layout, rate=OPUS_RATE)
        for out in self.resampler.resample(frame):
            self.buffer = np.concatenate([self.buffer, out.to_ndarray().reshape(1, -1)], axis=1)
        if start is not None:
            self.expected = start + round(frame.samples * OPUS_RATE / frame.sample_rate)
        self._encode_whole_frames()

    def _encode_whole_frames(self) -> None:
        width = OPUS_FRAME * len(self.codec.layout.channels)
        while self.buffer.shape[1] >= width:
            chunk, self.buffer = self.buffer[:, :width], self.buffer[:, width:]
            frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout=self.layout)
            frame.sample_rate = OPUS_RATE
            frame.pts, frame.time_base = self.buffer_pts, OPUS_TIME_BASE
            for packet in self.codec.encode(frame):
                # The RTP timestamp is the capture time of the packet's first sample (libopus
                # shifts its own pts back by its lookahead; the decoder hides that 6.5 ms).
                packet.pts, packet.time_base = self.buffer_pts, OPUS_TIME_BASE
                self.emit(packet)
            self.buffer_pts += OPUS_FRAME
