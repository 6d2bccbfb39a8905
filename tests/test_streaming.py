"""End to end over loopback: real aiortc viewers negotiate with the daemon and decode video."""

from __future__ import annotations

import asyncio
import threading
import time

from tests.conftest import make_config
from tests.viewer import Viewer, advancing


async def test_h264_viewer_decodes_advancing_frames(robot) -> None:
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        assert viewer.codec == "H264"
        numbers = await viewer.wait_frames(30)
        decoded = [n for n in numbers if n is not None]
        # the frame-number code survives encoding: nearly every frame reads back
        assert len(decoded) >= 0.9 * len(numbers)
        assert advancing(numbers)
        assert viewer.sizes == {(320, 240)}
        # SDP says constrained baseline; the daemon encodes exactly that
        assert "profile-level-id=42e01f" in viewer.answer["sdp"]
    finally:
        await viewer.close()


async def test_vp8_only_viewer_plays(robot) -> None:
    viewer = Viewer(codecs=("VP8",))
    try:
        await viewer.connect(robot.post_offer)
        assert viewer.codec == "VP8"
        assert advancing(await viewer.wait_frames(30))
        assert set(robot.daemon.pipeline.encoders) == {"VP8"}
    finally:
        await viewer.close()


async def test_four_viewers_share_one_encoder(robot) -> None:
    pipeline = robot.daemon.pipeline
    viewers = [Viewer() for _ in range(4)]
    try:
        await asyncio.gather(*(v.connect(robot.post_offer) for v in viewers))
        produced_before = pipeline.frames_produced
        await asyncio.gather(*(v.wait_frames(30) for v in viewers))
        assert all(advancing(v.numbers) for v in viewers)
        encoders = pipeline.encoders
        assert list(encoders) == ["H264"]
        encoder = encoders["H264"]
        # one encoder context, each produced frame encoded at most once for all four viewers
        assert encoder.contexts_opened == 1
        assert encoder.frames_encoded <= pipeline.frames_produced - produced_before + encoder.frames_in
        assert encoder.frames_encoded <= encoder.frames_in <= pipeline.frames_produced
        assert sum(v.codec == "H264" for v in viewers) == 4
        assert len([t for t in threading.enumerate() if t.name.startswith("robotcam-encoder")]) == 1
    finally:
        await asyncio.gather(*(v.close() for v in viewers))


async def test_viewer_joining_mid_stream_gets_a_keyframe_at_once(robot_factory) -> None:
    # A 20 s GOP: without a keyframe on join the second viewer would wait up to 20 s.
    robot = await robot_factory(make_config(video={"keyframe_interval": 20.0}))
    first, second = Viewer(), Viewer()
    try:
        await first.connect(robot.post_offer)
        await first.wait_frames(15)
        encoder = robot.daemon.pipeline.encoders["H264"]
        forced_before = encoder.keyframes_forced
        await second.connect(robot.post_offer)
        await second.wait_frames(1, timeout=8)
        assert second.first_frame_at - second.offered_at < 8
        assert encoder.keyframes_forced > forced_before
        assert advancing(await second.wait_frames(10))
        # the first viewer kept playing through the other's join
        count = len(first.numbers)
        await first.wait_frames(count + 10)
    finally:
        await asyncio.gather(first.close(), second.close())


async def test_picture_loss_indication_asks_the_shared_encoder_for_a_keyframe(robot) -> None:
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        await viewer.wait_frames(5)
        session = next(iter(robot.daemon.peers.sessions.values()))
        encoder = robot.daemon.pipeline.encoders["H264"]
        requests_before = session.track.keyframe_requests
        forced_before = encoder.keyframes_forced
        # A real RTCP PLI from the viewer's receiver, as a browser sends on packet loss.
        receiver = viewer.pc.getReceivers()[0]
        media_ssrc = receiver.getSynchronizationSources()[0].source
        await asyncio.sleep(0.5)  # past the encoder's keyframe rate limit from the join
        await receiver._send_rtcp_pli(media_ssrc)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and encoder.keyframes_forced == forced_before:
            await asyncio.sleep(0.05)
        assert session.track.keyframe_requests > requests_before
        assert encoder.keyframes_forced > forced_before
    finally:
        await viewer.close()


async def test_everything_is_released_when_viewers_leave(robot) -> None:
    pipeline = robot.daemon.pipeline
    viewers = [Viewer(), Viewer(codecs=("VP8",))]
    await asyncio.gather(*(v.connect(robot.post_offer) for v in viewers))
    await asyncio.gather(*(v.wait_frames(10) for v in viewers))
    assert set(pipeline.encoders) == {"H264", "VP8"}
    await asyncio.gather(*(v.close() for v in viewers))

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (len(robot.daemon.peers) or pipeline.encoders):
        await asyncio.sleep(0.2)
    assert len(robot.daemon.peers) == 0
    assert pipeline.encoders == {}
    assert pipeline.viewers == 0
    deadline = time.monotonic() + 10
    while robot.daemon.peers.tasks and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert robot.daemon.peers.tasks == 0  # no connect-timeout or close task outlives its viewer
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        t.name.startswith("robotcam-encoder") for t in threading.enumerate()
    ):
        await asyncio.sleep(0.2)
    assert not [t.name for t in threading.enumerate() if t.name.startswith("robotcam-encoder")]
    # the source, a singleton, keeps running for the next viewer
    assert pipeline.healthy()
