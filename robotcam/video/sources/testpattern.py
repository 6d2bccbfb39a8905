"""A synthetic camera: colour bars, a bouncing box, a running clock and a machine-readable frame number.

A person sees at a glance that the picture is live (the box moves, the clock ticks); a test reads
which frame it got from the row of black and white cells along the top edge (see decode_frame_number).
Frames are drawn straight into YUV 4:2:0 planes with numpy, so the pattern costs little CPU and
needs no colour conversion before the encoder.
"""

from __future__ import annotations

import threading
import time

import av
import numpy as np

from robotcam.video.sources.base import ThreadedSource

CODE_CELLS = 32  # 24 bits of frame number, then an 8-bit checksum
CODE_BITS = 24
_WHITE, _BLACK = 235, 16

# 75% colour bars as (Y, U, V): white, yellow, cyan, green, magenta, red, blue.
_BARS = [
    (180, 128, 128), (162, 44, 142), (131, 156, 44), (112, 72, 58),
    (84, 184, 198), (65, 100, 212), (35, 212, 114),
]

# Seven-segment layout: segments a..g as (row, col, horizontal?) in a 2x1 grid of cells.
_SEGMENTS = {
    "a": (0, 0, True), "b": (0, 1, False), "c": (1, 1, False), "d": (2, 0, True),
    "e": (1, 0, False), "f": (0, 0, False), "g": (1, 0, True),
}
_DIGITS = {
    "0": "abcdef", "1": "bc", "2": "abdeg", "3": "abcdg", "4": "bcfg",
    "5": "acdfg", "6": "acdefg", "7": "abc", "8": "abcdefg", "9": "abcdfg",
}


def _checksum(number: int) -> int:
    return (number ^ (number >> 8) ^ (number >> 16) ^ 0xA5) & 0xFF


def code_geometry(width: int, height: int) -> tuple[int, int]:
    """(cell width, band height) of the frame-number code for a picture size."""
    return width // CODE_CELLS, max(8, height // 24)


