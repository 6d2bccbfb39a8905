"""The rendition ladder (issue #10, parts 2 and 3): rungs encoded once each while in use, a
viewer moving between them at a keyframe without renegotiating, and the policy that moves it,
driven by the RTCP a real aiortc viewer sends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiortc.rtp import (
    RTCP_PSFB_APP, RTCP_RTPFB_NACK, RtcpPsfbPacket, RtcpReceiverInfo, RtcpRrPacket, RtcpRtpfbPacket,
    pack_remb_fci,
)

from robotcam.config import VideoConfig
from robotcam.webrtc.link import LinkEstimate
from robotcam.video.rungs import DRAIN_MAX, HOLD_FIRST, TRIAL, TRY_QUEUE, RungPolicy, ladder
from tests.conftest import make_config, wait_until
from tests.test_link import OURS, Clock, remb, report
from tests.viewer import Viewer


def test_the_ladder_follows_the_camera_and_can_be_switched_off() -> None:
    rungs = ladder(VideoConfig(width=1280, height=720, fps=30, bitrate=2_000_000))
    assert [(r.width, r.height, r.fps, r.bitrate) for r in rungs] == [
        (1280, 720, 30, 2_000_000), (640, 360, 30, 500_000), (640, 360, 15, 200_000)]
    assert len(ladder(VideoConfig(adaptive=False))) == 1
    odd = ladder(VideoConfig(width=642, height=482, renditions=[{"scale": 0.33, "bitrate_ratio": 0.3}]))
    assert all(r.width % 2 == 0 and r.height % 2 == 0 for r in odd)
    # a rendition that is not cheaper than the one above it is left out
    assert len(ladder(VideoConfig(renditions=[{"scale": 0.5, "bitrate_ratio": 1.0}]))) == 1


def test_policy_moves_down_quickly_and_up_carefully() -> None:
    now = Clock()
    rungs = ladder(VideoConfig(bitrate=1_000_000))  # 1000, 250, 100 kbit/s
    link = LinkEstimate(OURS, 0, now)
    policy = RungPolicy(lambda: rungs, link, now)

    def run(seconds: float, *packets: Any, first: bool = False) -> list[tuple[float, int]]:
        """Feed the packets every 0.25 s for `seconds` (or until the first move): the moves."""
        moves = []
        end = now.t + seconds
        while now.t < end and not (first and moves):
            for packet in packets:
                link.observe(packet)
            if (rung := policy.decide()) is not None:
                moves.append((now.t, rung))
            now.t += 0.25
        return moves

    assert run(5, remb(2_000_000), report(0)) == []
    # capped at 300 kbit/s (REMB says so, and a few packets are lost): down within seconds
    start = now.t
    [(down_at, rung)] = run(5, remb(300_000), report(0.04), first=True)
    assert rung == 1 and down_at - start <= 2.0
    # a clean link at the lower rung: after the hold it tries the full stream
    [(up_at, rung)] = run(HOLD_FIRST + 2, remb(330_000), report(0), first=True)
    assert rung == 0 and HOLD_FIRST <= up_at - down_at <= HOLD_FIRST + 0.5
    # the cap is still there, so the try fails within seconds (back down), and the next try
    # waits twice as long
    [(down_at, rung)] = run(5, remb(300_000), report(0.05), first=True)
    assert rung == 1 and down_at - up_at <= 3.0 and policy.hold == 2 * HOLD_FIRST
    [(up_at, rung)] = run(2 * HOLD_FIRST + 2, remb(330_000), report(0), first=True)
    assert rung == 0 and 2 * HOLD_FIRST <= up_at - down_at <= 2 * HOLD_FIRST + 0.5
    # the cap has lifted: the try holds, and the viewer stays on the full stream
    assert run(TRIAL + 5, remb(3_000_000), report(0)) == []
    assert policy.rung == 0 and policy.hold == HOLD_FIRST
    # capped hard: down one rung at a time, to the lowest, and no further
    assert [rung for _, rung in run(8, remb(50_000), report(0.05))] == [1, 2]


class Driven:
    """A policy fed RTCP every 0.25 s on a synthetic clock, with the bytes the viewer is sent."""

    def __init__(self) -> None:
        self.now = Clock()
        self.link = LinkEstimate(OURS, 0, self.now)
        rungs = ladder(VideoConfig(bitrate=1_000_000))  # 1000, 250, 100 kbit/s
        self.policy = RungPolicy(lambda: rungs, self.link, self.now)
        self.sent = 0.0

    def tick(self, *packets: Any) -> int | None:
        """One RTCP interval at the current rung's rate: the move it decides, if any."""
        self.sent += self.policy.rungs[self.policy.rung].bitrate / 8 * 0.25
        for packet in packets:
            self.link.observe(packet, int(self.sent))
        self.now.t += 0.25
        return self.policy.decide()

    def until_move(self, seconds: float, *packets: Any) -> tuple[float, int] | None:
        end = self.now.t + seconds
        while self.now.t < end:
            if (rung := self.tick(*packets)) is not None:
                return self.now.t, rung
        return None


