"""A viewer's link estimate (issue #10, its first part): fed synthetic RTCP sequences as browsers
send them (REMB drops, loss bursts, recovery), and live from a real aiortc viewer."""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc import clock
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    pack_remb_fci,
)

from robotcam.webrtc.link import GOOD_AFTER, RESEND_QUEUE, SHORT_AFTER, LinkEstimate, ResendPacer
from tests.conftest import wait_until
from tests.viewer import Viewer

OURS, OTHER = 0x1234, 0x9999
NEEDED = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def remb(bps: int, ssrc: int = OURS) -> RtcpPsfbPacket:
    return RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(bps, [ssrc]))


def report(lost_fraction: float, jitter_ms: float = 5.0, ssrc: int = OURS, lsr: int = 0, dlsr: int = 0) -> RtcpRrPacket:
    info = RtcpReceiverInfo(ssrc=ssrc, fraction_lost=int(lost_fraction * 256), packets_lost=0,
                            highest_sequence=0, jitter=int(jitter_ms * 90), lsr=lsr, dlsr=dlsr)
    return RtcpRrPacket(ssrc=1, reports=[info])


def feed(link: LinkEstimate, now: Clock, seconds: float, *packets: Any, every: float = 0.25) -> None:
    """Send these packets every `every` seconds for `seconds` (as a browser's RTCP interval)."""
    end = now.t + seconds
    while now.t < end:
        for packet in packets:
            link.observe(packet)
        now.t += every


def test_a_remb_drop_turns_the_link_short_quickly_and_recovery_is_careful() -> None:
    now = Clock()
    link = LinkEstimate(OURS, NEEDED, now)
    feed(link, now, 5, remb(2_500_000), report(0))
    assert link.verdict == "good" and link.estimate_bps is not None and link.estimate_bps > 2_000_000
    # the viewer's Wi-Fi gets weak: REMB says 300 kbit/s, and a few packets are lost
    start = now.t
    while link.verdict == "good":
        feed(link, now, 0.25, remb(300_000), report(0.04))
        assert now.t - start < 5, "short within seconds"
    assert now.t - start <= SHORT_AFTER + 1.5
    assert "estimate" in link.why and link.describe()["verdict"] == "short"
    # the link recovers: good again only after GOOD_AFTER seconds of room
    start = now.t
    while link.verdict == "short":
        feed(link, now, 0.25, remb(3_000_000), report(0))
        assert now.t - start < 30
    assert now.t - start >= GOOD_AFTER


def test_noise_does_not_move_the_verdict() -> None:
    now = Clock()
    link = LinkEstimate(OURS, NEEDED, now)
    feed(link, now, 3, remb(2_000_000), report(0))
    for _ in range(20):  # one low REMB now and then, among good ones
        feed(link, now, 0.25, remb(400_000))
        feed(link, now, 1.0, remb(2_000_000), report(0.01))
    assert link.verdict == "good"


def test_a_loss_burst_counts_and_smoothed_loss_recovers() -> None:
    now = Clock()
    link = LinkEstimate(OURS, NEEDED, now)
    feed(link, now, 2, remb(2_000_000), report(0))
    feed(link, now, 3, report(0.3), remb(2_000_000))  # 30 % loss for three seconds
    assert link.verdict == "short" and link.loss is not None and link.loss > 0.2
    assert link.estimate_bps is not None and link.estimate_bps < 2_000_000  # loss lowers it
    feed(link, now, 15, report(0.0), remb(2_000_000))
    assert link.verdict == "good" and link.loss < 0.01


def test_a_low_remb_without_congestion_is_not_believed() -> None:
    """Chromium reported 70 kbit/s while receiving 99 with no loss: browsers' estimators are
    low at low rates. No loss, no NACKs, no queue: the link is fine."""
    now = Clock()
    link = LinkEstimate(OURS, NEEDED, now)
    feed(link, now, 20, remb(70_000), report(0))
    assert link.verdict == "good" and not link.congested()
    # a queue building on the way (round trip up by 150 ms) makes it believable
    middle = lambda: (clock.current_ntp_time() >> 16) & 0xFFFFFFFF  # noqa: E731
    for delay in (0.010, 0.010, 0.160, 0.170, 0.160, 0.165, 0.170, 0.160):
        link.observe(report(0, lsr=(middle() - int(delay * 65536)) & 0xFFFFFFFF, dlsr=0))
    assert link.congested()
    feed(link, now, 3, remb(70_000))
    assert link.verdict == "short"


