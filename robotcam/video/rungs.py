"""The rendition ladder, and which rung each viewer is on.

The camera's configured stream is rung 0; `video.renditions` adds lower ones (smaller, fewer
bits, maybe fewer frames). Each rung is encoded once, only while some viewer is on it, and
shared by every viewer on it, so adapting costs one encoder per rung in use, never one per
viewer. A viewer moves down quickly when its link is short, and up carefully: after a hold
time on a clean link it tries the rung above, and a try that fails doubles the hold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from robotcam.config import VideoConfig
from robotcam.webrtc.link import AVERAGE_PACKET_BITS, LOSS_SHORT, SETTLE, LinkEstimate

HOLD_FIRST, HOLD_MAX = 10.0, 60.0  # seconds on a clean link before trying the rung above
TRIAL = 10.0  # seconds a try upwards must hold before it counts as a success
# Leaving a rung the link could not carry, the new rung's first keyframe waits for the queue
# the old one filled (its round trip above the lowest), at most this long: sent into a full
# queue it is lost, and the picture waits for the next (3 s instead of 1.5 behind a 333 kbit/s
# cap with a 1 s queue). A failed try waits this long whatever the round trip says: it filled
# the queue within its first second, before a round trip through it could be measured.
DRAIN_MAX = 1.0
# A try upwards whose round trip grows this far above its lowest is filling a queue the link
# cannot drain: it ends at once, before the queue overflows and the picture breaks (loss is
# reported a second later, by which time a 1 s queue is full and frames are being dropped).
TRY_QUEUE = 0.15  # seconds
# Once it has overflowed, the browser's NACKs tell before its next receiver report does: a try
# whose NACKed packets pass LOSS_SHORT of those it sent (and at least this many) ends at once.
TRY_NACKS = 8
# The browser's own estimator sees a queue build from the packets' spacing within a few hundred
# ms, long before a round trip through that queue can be measured, and its REMB drops: a try
# whose REMB falls this far below the one it began with ends at once (on a link that carries
# it, the REMB only rises as more arrives).
TRY_REMB_DROP = 0.8


@dataclass(frozen=True)
class Rung:
    index: int  # 0 is the configured stream
    width: int
    height: int
    fps: float
    bitrate: int

    @property
    def name(self) -> str:
        return "full" if self.index == 0 else f"{self.width}x{self.height}@{self.fps:g}"

    def describe(self) -> str:
        return f"{self.width}x{self.height} at {self.fps:g} fps, {self.bitrate // 1000} kbit/s"


def _even(value: float) -> int:
    return max(16, round(value / 2) * 2)


def ladder(video: VideoConfig) -> list[Rung]:
    """Rung 0 and, when adaptive, the lower ones (a rung that is not lower is left out)."""
    top = Rung(0, video.width, video.height, video.fps, video.bitrate)
    rungs = [top]
    if not video.adaptive:
        return rungs
    for rendition in video.renditions:
        rung = Rung(
            len(rungs), _even(video.width * rendition.scale), _even(video.height * rendition.scale),
            max(1.0, round(video.fps * rendition.fps_ratio, 2)), max(20_000, round(video.bitrate * rendition.bitrate_ratio)),
        )
        if rung.bitrate < rungs[-1].bitrate:
            rungs.append(rung)
    return rungs


class RungPolicy:
    """One viewer's place on the ladder, decided from its link estimate."""

    def __init__(self, rungs: Callable[[], list[Rung]], link: LinkEstimate,
                 now: Callable[[], float] = time.monotonic) -> None:
        self._ladder = rungs  # read at each decision: a reload may change the ladder
        self.link = link
        self._now = now
        self.rung = 0
        self.hold = HOLD_FIRST
        self._since = now()  # on this rung since
        self._trying_from: int | None = None  # the rung a try upwards left
        self._try_samples = 0  # round-trip samples there were when the try began
        self._try_start = (0, 0)  # packets NACKed and bytes sent when it began
        self._try_remb: float | None = None  # the browser's estimate when it began
        self.moves = 0
        self.why = "the full stream"
        self.drain = 0.0  # seconds the last move waits before its rung's keyframe
        link.needed_bps = self.rungs[0].bitrate

    @property
    def rungs(self) -> list[Rung]:
        return self._ladder()

    def decide(self) -> int | None:
        """The rung to move to now, or None to stay."""
        now = self._now()
        if self.rung >= len(self.rungs):
            return self._move(len(self.rungs) - 1, "the ladder changed")
        # A try that loses a tenth of its packets has failed: the picture is broken until it
        # is back down, so no hysteresis (the loss was measured afresh from the move).
        trying = self._trying_from is not None
        lossy = trying and ((self.link.loss or 0.0) > LOSS_SHORT or self._try_nack_share() > LOSS_SHORT)
        queueing = trying and (self._try_queue() > TRY_QUEUE or self._try_remb_fell())
        if (self.link.verdict == "short" or lossy or queueing) and self.rung + 1 < len(self.rungs):
            why = (self.link.why if self.link.verdict == "short"
                   else f"loss {max(self.link.loss or 0.0, self._try_nack_share()) * 100:.1f} % on the try" if lossy
                   else f"round trip {self._try_queue() * 1000:.0f} ms above its lowest on the try"
                   if self._try_queue() > TRY_QUEUE
                   else f"the browser's estimate fell to {(self.link.remb_last_bps or 0) / 1000:.0f} kbit/s on the try")
            tried = self._trying_from is not None
            if tried:  # the try failed: wait longer before the next
                self.hold = min(HOLD_MAX, self.hold * 2)
                self._trying_from = None
            # A try that filled the queue until it overflowed waits DRAIN_MAX; one caught by its
            # round trip waits what that round trip says (the queue has not overflowed yet).
            early = queueing and not lossy and self.link.verdict != "short"
            return self._move(self.rung + 1, f"link short ({why})", DRAIN_MAX if tried and not early else 0.0)
        if self._trying_from is not None and now - self._since >= TRIAL:
            self._trying_from = None
            self.hold = HOLD_FIRST  # it held: the next step up comes as soon as it is earned
        if (self.rung > 0 and self.link.verdict == "good" and self._trying_from is None
                and now - self._since >= self.hold and (self.link.loss or 0.0) < 0.02):
            self._trying_from = self.rung
            self._try_samples = self.link.rtt_samples
            self._try_start = (self.link.nacked, self.link.sent_bytes)
            self._try_remb = self.link.remb_last_bps
            return self._move(self.rung - 1, f"trying the rung above after {now - self._since:.0f} s on a clean link")
        return None

    def _try_nack_share(self) -> float:
        """The share of the packets sent since the try began that the browser NACKed (0 until
        TRY_NACKS of them: a few random losses are no verdict)."""
        nacked = self.link.nacked - self._try_start[0]
        sent = (self.link.sent_bytes - self._try_start[1]) * 8 / AVERAGE_PACKET_BITS
        return nacked / max(sent, 1.0) if nacked >= TRY_NACKS else 0.0

    def _try_remb_fell(self) -> bool:
        last, first = self.link.remb_last_bps, self._try_remb
        return last is not None and first is not None and last < first * TRY_REMB_DROP

    def _try_queue(self) -> float:
        """Seconds of queue the try has built, from the newest round trip measured since it
        began (an older sample may still show the queue a move down left behind)."""
        link = self.link
        if link.rtt_samples <= self._try_samples or link.rtt_last_ms is None or link.rtt_min_ms is None:
            return 0.0
        return max(0.0, link.rtt_last_ms - link.rtt_min_ms) / 1000

    def _move(self, rung: int, why: str, drain: float = 0.0) -> int:
        down = rung > self.rung
        self.drain = min(DRAIN_MAX, max(drain, self.link.queue_delay())) if down else 0.0
        self.rung, self.why = rung, why
        self._since = self._now()
        self.moves += 1
        self.link.needed_bps = self.rungs[rung].bitrate
        self.link.reset_verdict(SETTLE if down else 0.0)
        return rung
