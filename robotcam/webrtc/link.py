"""One viewer's link, estimated from the RTCP its browser already sends.

Browsers report what they receive: REMB (the bitrate they estimate they can take), receiver
reports (fraction lost, jitter, and the timestamps that give the round-trip time), NACKs (lost
packets to resend) and PLI/FIR (a picture they cannot decode). aiortc's own encoders follow REMB;
robotcam encodes once for everyone, so it reads the same reports per viewer to say which
viewers are short of bandwidth, and to pace what each one's losses may cost.

What a link must carry is what this viewer is actually sent (measured from the bytes its track
hands to the sender), not the configured bitrate: a still scene encodes to far less than the
target, and a browser's REMB only ever climbs to about one and a half times what it receives.
A REMB under that rate alone is not believed either: browsers' receive-side estimators report
low values at low rates with nothing wrong (Chromium said 70 kbit/s while receiving 99 with no
loss). A short link also shows congestion: loss, NACKs, or a round trip grown by a queue.
The figures are smoothed, and the verdict has hysteresis: it turns `short` quickly (after
SHORT_AFTER seconds of evidence) and back to `good` carefully (after GOOD_AFTER seconds), so
one noisy report never moves a viewer.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Awaitable, Callable, Deque

from aiortc import clock
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

VIDEO_CLOCK = 90000  # Hz: jitter in receiver reports is in RTP timestamp units
RATE_WINDOW = 5.0  # seconds over which NACK and PLI rates are counted
SHORT_AFTER, GOOD_AFTER = 1.5, 8.0  # seconds of evidence before the verdict changes
# A browser's REMB starts low and climbs (GCC ramps up from about 300 kbit/s), and a joining
# viewer's first keyframe is a burst: for this long after the first report, only loss counts.
WARMUP = 5.0
RATE_PERIOD = 1.0  # seconds per sample of what the viewer is sent
# After a move down, the queue the old rung filled still drains, and the reports about it keep
# arriving (a receiver report covers the last second or so): evidence this fresh is not judged.
SETTLE = 2.0
QUEUE_MS = 80.0  # a round trip this much above the lowest seen: a queue is building
SHORT_RATIO, GOOD_RATIO = 0.85, 1.25  # estimate / needed: below is short, above is room
LOSS_SHORT, LOSS_GOOD = 0.10, 0.02  # smoothed loss fraction: above is short, below is clean
AVERAGE_PACKET_BITS = 1100 * 8  # a full RTP video packet, for the retransmission budget
RETRANSMIT_SHARE = 0.25  # of the viewer's estimate that resends may use
RETRANSMIT_MIN = 2.0  # packets per second always allowed
RESEND_QUEUE = 64  # NACKed packets waiting to be resent, at most


def _ewma(old: float | None, new: float, alpha: float) -> float:
    return new if old is None else old + alpha * (new - old)


class LinkEstimate:
    """Feed it each RTCP packet one viewer's browser sends for our video (`observe`); read the
    smoothed figures, the verdict against the bitrate it needs, and whether a resend fits."""

    def __init__(self, ssrc: int, needed_bps: float, now: Callable[[], float] = time.monotonic) -> None:
        self.ssrc = ssrc  # our sender's SSRC: reports about other streams are not ours
        self.needed_bps = needed_bps
        self._now = now
        self.remb_bps: float | None = None
        self.remb_last_bps: float | None = None  # the newest REMB, unsmoothed
        self.send_bps: float | None = None  # measured: what this viewer is sent
        self.loss: float | None = None  # fraction, smoothed
        self.jitter_ms: float | None = None
        self.rtt_ms: float | None = None
        self.rtt_last_ms: float | None = None  # the newest sample, unsmoothed
        self.rtt_samples = 0  # how many there have been: a decision can wait for a fresh one
        self.verdict = "good"
        self.why = ""
        self.reports = 0
        self.nacked = 0  # packets asked for again
        self.sent_bytes = 0  # what the viewer's track had sent at the newest RTCP packet
        self.resent = 0  # of those, sent again (paced)
        self.resends_refused = 0  # of those, dropped: the queue of waiting resends was full
        self.plis = 0
        self._nack_times: Deque[tuple[float, int]] = collections.deque()
        self._pli_times: Deque[float] = collections.deque()
        self._against_since: float | None = None  # when the evidence turned against the verdict
        self._budget = RETRANSMIT_MIN
        self._budget_at = now()
        self._sent: tuple[float, int] | None = None  # (when, bytes sent so far)
        self._first_report: float | None = None
        self._settled_at = now()  # no verdict on evidence older than this (see reset_verdict)
        self.rtt_min_ms: float | None = None

    # --- input -------------------------------------------------------------------------------

    def observe(self, packet: Any, sent_bytes: int | None = None) -> None:
        """One RTCP packet; `sent_bytes`, the bytes this viewer's track has sent so far."""
        now = self._now()
        if sent_bytes is not None:
            self.sent_bytes = sent_bytes
            self._measure(now, sent_bytes)
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            for report in packet.reports:
                if report.ssrc == self.ssrc:
                    self.receiver_report(report.fraction_lost, report.jitter, report.lsr, report.dlsr)
        elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self.nacked += len(packet.lost)
            self._nack_times.append((now, len(packet.lost)))
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.plis += 1
            self._pli_times.append(now)
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if self.ssrc in ssrcs:
                self.remb(bitrate)
        self._assess(now)

    def _measure(self, now: float, sent_bytes: int) -> None:
        if self._sent is None:
            self._sent = (now, sent_bytes)
            return
        then, before = self._sent
        if now - then >= RATE_PERIOD:
            rate = (sent_bytes - before) * 8 / (now - then)
            self.send_bps = _ewma(self.send_bps, rate, 0.3)
            self._sent = (now, sent_bytes)

    @property
    def carrying_bps(self) -> float:
        """What the link must carry: the measured rate (or, before a measurement, the target)."""
        return self.send_bps if self.send_bps is not None else self.needed_bps

    def remb(self, bps: float) -> None:
        # drops are believed at once, rises slowly: a link gets worse faster than it gets better
        alpha = 0.6 if self.remb_bps is not None and bps < self.remb_bps else 0.15
        self.remb_bps = _ewma(self.remb_bps, float(bps), alpha)
        self.remb_last_bps = float(bps)

    def receiver_report(self, fraction_lost: int, jitter: int, lsr: int, dlsr: int) -> None:
        self.reports += 1
        self.loss = _ewma(self.loss, fraction_lost / 256.0, 0.3)
        self.jitter_ms = _ewma(self.jitter_ms, jitter * 1000.0 / VIDEO_CLOCK, 0.3)
        if lsr:  # RFC 3550 §6.4.1: now - LSR - DLSR, in 1/65536 s, on the NTP clock's middle bits
            middle = (clock.current_ntp_time() >> 16) & 0xFFFFFFFF
            rtt = ((middle - lsr - dlsr) & 0xFFFFFFFF) / 65536.0
            if rtt < 60:  # a wrapped or bogus value is not a round trip
                self.rtt_ms = _ewma(self.rtt_ms, rtt * 1000.0, 0.3)
                self.rtt_last_ms = rtt * 1000.0
                self.rtt_samples += 1
                self.rtt_min_ms = min(self.rtt_min_ms or rtt * 1000.0, rtt * 1000.0)

    # --- output ------------------------------------------------------------------------------

    @property
    def estimate_bps(self) -> float | None:
        """What the viewer can take: its REMB, lowered while it loses packets (as GCC does)."""
        if self.remb_bps is None:
            return None
        loss = self.loss or 0.0
        return self.remb_bps * (1 - 0.5 * loss) if loss > LOSS_GOOD else self.remb_bps

    def congested(self) -> bool:
        """Evidence that packets queue or drop on the way: what makes a low REMB believable."""
        queueing = (self.rtt_ms is not None and self.rtt_min_ms is not None
                    and self.rtt_ms > self.rtt_min_ms + QUEUE_MS)
        return (self.loss or 0.0) > LOSS_GOOD or self.rate("nack") > 1.0 or queueing

    def queue_delay(self) -> float:
        """Seconds what we send now waits in a queue on the way: the round trip above its
        lowest. The newest sample counts as much as the smoothed figure: a queue fills within
        a second (a try up into a capped link), faster than the smoothing follows."""
        if self.rtt_ms is None or self.rtt_min_ms is None or self.rtt_last_ms is None:
            return 0.0
        return max(0.0, max(self.rtt_ms, self.rtt_last_ms) - self.rtt_min_ms) / 1000

    def rate(self, kind: str) -> float:
        """NACKed packets or PLIs per second over the last RATE_WINDOW seconds."""
        now = self._now()
        while self._nack_times and now - self._nack_times[0][0] > RATE_WINDOW:
            self._nack_times.popleft()
        while self._pli_times and now - self._pli_times[0] > RATE_WINDOW:
            self._pli_times.popleft()
        if kind == "nack":
            return sum(n for _, n in self._nack_times) / RATE_WINDOW
        return len(self._pli_times) / RATE_WINDOW

    def resend_wait(self) -> float:
        """0 when one NACKed packet may be sent again now (its share taken), else the seconds
        until it may: a token bucket of RETRANSMIT_SHARE of the estimate (at least
        RETRANSMIT_MIN packets/s), so resends never multiply a weak link's load (on a link
        capped at 200 kbit/s, resending 30 packets a second kept its queue full and the
        picture frozen)."""
        now = self._now()
        per_second = max(RETRANSMIT_MIN, RETRANSMIT_SHARE * (self.estimate_bps or self.needed_bps) / AVERAGE_PACKET_BITS)
        self._budget = min(per_second, self._budget + (now - self._budget_at) * per_second)
        self._budget_at = now
        if self._budget >= 1.0:
            self._budget -= 1.0
            return 0.0
        return (1.0 - self._budget) / per_second


    def reset_verdict(self, settle: float = 0.0) -> None:
        """After a move to another rung: judge afresh against its needs, on evidence about its
        stream only. What the old rung was sent, its smoothed loss and its NACKs say nothing
        about the new one (kept, they moved a viewer just down to 250 kbit/s on to 100 within
        1.5 s: "estimate 237 kbit/s for 722 sent", the 722 being the old rung's); no verdict
        for `settle` seconds while the old rung's queue drains (after a move down)."""
        self.verdict, self._against_since = "good", None
        self.send_bps, self._sent, self.loss = None, None, None
        self._nack_times.clear()
        self._settled_at = self._now() + settle

    def _assess(self, now: float) -> None:
        """Move the verdict only after the evidence has held for a while (hysteresis)."""
        estimate, loss = self.estimate_bps, self.loss or 0.0
        carrying = self.carrying_bps
        if self._first_report is None:
            self._first_report = now
        if now < self._settled_at:
            self._against_since = None
            return
        warming_up = now - self._first_report < WARMUP
        short_now = loss > LOSS_SHORT or (
            not warming_up and estimate is not None and estimate < carrying * SHORT_RATIO
            and self.congested()
        )
        room_now = (estimate is None or estimate > carrying * GOOD_RATIO) and loss < LOSS_GOOD
        against = short_now if self.verdict == "good" else room_now
        if not against:
            self._against_since = None
            return
        if self._against_since is None:
            self._against_since = now
        if now - self._against_since >= (SHORT_AFTER if self.verdict == "good" else GOOD_AFTER):
            self.verdict = "short" if self.verdict == "good" else "good"
            self._against_since = None
            self.why = self._explain()

    def _explain(self) -> str:
        parts = []
        if self.estimate_bps is not None:
            parts.append(f"estimate {self.estimate_bps / 1000:.0f} kbit/s for {self.carrying_bps / 1000:.0f} sent")
        if self.loss is not None:
            parts.append(f"loss {self.loss * 100:.1f} %")
        return ", ".join(parts)

    def describe(self) -> dict[str, Any]:
        """For /health: one viewer's link."""
        def rounded(value: float | None, digits: int = 1) -> float | None:
            return None if value is None else round(value, digits)

        estimate = self.estimate_bps
        return {
            "verdict": self.verdict,
            "estimate_kbps": None if estimate is None else round(estimate / 1000),
            "sent_kbps": None if self.send_bps is None else round(self.send_bps / 1000),
            "loss_percent": rounded(None if self.loss is None else self.loss * 100),
            "rtt_ms": rounded(self.rtt_ms),
            "jitter_ms": rounded(self.jitter_ms),
            "nacks_per_s": rounded(self.rate("nack")),
            "plis_per_s": rounded(self.rate("pli")),
            "resent": self.resent,
            "resends_refused": self.resends_refused,
        }


class ResendPacer:
    """Resends a viewer's NACKed packets at the pace its link allows, instead of all at once:
    paced, not refused, since a receiver may wait for a hole to be filled (aiortc's jitter
    buffer holds every later frame until it is, or 128 packets have passed). The newest
    RESEND_QUEUE requests are kept; older ones are dropped (counted in `link.resends_refused`)."""

    def __init__(self, link: LinkEstimate, retransmit: Callable[[int], Awaitable[None]]) -> None:
        self.link = link
        self._retransmit = retransmit
        self._queue: Deque[int] = collections.deque()
        self._wake = asyncio.Event()

    def add(self, sequence_numbers: list[int]) -> None:
        for seq in sequence_numbers:
            if seq not in self._queue:
                self._queue.append(seq)
        while len(self._queue) > RESEND_QUEUE:
            self._queue.popleft()
            self.link.resends_refused += 1
        self._wake.set()

    async def run(self) -> None:
        """The pacing task (its owner cancels it when the viewer closes)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                wait = self.link.resend_wait()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                await self._retransmit(self._queue.popleft())
                self.link.resent += 1
