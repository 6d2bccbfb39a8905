"""The robot's speaker: a sounddevice OutputStream fed from a short, bounded buffer.

What arrives from a talker (aiortc decodes Opus to 48 kHz s16 stereo) is resampled to the
device's own rate and channel count, scaled by talkback.volume and appended to the buffer on
the event loop (a few tens of microseconds per 20 ms frame); PortAudio's callback thread takes
samples out. The buffer holds at most MAX_BUFFERED seconds and drops the oldest beyond that,
so the talker is never heard later than that; playback starts once PREBUFFER seconds are in,
so network jitter does not turn into clicks.
"""

from __future__ import annotations

import collections
import logging
import threading
from types import ModuleType
from typing import Any

import av
import numpy as np

from robotcam.audio.clock import LAYOUTS
from robotcam.audio.devices import AudioUnavailable, Device

log = logging.getLogger(__name__)

MAX_BUFFERED = 0.3  # seconds
PREBUFFER = 0.06  # seconds


class Speaker:
    """One OutputStream, opened while someone talks. open()/close() block: call them off the
    loop; feed() is for the event loop; the callback runs on PortAudio's thread."""

    def __init__(self, sd: ModuleType, device: Device, volume: float) -> None:
        self._sd = sd
        self.device = device
        self.rate = int(device.default_rate) or 48000
        self.channels = min(2, max(1, device.channels))
        self.volume = volume
        self._resampler = av.AudioResampler(format="s16", layout=LAYOUTS[self.channels], rate=self.rate)
        self._chunks: collections.deque[np.ndarray] = collections.deque()
        self._buffered = 0  # frames (samples per channel) in _chunks
        self._lock = threading.Lock()
        self._primed = False
        self._stream: Any = None
        self.samples_played = 0  # frames taken from the buffer (not silence)
        self.underruns = 0
        self.error: str | None = None

    def open(self) -> None:
        try:
            self._stream = self._sd.OutputStream(
                device=self.device.index, samplerate=self.rate, channels=self.channels,
                dtype="int16", blocksize=self.rate // 50, callback=self._callback,
                finished_callback=self._finished,
            )
            self._stream.start()
        except Exception as exc:  # noqa: BLE001 - PortAudioError, ValueError
            self._stream = None
            raise AudioUnavailable(f"talkback.device: cannot open {self.device.name}: {exc}") from None
        self.error = None

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            for step in (stream.stop, stream.close):
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - a dead device: release it anyway
                    log.debug("closing the output stream: %s", exc)
        with self._lock:
            self._chunks.clear()
            self._buffered = 0
            self._primed = False

    @property
    def is_open(self) -> bool:
        return self._stream is not None

    def feed(self, frame: av.AudioFrame) -> None:
        """A received frame: to the device's format, scaled, into the buffer (event loop)."""
        out = [f.to_ndarray().reshape(-1, self.channels) for f in self._resampler.resample(frame)]
        if not out:
            return
        samples = np.concatenate(out)
        if self.volume != 1.0:
            samples = np.clip(samples.astype(np.float32) * self.volume, -32768, 32767).astype(np.int16)
        limit = int(MAX_BUFFERED * self.rate)
        with self._lock:
            self._chunks.append(samples)
            self._buffered += len(samples)
            while self._buffered - len(self._chunks[0]) >= limit and len(self._chunks) > 1:
                self._buffered -= len(self._chunks.popleft())

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: fill outdata from the buffer, silence where it runs dry."""
        written = 0
        with self._lock:
            if not self._primed and self._buffered >= PREBUFFER * self.rate:
                self._primed = True
            while self._primed and written < frames and self._chunks:
                chunk = self._chunks[0]
                take = min(frames - written, len(chunk))
                outdata[written:written + take] = chunk[:take]
                written += take
                if take == len(chunk):
                    self._chunks.popleft()
                else:
                    self._chunks[0] = chunk[take:]
                self._buffered -= take
            if self._primed and written < frames:
                self._primed = False
                self.underruns += 1
        outdata[written:] = 0
        self.samples_played += written

    def _finished(self) -> None:
        if self._stream is not None:  # not our close(): the device went away
            self.error = f"{self.device.name} stopped playing (unplugged?)"

    def describe(self) -> dict[str, Any]:
        return {"device": self.device.name, "sample_rate": self.rate, "channels": self.channels}