def test_a_viewer_moved_down_is_judged_on_its_new_rung_alone() -> None:
    """Capped at 333 kbit/s: rung 1 (250 kbit/s) fits. Right after the move the reports still
    describe rung 0 (its 1 Mbit/s, the loss in the queue it filled); judged on them, the viewer
    went on to rung 2 within 1.5 s ("estimate 237 kbit/s for 722 sent")."""
    driven = Driven()
    assert driven.until_move(10, remb(1_500_000), report(0)) is None
    start = driven.now.t
    moved = driven.until_move(5, remb(280_000), report(0.3))
    assert moved is not None and moved[1] == 1 and moved[0] - start <= 3.0
    for lost in (0.3, 0.2, 0.1, 0.05, 0.02, 0.01):  # the queue drains
        assert driven.tick(remb(240_000), report(lost)) is None, driven.link.why
    assert driven.until_move(HOLD_FIRST - 2, remb(240_000), report(0)) is None, driven.link.why
    assert driven.policy.rung == 1 and driven.link.verdict == "good"


def test_a_try_that_loses_packets_goes_back_at_once() -> None:
    """A try up into a link that cannot take it breaks the picture until it is back down: the
    first report of heavy loss ends it, without the 1.5 s of hysteresis a verdict needs."""
    driven = Driven()
    driven.until_move(10, remb(1_500_000), report(0))
    assert driven.until_move(5, remb(200_000), report(0.3)) is not None
    tried = driven.until_move(HOLD_FIRST + 5, remb(300_000), report(0))
    assert tried is not None and tried[1] == 0
    back = driven.until_move(5, remb(300_000), report(0.4))
    assert back is not None and back[1] == 1 and back[0] - tried[0] <= 0.25
    assert driven.policy.hold == 2 * HOLD_FIRST and "on the try" in driven.policy.why
    # it filled the queue on the way before a round trip could show it: the next keyframe waits
    assert driven.policy.drain == DRAIN_MAX


