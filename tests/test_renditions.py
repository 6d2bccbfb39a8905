"""The rendition ladder (issue #10, parts 2 and 3): rungs encoded once each while in use, a
viewer moving between them at a keyframe without renegotiating, and the policy that moves it,
driven by the RTCP a real aiortc viewer sends."""

from __future__ import annotations

import asyncio
from typing import Any

from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtcpReceiverInfo, RtcpRrPacket, pack_remb_fci

from robotcam.config import VideoConfig
from robotcam.webrtc.link import LinkEstimate
from robotcam.video.rungs import HOLD_FIRST, TRIAL, RungPolicy, ladder
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

        await say(20_000, 8)  # past the link estimate's warm-up (a browser's REMB starts low)
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
