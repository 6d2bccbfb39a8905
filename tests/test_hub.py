"""The fan-out hub on its own: keyframe gating, slow viewers, unsubscribe."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
import pytest
from aiortc.mediastreams import MediaStreamError

from robotcam.video.hub import KEYFRAME_SPACING, PacketHub, PeerVideoTrack
from tests.conftest import wait_until


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


async def connected(track: PeerVideoTrack) -> asyncio.Future[av.Packet]:
    """What aiortc's sender does once DTLS is up: start reading."""
    first = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    return first


async def test_a_joining_viewer_asks_once_and_starts_at_the_newest_keyframe() -> None:
    recorder = Recorder()
    hub = make_hub(recorder)
    track = PeerVideoTrack(queue_size=10)
    hub.subscribe(track)
    assert recorder.keyframe_requests == 1, "a joining viewer should not wait a whole GOP"
    for n in range(3):  # before the join's keyframe: nothing to start at
        hub.publish(packet(n, key=False))
    hub.publish(packet(3, key=True))
    hub.publish(packet(4, key=False))
    pending = await connected(track)  # DTLS is up: it starts at the keyframe it kept
    hub.publish(packet(5, key=False))
    got = [await asyncio.wait_for(pending, 1)] + [await asyncio.wait_for(track.recv(), 1) for _ in range(2)]
    assert [p.pts // 3000 for p in got] == [3, 4, 5] and got[0].is_keyframe
    assert recorder.keyframe_requests == 1, "a fresh keyframe was waiting: nothing more to ask"


async def test_a_keyframe_gone_stale_before_connecting_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    import robotcam.video.hub

    monkeypatch.setattr(robotcam.video.hub, "FRESH_KEYFRAME", 0.05)
    monkeypatch.setattr(robotcam.video.hub, "KEYFRAME_SPACING", 0.1)
    recorder = Recorder()
    hub = make_hub(recorder)
    track = PeerVideoTrack(queue_size=10)
    hub.subscribe(track)
    hub.publish(packet(0, key=True))
    await asyncio.sleep(0.2)  # a slow handshake
    pending = await connected(track)
    await wait_until(lambda: recorder.keyframe_requests == 2, 2, "a fresh keyframe asked for")
    hub.publish(packet(9, key=True))
    assert (await asyncio.wait_for(pending, 1)).pts // 3000 == 9


async def test_a_slow_viewer_drops_to_the_next_keyframe_and_never_holds_up_others() -> None:
    recorder = Recorder()
    hub = make_hub(recorder)
    slow, fast = PeerVideoTrack(queue_size=4), PeerVideoTrack(queue_size=4)
    hub.subscribe(slow)
    hub.subscribe(fast)
    slow_first, fast_first = await connected(slow), await connected(fast)
    requests_after_join = recorder.keyframe_requests
    hub.publish(packet(0, key=True))
    assert (await slow_first).pts == 0 and (await fast_first).pts == 0  # then the slow one stops reading
    received: list[int] = [0]
    for n in range(1, 24):  # keyframes at 0, 10, 20; only the fast viewer reads
        hub.publish(packet(n, key=n % 10 == 0))  # synchronous: publishing cannot block
        received.append((await asyncio.wait_for(fast.recv(), 1)).pts // 3000)
    assert received == list(range(24))
    assert fast.packets_dropped == 0
    # the slow one overflowed: its stale packets went, it asked for a keyframe, and what it
    # holds now starts at the latest keyframe
    assert slow.packets_dropped > 0
    # asked for a keyframe: within a second of its join request, so deferred, never lost
    await wait_until(lambda: recorder.keyframe_requests > requests_after_join, KEYFRAME_SPACING + 2,
                     "the slow viewer's keyframe request reaches the encoder")
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


async def test_a_viewer_that_never_connects_costs_nothing() -> None:
    """Answered but never connected (a closed tab, blocked UDP): it keeps only the newest GOP
    and never asks again, so it never makes the encoder send everyone keyframes."""
    recorder = Recorder()
    hub = make_hub(recorder)
    ghost, watcher = PeerVideoTrack(queue_size=4), PeerVideoTrack(queue_size=4)
    hub.subscribe(ghost)
    hub.subscribe(watcher)
    first = await connected(watcher)
    for n in range(40):
        hub.publish(packet(n, key=n % 10 == 0))
        if n == 0:
            await first
        else:
            await asyncio.wait_for(watcher.recv(), 1)
    # each asked for one keyframe when it joined, and the ghost never for another
    assert recorder.keyframe_requests == 2 and ghost.keyframes_requested == 1
    assert ghost.packets_dropped == 0


async def test_one_viewers_keyframe_requests_are_spaced_but_not_lost() -> None:
    recorder = Recorder()
    hub = make_hub(recorder)
    lossy = PeerVideoTrack(queue_size=4)
    hub.subscribe(lossy)
    pending = await connected(lossy)
    assert recorder.keyframe_requests == 1
    for _ in range(50):  # a browser on a lossy link sending PLI after PLI
        lossy.request_keyframe()
        await asyncio.sleep(0.01)
    assert recorder.keyframe_requests == 1, "within the spacing: merged into one deferred request"
    await wait_until(lambda: recorder.keyframe_requests == 2, KEYFRAME_SPACING + 2, "the deferred request")
    await asyncio.sleep(0.1)
    assert recorder.keyframe_requests == 2 and lossy.keyframes_requested == 2
    lossy.stop()
    await asyncio.gather(pending, return_exceptions=True)


async def test_a_switch_moves_at_the_targets_keyframe_and_never_goes_back_in_time() -> None:
    """The smaller rung's encoder runs ahead of the bigger one's: the switch still converges,
    at a keyframe newer than anything the viewer was sent, and the old hub retires."""
    full_requests, low_requests = Recorder(), Recorder()
    full, low = make_hub(full_requests), PacketHub("H264", low_requests.request, low_requests.emptied.append, "H264/1", 1)
    track = PeerVideoTrack(queue_size=50)
    full.subscribe(track)
    first = await connected(track)
    full.publish(packet(0, key=True))
    sent = [(await first).pts // 3000]
    for n in range(1, 5):
        full.publish(packet(n, key=False))
    track.switch_to(low)
    assert low_requests.keyframe_requests == 1, "the target's keyframe is asked for at once"
    full.publish(packet(5, key=False))  # the old stream pauses while switching
    low.publish(packet(4, key=True))  # not newer than what was queued: refused, asked again
    assert low_requests.keyframe_requests == 2 and track.hub is full
    low.publish(packet(6, key=True))
    assert track.hub is low and len(full) == 0 and full_requests.emptied == [full]
    low.publish(packet(7, key=False))
    while len(sent) < 7:
        sent.append((await asyncio.wait_for(track.recv(), 1)).pts // 3000)
    assert sent == [0, 1, 2, 3, 4, 6, 7]


async def test_a_switch_can_let_the_old_rungs_queue_drain_first() -> None:
    """Leaving a rung the link could not carry: nothing is sent for the drain, and only then is
    the target's keyframe asked for and taken (one sent into the full queue would be lost)."""
    low_requests = Recorder()
    full, low = make_hub(Recorder()), PacketHub("H264", low_requests.request, None, "H264/1", 1)
    track = PeerVideoTrack(queue_size=50)
    full.subscribe(track)
    first = await connected(track)
    full.publish(packet(0, key=True))
    await first
    track.switch_to(low, drain=0.2)
    full.publish(packet(1, key=False))  # the old stream pauses at once
    low.publish(packet(2, key=True))  # a keyframe during the drain is not taken
    assert low_requests.keyframe_requests == 0 and track.hub is full
    await wait_until(lambda: low_requests.keyframe_requests == 1, 2, "the keyframe asked for after the drain")
    low.publish(packet(8, key=True))
    assert track.hub is low
    assert (await asyncio.wait_for(track.recv(), 1)).pts // 3000 == 8


async def test_a_switch_without_a_keyframe_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import robotcam.video.hub

    monkeypatch.setattr(robotcam.video.hub, "SWITCH_TIMEOUT", 0.2)
    full, low = make_hub(Recorder()), PacketHub("H264", Recorder().request, None, "H264/1", 1)
    track = PeerVideoTrack(queue_size=50)
    full.subscribe(track)
    first = await connected(track)
    full.publish(packet(0, key=True))
    await first
    track.switch_to(low)
    await asyncio.sleep(0.4)
    assert track.hub is full and len(low._pending) == 0
    full.publish(packet(1, key=False))  # waits for the old stream's next keyframe...
    full.publish(packet(2, key=True))
    assert (await asyncio.wait_for(track.recv(), 1)).pts // 3000 == 2