def test_a_try_that_builds_a_queue_goes_back_before_it_loses_packets() -> None:
    """Behind a deep buffer (Wi-Fi's, tbf's 1 s) a try up into a link that cannot take it
    shows no loss for a second or more: its round trip climbing is the first sign, and it ends
    the try at once, before the queue overflows and the picture breaks."""
    driven = Driven()
    link = driven.link
    link.rtt_min_ms = link.rtt_ms = link.rtt_last_ms = 2.0
    driven.until_move(10, remb(1_500_000), report(0))
    assert driven.until_move(5, remb(200_000), report(0.3)) is not None
    link.rtt_last_ms = 800.0  # the queue the move down left, measured before the try
    tried = driven.until_move(HOLD_FIRST + 5, remb(300_000), report(0))
    assert tried is not None and tried[1] == 0
    assert driven.tick(remb(300_000), report(0)) is None  # no round trip of its own yet: it goes on
    link.rtt_last_ms, link.rtt_samples = 3.0, link.rtt_samples + 1
    assert driven.tick(remb(300_000), report(0)) is None  # a calm round trip: the try goes on
    # the queue builds; no loss reported yet
    link.rtt_last_ms, link.rtt_samples = 2.0 + TRY_QUEUE * 1000 + 50, link.rtt_samples + 1
    assert driven.tick(remb(300_000), report(0)) == 1
    assert "round trip" in driven.policy.why and "on the try" in driven.policy.why
    assert driven.policy.hold == 2 * HOLD_FIRST
    # caught before it overflowed: the keyframe waits what the round trip says, not DRAIN_MAX
    assert driven.policy.drain == pytest.approx(TRY_QUEUE + 0.05)
    # the same round trip on a rung the viewer holds is not a try: no move at once
    assert driven.tick(remb(300_000), report(0)) is None


def test_a_try_whose_packets_are_nacked_goes_back_before_the_next_report() -> None:
    """Once a try's queue overflows, the browser NACKs what it misses at once, a second before
    its next receiver report says so: a tenth of the try's packets NACKed ends it."""
    driven = Driven()
    driven.until_move(10, remb(1_500_000), report(0))
    assert driven.until_move(5, remb(200_000), report(0.3)) is not None
    tried = driven.until_move(HOLD_FIRST + 5, remb(300_000), remb(300_000))
    assert tried is not None and tried[1] == 0
    few = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=OURS, lost=[1, 2, 3])
    assert driven.tick(remb(300_000), few) is None  # a few random losses are no verdict
    many = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=OURS, lost=list(range(10, 30)))
    assert driven.tick(remb(300_000), many) == 1  # no receiver report needed
    assert "on the try" in driven.policy.why and driven.policy.drain == DRAIN_MAX


def test_a_try_whose_remb_falls_goes_back_at_once() -> None:
    """The browser's estimator sees the queue a try builds from the packets' spacing and lowers
    its REMB: a fall to under 80 % of the REMB the try began with ends it; a REMB that rises
    (the link carries the try) does not."""
    driven = Driven()
    driven.until_move(10, remb(1_500_000), report(0))
    assert driven.until_move(5, remb(200_000), report(0.3)) is not None
    tried = driven.until_move(HOLD_FIRST + 5, remb(300_000), report(0))
    assert tried is not None and tried[1] == 0
    assert driven.tick(remb(400_000), report(0)) is None and driven.tick(remb(260_000)) is None
    assert driven.tick(remb(230_000)) == 1
    assert "estimate fell to 230 kbit/s on the try" in driven.policy.why


def test_a_move_down_waits_for_the_queue_on_the_way_to_drain() -> None:
    """The round trip above its lowest is how long the old rung's packets still queue: a move
    down waits that long (at most DRAIN_MAX) before the new rung's keyframe; a move up does not."""
    driven = Driven()
    link = driven.link
    link.rtt_min_ms, link.rtt_ms, link.rtt_last_ms = 2.0, 60.0, 702.0  # the newest sample leads
    moved = driven.until_move(10, remb(200_000), report(0.3))
    assert moved is not None and moved[1] == 1 and driven.policy.drain == 0.7
    link.rtt_ms = link.rtt_last_ms = 3000.0
    assert driven.until_move(10, remb(50_000), report(0.3)) is not None and driven.policy.drain == DRAIN_MAX
    link.rtt_ms = link.rtt_last_ms = 2.0
    driven.policy.hold = 0.0
    assert driven.until_move(3, remb(3_000_000), report(0)) is not None and driven.policy.drain == 0.0