def test_reports_about_other_streams_are_ignored() -> None:
    now = Clock()
    link = LinkEstimate(OURS, NEEDED, now)
    feed(link, now, 5, remb(100_000, ssrc=OTHER), report(0.5, ssrc=OTHER))
    assert link.remb_bps is None and link.loss is None and link.verdict == "good"


def test_round_trip_time_from_lsr_and_dlsr() -> None:
    link = LinkEstimate(OURS, NEEDED, Clock())
    middle = (clock.current_ntp_time() >> 16) & 0xFFFFFFFF
    # the sender report went out 80 ms ago; the browser held it 30 ms: 50 ms round trip
    link.observe(report(0, lsr=(middle - int(0.080 * 65536)) & 0xFFFFFFFF, dlsr=int(0.030 * 65536)))
    assert link.rtt_ms is not None and 45 < link.rtt_ms < 60


def test_nack_and_pli_rates_and_the_resend_budget() -> None:
    now = Clock()
    link = LinkEstimate(OURS, NEEDED, now)
    feed(link, now, 2, remb(400_000))
    for _ in range(10):
        link.observe(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=OURS, lost=list(range(20))))
        link.observe(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=OURS))
        now.t += 0.1
    assert link.nacked == 200 and link.rate("nack") == 200 / 5 and link.rate("pli") == 10 / 5
    # a viewer NACKing hundreds of packets at once gets no more resends than its budget: a
    # quarter of its estimate (here 400 kbit/s: about 11 packets/s); the rest wait their turn
    allowed = sum(link.resend_wait() == 0 for _ in range(500))
    assert 9 <= allowed <= 13
    assert 0 < link.resend_wait() <= 1 / 11 + 0.01  # the next one's turn
    now.t += 1.0
    assert sum(link.resend_wait() == 0 for _ in range(100)) <= 12  # refilled at the rate, not beyond


def test_after_a_move_the_estimate_starts_afresh_and_settles() -> None:
    """What the old rung was sent and lost says nothing about the new one; after a move down
    the old rung's queue is still being reported for a while."""
    now = Clock()
    link = LinkEstimate(OURS, NEEDED, now)
    feed(link, now, 7, remb(300_000), report(0.3))
    link.observe(RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=OURS, lost=list(range(20))), 10_000)
    assert link.verdict == "short"
    link.reset_verdict(settle=2.0)
    assert link.verdict == "good" and link.loss is None and link.send_bps is None and link.rate("nack") == 0
    feed(link, now, 1.9, remb(100_000), report(0.3))
    assert link.verdict == "good", "no verdict while the old rung's queue drains"
    feed(link, now, SHORT_AFTER + 0.5, remb(100_000), report(0.3))
    assert link.verdict == "short", "evidence after the settle counts"


async def test_resends_are_paced_not_refused() -> None:
    link = LinkEstimate(OURS, 8 * 1100 * 40 * 4, Clock())  # a budget of 40 packets a second
    link._now = asyncio.get_running_loop().time
    sent: list[int] = []

    async def retransmit(seq: int) -> None:
        sent.append(seq)

    pacer = ResendPacer(link, retransmit)
    task = asyncio.ensure_future(pacer.run())
    try:
        pacer.add(list(range(60)))
        pacer.add([5, 6, 60])  # already waiting: asked once
        await asyncio.sleep(0.5)
        assert 40 <= len(sent) < 61, "the first second's budget at once, then at its pace"
        await wait_until(lambda: len(sent) == 61, 5, "every request resent, paced")
        assert sent == list(range(61)) and link.resent == 61 and link.resends_refused == 0
        pacer.add(list(range(1000, 1000 + RESEND_QUEUE + 10)))  # more than it keeps waiting
        await wait_until(lambda: len(sent) == 61 + RESEND_QUEUE, 10, "the newest ones resent")
        assert link.resends_refused == 10 and sent[61] == 1010
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_health_shows_each_viewers_link(robot: Any) -> None:
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        await viewer.wait_frames(5)

        async def link() -> dict[str, Any]:
            _, health = await robot.health()
            return health["peers"]["sessions"][0]["link"]

        # aiortc's receiver sends receiver reports and REMB, as browsers do
        deadline = asyncio.get_running_loop().time() + 20
        got = await link()
        while (got["rtt_ms"] is None or got["estimate_kbps"] is None) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.5)
            got = await link()
        assert got["verdict"] == "good" and got["loss_percent"] == 0.0, got
        assert got["rtt_ms"] is not None and got["rtt_ms"] < 1000, got
        assert got["estimate_kbps"] is not None and got["estimate_kbps"] > 0, got
    finally:
        await viewer.close()
    await wait_until(lambda: len(robot.daemon.peers) == 0, 10, "the viewer leaves")
