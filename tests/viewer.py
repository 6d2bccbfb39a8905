"""A real aiortc viewer for tests: negotiates over HTTP like a browser and decodes the video."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Awaitable, Callable

from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from robotcam.video.sources.testpattern import decode_frame_number

PostJson = Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]


class TrackReaders:
    """Reads every track a peer connection receives, calling on_frame(track, frame) for each
    frame until the track ends; close() ends the readers."""

    def __init__(self, pc: RTCPeerConnection, on_frame: Callable[[Any, Any], None]) -> None:
        self._on_frame = on_frame
        self._tasks: list[asyncio.Task[None]] = []

        @pc.on("track")
        def on_track(track: Any) -> None:
            self._tasks.append(asyncio.ensure_future(self._read(track)))

    async def _read(self, track: Any) -> None:
        try:
            while True:
                self._on_frame(track, await track.recv())
        except MediaStreamError:
            pass

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []


def advancing(numbers: list[int | None]) -> bool:
    """The decoded frame numbers only ever go up (unreadable frames, None, are skipped)."""
    decoded = [n for n in numbers if n is not None]
    return len(decoded) >= 2 and all(b > a for a, b in zip(decoded, decoded[1:]))


class Viewer:
    def __init__(self, codecs: tuple[str, ...] | None = None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.transceiver = self.pc.addTransceiver("video", direction="recvonly")
        if codecs:
            caps = RTCRtpSender.getCapabilities("video").codecs
            self.transceiver.setCodecPreferences(
                [c for c in caps if c.mimeType.split("/")[1] in codecs]
                + [c for c in caps if c.mimeType == "video/rtx"]
            )
        self.numbers: list[int | None] = []
        self.sizes: set[tuple[int, int]] = set()
        self.first_frame_at: float | None = None
        self.last_frame: Any = None
        self.offered_at: float | None = None
        self.answer: dict[str, Any] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._new_frame = asyncio.Event()

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self._reader = asyncio.ensure_future(self._read(track))

    async def _read(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                if self.first_frame_at is None:
                    self.first_frame_at = time.monotonic()
                self.sizes.add((frame.width, frame.height))
                self.last_frame = frame
                self.numbers.append(decode_frame_number(frame))
                self._new_frame.set()
        except MediaStreamError:
            pass

    async def offer(self) -> dict[str, Any]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}

    async def connect(self, post: PostJson) -> None:
        offer = await self.offer()
        self.offered_at = time.monotonic()
        status, body = await post(offer)
        assert status == 200, body
        self.answer = body
        await self.pc.setRemoteDescription(RTCSessionDescription(**body))

    @property
    def codec(self) -> str | None:
        for line in (self.answer or {}).get("sdp", "").splitlines():
            if line.startswith("a=rtpmap:"):
                return line.split()[1].split("/")[0].upper()
        return None

    async def wait_frames(self, count: int, timeout: float = 30.0) -> list[int | None]:
        """Wait (bounded) until `count` frames have been decoded."""
        deadline = time.monotonic() + timeout
        while len(self.numbers) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"got {len(self.numbers)} of {count} frames in {timeout} s")
            self._new_frame.clear()
            try:
                await asyncio.wait_for(self._new_frame.wait(), remaining)
            except asyncio.TimeoutError:
                pass
        return self.numbers

    async def close(self) -> None:
        await self.pc.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
