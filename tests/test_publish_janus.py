"""Publishing to a real media server: robotcam -> WHIP gateway -> Janus 1.1 VideoRoom -> aiortc
subscribers (tests/janus_support.py). All of it inside the loopback-only namespace, on 127.0.0.2."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import aioice.ice
import pytest

from robotcam.publish import PublishTiming
from tests.conftest import Robot, free_port, make_config, wait_until
from tests.janus_support import JANUS_ADDRESS, Subscriber, can_run_janus, janus_with_whip, loopback_veth
from tests.viewer import Viewer, advancing

pytestmark = pytest.mark.skipif(can_run_janus() is not None, reason=can_run_janus() or "")

FPS = 30
# A Janus that vanishes is noticed by the missing RTCP receiver reports (ack_timeout), then
# reconnected with backoff doubling from 0.5 s up to 4 s.
TIMING = PublishTiming(backoff_first=0.5, backoff_max=4.0, ack_timeout=4.0, connect_timeout=10.0, check_interval=0.5)
RECONNECT_BOUND = TIMING.ack_timeout + TIMING.backoff_max * 2 + TIMING.connect_timeout + 10  # generous


@pytest.fixture
async def janus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    # Janus never uses loopback interfaces: every ICE participant uses the veth's 127.0.0.2.
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4=True, use_ipv6=True: [JANUS_ADDRESS])
    with loopback_veth():
        async with janus_with_whip(tmp_path / "janus", free_port(), token="room-token") as (server, gateway):
            async with aiohttp.ClientSession() as http:
                yield server, gateway, http


async def publishing_robot(robot_factory: Any, gateway: Any) -> Robot:
    config = make_config(
        video={"fps": FPS}, audio={"source": "tone"},
        webrtc={"host_addresses": [JANUS_ADDRESS]},
        publish=[{"url": gateway.url, "token": "room-token"}],
    )
    return await robot_factory(config, publish_timing=TIMING)


def publisher(robot: Robot) -> dict[str, Any]:
    return robot.daemon.publish.health()["publishers"][0]


def step_share(numbers: list[int | None]) -> float:
    """How many consecutive decoded frames are exactly one source frame apart."""
    decoded = [n for n in numbers if n is not None]
    steps = [b - a for a, b in zip(decoded, decoded[1:])]
    return sum(1 for s in steps if s == 1) / max(len(steps), 1)


async def test_two_subscribers_through_janus_decode_robotcams_frames(robot_factory, janus) -> None:
    server, gateway, http = janus
    robot = await publishing_robot(robot_factory, gateway)
    await wait_until(lambda: publisher(robot)["state"] == "connected", 30, "published to Janus")
    subscribers = [Subscriber(http, server.url) for _ in range(2)]
    try:
        await asyncio.gather(*(s.subscribe(gateway.feed) for s in subscribers))
        await wait_until(lambda: all(len(s.numbers) >= 60 for s in subscribers), 30, "frames through Janus")
        await asyncio.sleep(3)
        source = robot.daemon.pipeline.source
        for subscriber in subscribers:
            assert advancing(subscriber.numbers[-60:])
            # every source frame arrives (steps of one), near the source's rate, and the numbers
            # are robotcam's: the latest is what the test pattern drew well under a second ago
            assert step_share(subscriber.numbers[-60:]) > 0.8
            assert subscriber.fps(2.0) > FPS * 0.5
            latest = [n for n in subscriber.numbers if n is not None][-1]
            assert 0 <= source.frame_number - latest < FPS * 2
        assert list(robot.daemon.pipeline.encoders) == ["H264"]  # encoder count stays one
        assert robot.daemon.pipeline.encoders["H264"].contexts_opened == 1
        entry = publisher(robot)
        assert entry["server"].startswith(JANUS_ADDRESS) and entry["bitrate_kbps"] > 0
        assert len(robot.daemon.peers) == 0  # the publisher is no viewer
    finally:
        await asyncio.gather(*(s.close() for s in subscribers))
    await robot.daemon.publish.stop()
    assert len(gateway.deletes) == 1  # shutdown ended the session on the server
    await robot.daemon.publish.start()


async def test_janus_killed_and_restarted_robotcam_reconnects_and_viewers_keep_playing(robot_factory, janus) -> None:
    server, gateway, http = janus
    robot = await publishing_robot(robot_factory, gateway)
    viewer = Viewer()
    gaps: list[float] = []
    sampling = True

    async def sample() -> None:  # the longest stretch without a new local frame
        last_count, last_change = len(viewer.numbers), time.monotonic()
        while sampling:
            await asyncio.sleep(0.05)
            if len(viewer.numbers) != last_count:
                gaps.append(time.monotonic() - last_change)
                last_count, last_change = len(viewer.numbers), time.monotonic()

    sampler = asyncio.ensure_future(sample())
    subscriber = Subscriber(http, server.url)
    try:
        await viewer.connect(robot.post_offer)
        await viewer.wait_frames(10)
        await wait_until(lambda: publisher(robot)["state"] == "connected", 30, "published to Janus")
        server.kill()
        killed_at = time.monotonic()
        frames_at_kill = len(viewer.numbers)
        await wait_until(lambda: publisher(robot)["state"] != "connected", TIMING.ack_timeout + 10, "loss noticed")
        # a killed server says nothing: its silence (no RTCP receiver reports) gives it away
        assert "no RTCP receiver report from the server" in publisher(robot)["reason"]
        await asyncio.sleep(2)
        await server.start()
        await wait_until(lambda: publisher(robot)["state"] == "connected", RECONNECT_BOUND, "reconnected to Janus")
        outage = time.monotonic() - killed_at
        assert publisher(robot)["reconnects"] >= 1
        await subscriber.subscribe(gateway.feed)
        await wait_until(lambda: len(subscriber.numbers) >= 30, 30, "a new subscriber plays")
        assert advancing(subscriber.numbers[-20:])
        # the local viewer kept playing through it all, at the source's rate
        frames = len(viewer.numbers) - frames_at_kill
        elapsed = time.monotonic() - killed_at
        assert frames > FPS * elapsed * 0.5, (frames, elapsed)  # generous: a shared machine
        assert max(gaps) < 2.0, max(gaps)
        assert advancing(viewer.numbers[frames_at_kill:])
        print(f"outage noticed and reconnected in {outage:.1f} s; local viewer {frames / elapsed:.1f} fps, longest gap {max(gaps) * 1000:.0f} ms")
    finally:
        sampling = False
        await asyncio.gather(sampler, return_exceptions=True)
        await subscriber.close()
        await viewer.close()
