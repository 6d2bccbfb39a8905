"""Fan-out of encoded packets to per-peer tracks.

aiortc's MediaRelay has the right shape (subscribe() returns a per-peer track) but the wrong
queues for encoded video: unbounded (`buffered=True`: an overloaded robot builds seconds of delay)
or keep-latest (`buffered=False`: a dropped H.264 packet corrupts the picture until the next
keyframe, silently). Here every peer has a bounded queue; a peer that falls behind is emptied and
waits for the next keyframe (as MediaMTX's per-reader ring buffer does), and asks for one, so a
slow viewer never blocks the hub or any other viewer.

One viewer must not make the encoder send keyframes to everyone: a track queues nothing and
asks for nothing until its sender starts reading (aiortc starts it once DTLS is up, so a viewer
that never connects costs nothing), and its own requests (join, overflow, its browser's PLIs)
reach the shared encoder at most once per KEYFRAME_SPACING; a request in between is deferred
to the end of that spacing, not lost.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

KEYFRAME_SPACING = 1.0  # seconds between one viewer's keyframe requests reaching the encoder


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
        self.packets_dropped = 0
        self.keyframe_requests = 0  # asked for (join, overflow, PLI/FIR)
        self.keyframes_requested = 0  # of those, passed on to the encoder
        self.reading = False  # the sender has started (the viewer is connected)
        self._last_request = float("-inf")
        self._deferred: asyncio.TimerHandle | None = None

    @property
    def codec(self) -> str | None:
        return self._hub.codec if self._hub else None

    def _attach(self, hub: PacketHub) -> None:
        self._hub = hub

    def _offer(self, packet: av.Packet) -> None:
        """Called by the hub on the event loop for every packet."""
        if not self.reading:  # not connected yet: its first recv() asks for a keyframe
            return
        if self.waiting_for_keyframe:
            if not packet.is_keyframe:
                return
            self.waiting_for_keyframe = False
        try:
            self._queue.put_nowait(packet)
        except asyncio.QueueFull:
            # Fallen behind: what is queued is stale, and a partial GOP is useless. Start over
            # at the next keyframe, and ask for one so the wait is short.
            dropped = self._queue.qsize() + 1
            while not self._queue.empty():
                self._queue.get_nowait()
            self.packets_dropped += dropped
            self.waiting_for_keyframe = True
            log.debug("viewer track %d fell behind: dropped %d packets", self.number, dropped)
            self.request_keyframe()

    def request_keyframe(self) -> None:
        """Called on join, on overflow, and on a PLI/FIR from the viewer's browser; spaced."""
        self.keyframe_requests += 1
        if self._hub is None or not self.reading or self._deferred is not None:
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
            self.request_keyframe()  # connected: start at a fresh keyframe, now
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        self.packets_sent += 1
        return packet

    def stop(self) -> None:
        if self._deferred is not None:
            self._deferred.cancel()
            self._deferred = None
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
    """Publishes one codec's packets to every subscribed PeerVideoTrack. Event-loop only."""

    def __init__(
        self,
        codec: str,
        request_keyframe: Callable[[], None],
        on_empty: Callable[[PacketHub], None] | None = None,
    ) -> None:
        self.codec = codec
        self._request_keyframe = request_keyframe
        self._on_empty = on_empty
        self._tracks: set[PeerVideoTrack] = set()
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

    def unsubscribe(self, track: PeerVideoTrack) -> None:
        self._tracks.discard(track)
        if not self._tracks and self._on_empty is not None:
            self._on_empty(self)

    def publish(self, packet: av.Packet) -> None:
        self.packets_published += 1
        for track in tuple(self._tracks):
            track._offer(packet)

    def request_keyframe(self) -> None:
        self._request_keyframe()

    def close(self) -> None:
        """End every track (their peers see end of stream)."""
        for track in tuple(self._tracks):
            track.stop()
