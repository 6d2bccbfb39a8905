"""Fan-out of sound to per-viewer tracks, each with a small drop-oldest queue.

Every viewer gets its own PeerAudioTrack, never the source: aiortc stops a sender's track when
its peer ends, and that must not stop the microphone for everyone else. For sound the right
policy on overflow is the opposite of video's: there is no keyframe to wait for, every Opus
packet decodes on its own, so a viewer that falls behind loses its oldest packets and stays
at most a queue's worth (QUEUE_SIZE x 20 ms) behind, never more.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable, Union

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

QUEUE_SIZE = 10  # 200 ms of 20 ms packets
Item = Union[av.Packet, av.AudioFrame]


class PeerAudioTrack(MediaStreamTrack):
    """One viewer's sound. recv() returns shared Opus `av.Packet`s (aiortc's sender packs them
    as they are) or, when the encoder is per viewer, `av.AudioFrame`s for aiortc to encode."""

    kind = "audio"

    def __init__(self, number: int = 0, queue_size: int = QUEUE_SIZE) -> None:
        super().__init__()
        self.number = number
        self._queue: asyncio.Queue[Item | None] = asyncio.Queue(queue_size)
        self._hub: AudioHub | None = None
        self.sent = 0
        self.dropped = 0

    def _offer(self, item: Item) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(item)

    async def recv(self) -> Item:
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._queue.get()
        if item is None:
            raise MediaStreamError
        self.sent += 1
        return item

    def stop(self) -> None:
        if self.readyState == "live":
            super().stop()
            if self._hub is not None:
                self._hub.unsubscribe(self)
            if self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(None)  # wake a pending recv()


class AudioHub:
    """Publishes sound to every subscribed PeerAudioTrack. Event-loop only.

    `on_first`/`on_empty` start and stop the shared encoder: nobody listening, nothing encoded."""

    def __init__(
        self,
        on_first: Callable[[], None] | None = None,
        on_empty: Callable[[], None] | None = None,
    ) -> None:
        self._tracks: set[PeerAudioTrack] = set()
        self._on_first = on_first
        self._on_empty = on_empty
        self.published = 0

    def __len__(self) -> int:
        return len(self._tracks)

    def subscribe(self, track: PeerAudioTrack) -> None:
        if track.readyState != "live":
            return
        track._hub = self
        first = not self._tracks
        self._tracks.add(track)
        if first and self._on_first is not None:
            self._on_first()

    def unsubscribe(self, track: PeerAudioTrack) -> None:
        if track in self._tracks:
            self._tracks.discard(track)
            if not self._tracks and self._on_empty is not None:
                self._on_empty()

    def publish(self, item: Item) -> None:
        self.published += 1
        for track in tuple(self._tracks):
            track._offer(item)

    def close(self) -> None:
        """End every track (their senders see the end of the stream)."""
        for track in tuple(self._tracks):
            track.stop()
