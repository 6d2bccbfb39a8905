"""A test tone for machines without a microphone, on a steady clock in its own thread.

Blocks leave at the pace a sound card would deliver them (block_size / sample_rate apart,
scheduled against the start time, so sleeps that run late do not add up to drift), and take
the same path as the microphone's from there on.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np

from robotcam.audio.base import Deliver
from robotcam.config import AudioConfig

AMPLITUDE = 0.25  # -12 dBFS: clearly audible, never clipping after Opus
RESYNC_AFTER = 0.5  # seconds behind schedule (a suspended machine): skip ahead, do not burst


class ToneSource:
    name = "tone"

    def __init__(self, audio: AudioConfig) -> None:
        self.sample_rate = audio.sample_rate
        self.channels = audio.channels
        self.block_size = audio.block_size
        self.frequency = audio.tone_frequency  # read by the thread each block: may change live
        self.error: str | None = None
        self._phase = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        """Nothing to open."""

    def start(self, deliver: Deliver) -> None:
        self._thread = threading.Thread(
            target=self._run, args=(deliver,), name="robotcam-tone", daemon=True
        )
        self._thread.start()

    def _block(self) -> np.ndarray:
        step = 2 * math.pi * self.frequency / self.sample_rate
        phases = self._phase + step * np.arange(self.block_size)
        self._phase = float((self._phase + step * self.block_size) % (2 * math.pi))
        mono = (np.sin(phases) * AMPLITUDE * 32767).astype(np.int16)
        return np.repeat(mono[:, None], self.channels, axis=1)

    def _run(self, deliver: Deliver) -> None:
        period = self.block_size / self.sample_rate
        started = time.monotonic()
        sent = 0
        try:
            while not self._stop.is_set():
                deliver(self._block())
                sent += 1
                delay = started + sent * period - time.monotonic()
                if delay < -RESYNC_AFTER:
                    started, sent = time.monotonic(), 0
                elif delay > 0:
                    self._stop.wait(delay)
        except Exception as exc:  # noqa: BLE001 - recorded for the supervisor
            self.error = f"the test tone failed: {exc!r}"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def describe(self) -> dict[str, Any]:
        return {"frequency": self.frequency}
