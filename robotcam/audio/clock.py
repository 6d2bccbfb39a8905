"""Timestamps for captured sound: a sample count, continuous across source restarts.

Within one run of a source, pts advances by exactly the samples delivered (the sound card's
clock is the truth; the system clock would jitter). When a source (re)starts, the count jumps
forward to the time that passed meanwhile, never back: a viewer's RTP timestamps must keep
increasing, and a gap in them is what a pause in the sound really was.
"""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np

LAYOUTS = {1: "mono", 2: "stereo"}


class AudioClock:
    """pts in 1/sample_rate units since the component started. Event-loop only."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self.time_base = Fraction(1, sample_rate)
        self._epoch = time.monotonic()
        self._next = 0

    def begin_run(self, sample_rate: int) -> None:
        """A source (re)started: continue at least from wall time, never go back."""
        if sample_rate != self.sample_rate:
            self._next = round(self._next * sample_rate / self.sample_rate)
            self.sample_rate, self.time_base = sample_rate, Fraction(1, sample_rate)
        elapsed = round((time.monotonic() - self._epoch) * self.sample_rate)
        self._next = max(self._next, elapsed)

    def stamp(self, samples: int) -> int:
        pts = self._next
        self._next += samples
        return pts

    def frame(self, block: np.ndarray) -> av.AudioFrame:
        """An s16 packed AudioFrame of `block` (frames x channels int16), stamped."""
        samples, channels = block.shape
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(block).reshape(1, -1), format="s16", layout=LAYOUTS[channels]
        )
        frame.sample_rate = self.sample_rate
        frame.pts = self.stamp(samples)
        frame.time_base = self.time_base
        return frame