def decode_frame_number(frame: av.VideoFrame) -> int | None:
    """Read the frame number drawn by TestPatternSource, or None if the code does not check out."""
    luma = frame.to_ndarray(format="gray")
    height, width = luma.shape
    cell, band = code_geometry(width, height)
    top, bottom = band // 4, max(band // 4 + 1, band - band // 4)
    bits = []
    for i in range(CODE_CELLS):
        left = i * cell + cell // 4
        right = max(left + 1, (i + 1) * cell - cell // 4)
        bits.append(int(luma[top:bottom, left:right].mean() > 128))
    value = int("".join(map(str, bits)), 2)
    number, check = value >> 8, value & 0xFF
    return number if check == _checksum(number) else None


class _Glyphs:
    """Seven-segment digit masks, drawn once per picture size."""

    def __init__(self, digit_height: int) -> None:
        self.h = digit_height
        self.w = max(4, digit_height // 2)
        self.t = max(2, digit_height // 9)
        self.masks = {ch: self._draw(segs) for ch, segs in _DIGITS.items()}
        colon = np.zeros((self.h, self.t * 3), bool)
        colon[self.h // 3 - self.t // 2: self.h // 3 + self.t - self.t // 2, self.t:2 * self.t] = True
        colon[2 * self.h // 3 - self.t // 2: 2 * self.h // 3 + self.t - self.t // 2, self.t:2 * self.t] = True
        self.masks[":"] = colon
        dot = np.zeros((self.h, self.t * 3), bool)
        dot[self.h - self.t:, self.t:2 * self.t] = True
        self.masks["."] = dot
        self.masks[" "] = np.zeros((self.h, self.w), bool)

    def _draw(self, segments: str) -> np.ndarray:
        h, w, t = self.h, self.w, self.t
        half = h // 2
        mask = np.zeros((h, w), bool)
        for seg in segments:
            row, col, horizontal = _SEGMENTS[seg]
            if horizontal:
                y = {0: 0, 1: half - t // 2, 2: h - t}[row]
                mask[y:y + t, t // 2: w - t // 2] = True
            else:
                x = 0 if col == 0 else w - t
                y0, y1 = (0, half) if row == 0 else (half, h)
                mask[y0:y1, x:x + t] = True
        return mask

    def text(self, text: str) -> np.ndarray:
        gap = np.zeros((self.h, self.t), bool)
        parts = []
        for ch in text:
            parts += [self.masks[ch], gap]
        return np.hstack(parts)


class TestPatternSource(ThreadedSource):
    """Generates frames at the configured rate; always available, so `auto` falls back to it."""

    __test__ = False  # not a pytest test class, despite the name
    name = "testpattern"

    def __init__(self, width: int, height: int, fps: float) -> None:
        super().__init__()
        self.width, self.height, self.fps = width, height, fps
        self._background = self._bars()
        self._glyphs = _Glyphs(max(8, height // 10))
        self._box = max(8, (height // 8) & ~1)
        self.frame_number = 0

    def _bars(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w, h = self.width, self.height
        cols = (np.arange(w) * len(_BARS)) // w
        table = np.array(_BARS, dtype=np.uint8)
        y = np.repeat(table[cols, 0][None, :], h, axis=0)
        u = np.repeat(table[cols[::2], 1][None, :], h // 2, axis=0)
        v = np.repeat(table[cols[::2], 2][None, :], h // 2, axis=0)
        # a dark strip across the lower third, for the clock and the moving box
        y[2 * h // 3:, :] = 40
        u[h // 3:, :] = 128
        v[h // 3:, :] = 128
        return y, u, v

    def render(self, number: int, now: float) -> av.VideoFrame:
        """Draw frame `number` at wall-clock time `now`."""
        w, h = self.width, self.height
        y, u, v = (plane.copy() for plane in self._background)

        # bouncing box in the dark strip: motion anyone can see
        box = self._box
        span = max(1, w - box)
        x = int(number * 4) % (2 * span)
        x = x if x < span else 2 * span - x
        x &= ~1
        top = (2 * h // 3 + (h // 3 - box) // 2) & ~1
        y[top:top + box, x:x + box] = _WHITE
        u[top // 2:(top + box) // 2, x // 2:(x + box) // 2] = 90
        v[top // 2:(top + box) // 2, x // 2:(x + box) // 2] = 240

        # clock (local time, tenths) above the box
        stamp = time.strftime("%H:%M:%S", time.localtime(now)) + f".{int(now * 10) % 10}"
        text = self._glyphs.text(stamp)
        th, tw = text.shape
        tx = max(0, (w - tw) // 2)
        ty = 2 * h // 3 + max(2, (top - 2 * h // 3 - th) // 2)
        tw = min(tw, w - tx)
        region = y[ty:ty + th, tx:tx + tw]
        region[text[: region.shape[0], :tw]] = _WHITE

        # machine-readable frame number along the top edge
        cell, band = code_geometry(w, h)
        value = ((number & 0xFFFFFF) << 8) | _checksum(number & 0xFFFFFF)
        for i in range(CODE_CELLS):
            bit = (value >> (CODE_CELLS - 1 - i)) & 1
            y[:band, i * cell:(i + 1) * cell] = _WHITE if bit else _BLACK
        y[:band, CODE_CELLS * cell:] = _BLACK
        u[: (band + 1) // 2, :] = 128
        v[: (band + 1) // 2, :] = 128

        yuv = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).reshape(-1, w)
        return av.VideoFrame.from_ndarray(yuv, format="yuv420p")

    def capture(self, stop: threading.Event) -> None:
        period = 1.0 / self.fps
        deadline = time.monotonic()
        while not stop.is_set():
            self.emit(self.render(self.frame_number, time.time()))
            self.frame_number += 1
            deadline += period
            delay = deadline - time.monotonic()
            if delay < -period:  # fell behind (busy machine): skip ahead, never burst
                deadline = time.monotonic()
                delay = 0
            if delay > 0 and stop.wait(delay):
                break
