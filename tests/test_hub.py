"""The fan-out hub on its own: keyframe gating, slow viewers, unsubscribe."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import pytest
from aiortc.mediastreams import MediaStreamError

from robotcam.hub import PacketHub, PeerVideoTrack


def packet(number: int, key: bool) -> av.Packet:
    nal = b"\x00\x00\x00\x01" + (b"\x65" if key else b"\x41") + bytes([number % 256]) * 8
    p = av.Packet(nal)
    p.pts, p.time_base, p.is_keyframe = number * 3000, Fraction(1, 90000), key
    return p


class Recorder:
    def __init__(self) -> None:
        self.keyframe_requests = 0
        self.emptied: list[PacketHub] = []

    def request(self) -> None:
        self.keyframe_requests += 1


def make_hub(recorder: Recorder) -> PacketHub:
    return PacketHub("H264", recorder.request, recorder.emptied.append)


async def test_a_new_viewer_starts_at_a_keyframe_and_asks_for_one() -> None:
    recorder = Recorder()
    hub = make_hub(recorder)
    track = PeerVideoTrack(queue_size=10)
    hub.subscribe(track)
    assert recorder.keyframe_requests == 1
    for n in range(3):
        hub.publish(packet(n, key=False))
    hub.publish(packet(3, key=True))
    hub.publish(packet(4, key=False))
    got = [await asyncio.wait_for(track.recv(), 1) for _ in range(2)]
    assert [p.pts // 3000 for p in got] == [3, 4]
    assert got[0].is_keyframe


async def test_a_slow_viewer_drops_to_the_next_keyframe_and_never_holds_up_others() -> None:
    recorder = Recorder()
    hub = make_hub(recorder)
    slow, fast = PeerVideoTrack(queue_size=4), PeerVideoTrack(queue_size=4)
    hub.subscribe(slow)
    hub.subscribe(fast)
    requests_after_join = recorder.keyframe_requests
    received: list[int] = []
    for n in range(24):  # keyframes at 0, 10, 20; only the fast viewer reads
        hub.publish(packet(n, key=n % 10 == 0))  # synchronous: publishing cannot block
        received.append((await asyncio.wait_for(fast.recv(), 1)).pts // 3000)
    assert received == list(range(24))
    assert fast.packets_dropped == 0
    # the slow one overflowed: its stale packets went, it asked for a keyframe, and what it
    # holds now starts at the latest keyframe
    assert slow.packets_dropped > 0
    assert recorder.keyframe_requests > requests_after_join
    first = await asyncio.wait_for(slow.recv(), 1)
    assert first.is_keyframe and first.pts // 3000 == 20
    rest = [(await asyncio.wait_for(slow.recv(), 1)).pts // 3000 for _ in range(3)]
    assert rest == [21, 22, 23]


async def test_stop_ends_recv_unsubscribes_and_reports_an_empty_hub() -> None:
    recorder = Recorder()
    hub = make_hub(recorder)
    track = PeerVideoTrack(queue_size=4)
    hub.subscribe(track)
    waiting = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    track.stop()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiting, 1)
    assert len(hub) == 0 and recorder.emptied == [hub]
    with pytest.raises(MediaStreamError):
        await track.recv()
    hub.publish(packet(0, key=True))  # publishing to nobody is fine


async def test_hub_close_ends_every_viewer() -> None:
    hub = make_hub(Recorder())
    tracks = [PeerVideoTrack(queue_size=4) for _ in range(3)]
    for track in tracks:
        hub.subscribe(track)
    hub.close()
    assert len(hub) == 0 and all(t.readyState == "ended" for t in tracks)
