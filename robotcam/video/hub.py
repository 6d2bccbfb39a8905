"""Fan-out of encoded packets to per-peer tracks.

aiortc's MediaRelay has the right shape (subscribe() returns a per-peer track) but the wrong
queues for encoded video: unbounded (`buffered=True`: an overloaded robot builds seconds of delay)
or keep-latest (`buffered=False`: a dropped H.264 packet corrupts the picture until the next
keyframe, silently). Here every peer has a bounded queue; a peer that falls behind is emptied and
waits for the next keyframe (as MediaMTX's per-reader ring buffer does), and asks for one, so a
slow viewer never blocks the hub or any other viewer.

One viewer must not make the encoder send keyframes to everyone. A joining track asks for one
keyframe, and until its sender starts reading (aiortc starts it once DTLS is up) it keeps just
the newest keyframe and what follows it, asking for nothing more: a viewer that never connects
costs nothing, and one that does finds a fresh keyframe waiting (one older than
FRESH_KEYFRAME is dropped and a new one asked for). Its requests (join, overflow, its browser's
PLIs) reach the shared encoder at most once per KEYFRAME_SPACING; a request in between is
deferred to the end of that spacing, not lost.

A track can move to another hub of the same codec (another rung of the rendition ladder): it
stops taking the old hub's packets, waits on the target as a pending reader and moves at the
target's next keyframe, which it asks for at once (a frame or two: the picture holds still
that long, never broken), or, leaving a rung the viewer's link could not carry, once the queue
that rung filled on the way has had time to drain. Pausing the old stream first is what makes the switch converge: the
target's keyframe must be newer than the last packet sent, and a smaller rung's encoder runs
ahead of a bigger one's. A target that sends no keyframe within SWITCH_TIMEOUT is given up and
the old stream resumes. Nothing is renegotiated (same codec, payload type and clock).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

KEYFRAME_SPACING = 1.0  # seconds between one viewer's keyframe requests reaching the encoder
SWITCH_TIMEOUT = 2.0  # seconds a switch waits for the target's keyframe before giving up
FRESH_KEYFRAME = 0.5  # seconds: a keyframe kept before connecting is still worth starting at


class PeerVideoTrack(MediaStreamTrack):
    """One viewer's view of a shared encoded stream.

    recv() returns the hub's `av.Packet`s, which aiortc's RTCRtpSender packetizes without
    re-encoding. aiortc stops this track when its peer ends; that unsubscribes it, and the
    shared source and encoder go on for everyone else.
    """

    kind = "video"

    def __init__(self, queue_size: int, number: int = 0) -> None:
        super().__init__()
        self.number = number  # the viewer's session id, for log lines
        self._queue: asyncio.Queue[av.Packet | None] = asyncio.Queue(queue_size)
        self._hub: PacketHub | None = None
        self.waiting_for_keyframe = True
        self.packets_sent = 0
        self.bytes_sent = 0
        self.packets_dropped = 0
        self.keyframe_requests = 0  # asked for (join, overflow, PLI/FIR)
        self.keyframes_requested = 0  # of those, passed on to the encoder
        self.reading = False  # the sender has started (the viewer is connected)
        self.switches = 0
        self._last_request = float("-inf")
        self._keyframe_at = float("-inf")  # when the queued GOP's keyframe arrived
        self._deferred: asyncio.TimerHandle | None = None
        self._next_hub: PacketHub | None = None  # a switch waiting for that hub's keyframe
        self._switch_timer: asyncio.TimerHandle | None = None  # the drain's end, then the give-up
        self._switch_from = 0.0  # loop time: the switch takes no keyframe before (the drain)
        self._last_pts = -1  # of the newest packet queued: a switch must not go back in time

    @property
    def codec(self) -> str | None:
        return self._hub.codec if self._hub else None

    @property
    def hub(self) -> PacketHub | None:
        return self._hub

    def switch_to(self, hub: PacketHub, drain: float = 0.0) -> None:
        """Move to `hub` at its next keyframe; the old stream pauses until then. The keyframe is
        asked for now, or after `drain` seconds: a viewer leaving a rung its link could not
        carry has a queue of it on the way, which would drop the new keyframe; sending nothing
        meanwhile lets it empty."""
        self._cancel_switch()
        if hub is self._hub:
            return
        if not self.reading or self._hub is None:  # nothing on screen yet: move at once
            old, self._hub = self._hub, hub
            hub.add(self)
            if old is not None:
                old.unsubscribe(self)
            return
        self._next_hub = hub
        hub.add_pending(self)
        loop = asyncio.get_running_loop()
        self._switch_from = loop.time() + drain
        if drain > 0:
            self._switch_timer = loop.call_later(drain, self._ask_for_switch)
        else:
            self._ask_for_switch()

    def _ask_for_switch(self) -> None:
        if self._next_hub is not None:
            self._next_hub.request_keyframe()
            self._switch_timer = asyncio.get_running_loop().call_later(SWITCH_TIMEOUT, self._give_up_switch)

    def _cancel_switch(self) -> None:
        if self._switch_timer is not None:
            self._switch_timer.cancel()
            self._switch_timer = None
        if self._next_hub is not None:
            self._next_hub.forget_pending(self)
            self._next_hub = None

    def _give_up_switch(self) -> None:
        self._switch_timer = None
        if self._next_hub is not None:
            log.warning("viewer track %d: no keyframe from %s within %.0f s: staying on %s",
                        self.number, self._next_hub.name, SWITCH_TIMEOUT, self._hub.name if self._hub else "-")
            self._cancel_switch()
            self.waiting_for_keyframe = True  # resume the old stream at its next keyframe
            self.request_keyframe()

    def _offer_pending(self, hub: PacketHub, packet: av.Packet) -> None:
        """A packet of the hub this track is switching to: the switch happens at a keyframe
        (after the drain)."""
        if not packet.is_keyframe or asyncio.get_running_loop().time() < self._switch_from:
            return
        if packet.pts is not None and packet.pts <= self._last_pts:
            hub.request_keyframe()  # the target lags a frame behind: its next one will do
            return
        old, self._hub, self._next_hub = self._hub, hub, None
        if self._switch_timer is not None:
            self._switch_timer.cancel()
            self._switch_timer = None
        hub.forget_pending(self, retire=False)
        hub.add(self)
        if old is not None:
            old.unsubscribe(self)
        self.switches += 1
        self.waiting_for_keyframe = True  # this keyframe starts the new rung
        self._offer(packet)

    def _attach(self, hub: PacketHub) -> None:
        self._hub = hub

    def _offer(self, packet: av.Packet) -> None:
        """Called by the hub on the event loop for every packet."""
        if self._next_hub is not None:  # switching away: the old stream pauses
            return
        if not self.reading and packet.is_keyframe:  # not connected yet: keep the newest GOP
            self._start_over()
        if self.waiting_for_keyframe:
            if not packet.is_keyframe:
                return
            self.waiting_for_keyframe = False
            self._keyframe_at = asyncio.get_running_loop().time()
        try:
            self._queue.put_nowait(packet)
            if packet.pts is not None:
                self._last_pts = packet.pts
        except asyncio.QueueFull:
            if not self.reading:  # a GOP longer than the queue before connecting: the next one
                self._start_over()
                return
            # Fallen behind: what is queued is stale, and a partial GOP is useless. Start over
            # at the next keyframe, and ask for one so the wait is short.
            dropped = self._start_over() + 1
            self.packets_dropped += dropped
            self.waiting_for_keyframe = True
            log.debug("viewer track %d fell behind: dropped %d packets", self.number, dropped)
            self.request_keyframe()

    def _start_over(self) -> int:
        """Empty the queue and wait for the next keyframe; how many packets went."""
        dropped = self._queue.qsize()
        while not self._queue.empty():
            self._queue.get_nowait()
        self.waiting_for_keyframe = True
        return dropped

    def request_keyframe(self) -> None:
        """Called on join, on overflow, and on a PLI/FIR from the viewer's browser; spaced."""
        self.keyframe_requests += 1
        if self._hub is None or self._deferred is not None:
            return
        if not self.reading and self.keyframe_requests > 1:  # only the join's, before connecting
            return
        loop = asyncio.get_running_loop()
        wait = self._last_request + KEYFRAME_SPACING - loop.time()
        if wait <= 0:
            self._pass_on()
        else:
            self._deferred = loop.call_later(wait, self._pass_on)

    def _pass_on(self) -> None:
        self._deferred = None
        if self._hub is None or self.readyState != "live":
            return
        self._last_request = asyncio.get_running_loop().time()
        self.keyframes_requested += 1
        self._hub.request_keyframe()

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        if not self.reading:
            self.reading = True
            now = asyncio.get_running_loop().time()
            if now - self._keyframe_at > FRESH_KEYFRAME:  # stale, or none yet: a fresh one
                self._start_over()
                if now - self._last_request > FRESH_KEYFRAME:  # the join's is not on its way
                    self.request_keyframe()
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        self.packets_sent += 1
        self.bytes_sent += packet.size
        return packet

    def stop(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
        self._cancel_switch()
        if self.readyState == "live":
            super().stop()
            if self._hub is not None:
                self._hub.unsubscribe(self)
            try:
                self._queue.put_nowait(None)  # wake a pending recv()
            except asyncio.QueueFull:
                self._queue.get_nowait()
                self._queue.put_nowait(None)


class PacketHub:
    """Publishes one stream's packets (a codec at one rung) to every subscribed PeerVideoTrack,
    and its keyframes to tracks switching to it. Event-loop only."""

    def __init__(
        self,
        codec: str,
        request_keyframe: Callable[[], None],
        on_empty: Callable[[PacketHub], None] | None = None,
        name: str | None = None,
        rung: int = 0,
    ) -> None:
        self.codec = codec
        self.name = name or codec  # "H264", or "H264/1" for rung 1
        self.rung = rung
        self._request_keyframe = request_keyframe
        self._on_empty = on_empty
        self._tracks: set[PeerVideoTrack] = set()
        self._pending: set[PeerVideoTrack] = set()  # switching here at the next keyframe
        self.packets_published = 0

    def __len__(self) -> int:
        return len(self._tracks)

    @property
    def tracks(self) -> frozenset[PeerVideoTrack]:
        return frozenset(self._tracks)

    def subscribe(self, track: PeerVideoTrack) -> None:
        track._attach(self)
        self._tracks.add(track)
        track.request_keyframe()  # a joining viewer should not wait a whole GOP

    def add(self, track: PeerVideoTrack) -> None:
        """A switching track arrives (it has set itself up)."""
        self._tracks.add(track)

    def add_pending(self, track: PeerVideoTrack) -> None:
        self._pending.add(track)

    def forget_pending(self, track: PeerVideoTrack, retire: bool = True) -> None:
        self._pending.discard(track)
        if retire:
            self._maybe_empty()

    def unsubscribe(self, track: PeerVideoTrack) -> None:
        self._tracks.discard(track)
        self._maybe_empty()

    def _maybe_empty(self) -> None:
        if not self._tracks and not self._pending and self._on_empty is not None:
            self._on_empty(self)

    def publish(self, packet: av.Packet) -> None:
        self.packets_published += 1
        for track in tuple(self._tracks):
            track._offer(packet)
        if packet.is_keyframe:
            for track in tuple(self._pending):
                track._offer_pending(self, packet)

    def request_keyframe(self) -> None:
        self._request_keyframe()

    def close(self) -> None:
        """End every track (their peers see end of stream)."""
        for track in tuple(self._pending):  # they play from another hub: they just stay there
            track.switch_to(track.hub) if track.hub is not None else track.stop()
        for track in tuple(self._tracks):
            track.stop()