def remb_packet(receiver: Any, media_ssrc: int, bps: int) -> RtcpPsfbPacket:
    return RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=receiver._RTCRtpReceiver__rtcp_ssrc or 1,
                          media_ssrc=0, fci=pack_remb_fci(bps, [media_ssrc]))


async def test_a_short_viewer_moves_down_and_back_without_renegotiating(robot_factory: Any) -> None:
    """Two viewers; one says (by REMB and 5 % loss, as a browser on weak Wi-Fi does) that it can
    take only 20 kbit/s: it moves down the ladder and keeps decoding, the other stays on the full stream;
    one encoder per rung in use; when it says it can take everything again and the hold has
    passed, it returns."""
    robot = await robot_factory(make_config(video={"bitrate": 1_000_000}))
    good, weak = Viewer(), Viewer()
    offers = 0

    async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        nonlocal offers
        offers += 1
        return await robot.post_offer(body)

    try:
        await good.connect(post)
        await weak.connect(post)
        await asyncio.gather(good.wait_frames(10), weak.wait_frames(10))
        assert weak.sizes == {(320, 240)}
        session = max(robot.daemon.peers.sessions.values(), key=lambda s: s.id)
        receiver = weak.pc.getReceivers()[0]
        media_ssrc = receiver.getSynchronizationSources()[0].source

        async def say(bps: int, seconds: float) -> None:
            end = asyncio.get_running_loop().time() + seconds
            while asyncio.get_running_loop().time() < end:
                await receiver._send_rtcp(remb_packet(receiver, media_ssrc, bps))
                if bps < 1_000_000:  # a weak link loses packets too (5 %)
                    await receiver._send_rtcp(RtcpRrPacket(ssrc=1, reports=[RtcpReceiverInfo(
                        ssrc=media_ssrc, fraction_lost=13, packets_lost=0, highest_sequence=0,
                        jitter=0, lsr=0, dlsr=0)]))
                await asyncio.sleep(0.1)

        await say(20_000, 12)  # past the warm-up (a browser's REMB starts low), and a settle per rung
        # 20 kbit/s is short of every rung: down one at a time, to the lowest
        lowest = len(robot.daemon.pipeline.rungs) - 1
        await wait_until(lambda: session.policy.rung == lowest, 15, "the weak viewer moves down")
        count = len(weak.numbers)
        await weak.wait_frames(count + 10)  # still decoding, now at a lower rung
        assert (160, 120) in weak.sizes
        await wait_until(  # a switch in progress holds two rungs until the target's keyframe
            lambda: set(robot.daemon.pipeline.encoders) == {"H264", f"H264/{session.policy.rung}"},
            10, "one encoder per rung in use")
        rung = session.policy.rung
        good_count = len(good.numbers)
        await good.wait_frames(good_count + 15)
        assert good.sizes == {(320, 240)}, "the healthy viewer keeps the full picture"
        _, health = await robot.health()
        weak_health = next(s for s in health["peers"]["sessions"] if s["id"] == session.id)
        assert weak_health["rung"] == rung and weak_health["rendition"].startswith("160x120")
        assert "link short" in weak_health["rendition_why"]
        quality = await (await robot.http.get("/api/viewer", params={"session": session.key})).json()
        assert quality["rung"] == rung and quality["rendition"].startswith("160x120") and quality["link"]["verdict"]
        assert (await robot.http.get("/api/viewer", params={"session": "nope"})).status == 404

        session.policy.hold = 1.0  # the test does not wait out the real hold
        await say(5_000_000, 12)
        await wait_until(lambda: session.policy.rung == 0, 15, "the viewer returns to the full stream")
        sizes_before = len(weak.numbers)
        await weak.wait_frames(sizes_before + 15)
        assert weak.last_frame.width == 320
        await wait_until(lambda: set(robot.daemon.pipeline.encoders) == {"H264"}, 10,
                         "the unused rung's encoder stops")
        assert offers == 2, "no renegotiation"
    finally:
        await asyncio.gather(good.close(), weak.close())
