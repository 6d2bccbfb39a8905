"""The video pipeline: one source, one encoder per codec in use, one hub per encoder.

It owns the singletons. Peers never open, stop or encode anything: they get a per-peer track
attached to the hub of the codec they negotiated. An encoder runs only while its hub has viewers
(VP8 only ever starts for a browser without H.264), so an unwatched robot spends no CPU on
encoding. A supervisor restarts a source that fails, ends or stalls, with capped backoff, while
peers stay connected and resume at the next keyframe.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Callable

import av

from robotcam.config import VideoConfig
from robotcam.encoder import ENCODERS, TIME_BASE, EncoderSettings, FrameEncoder
from robotcam.hub import PacketHub, PeerVideoTrack
from robotcam.sources import VideoSource, open_source

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
FPS_WINDOW = 2.0  # seconds of frame times behind the measured fps

SourceFactory = Callable[[VideoConfig], tuple[VideoSource, str]]


def encoder_settings(video: VideoConfig) -> EncoderSettings:
    return EncoderSettings(
        fps=video.fps, bitrate=video.bitrate,
        keyframe_interval=video.keyframe_interval, preset=video.encoder_preset,
    )


class VideoPipeline:
    def __init__(self, video: VideoConfig, source_factory: SourceFactory = open_source) -> None:
        self.video = video
        self._source_factory = source_factory
        self._loop: asyncio.AbstractEventLoop | None = None
        self._source: VideoSource | None = None
        self.source_name = video.source
        self.source_reason = ""
        self.state = "stopped"
        self.reason: str | None = None
        self.restarts = 0
        self._hubs: dict[str, PacketHub] = {}
        self._encoders: dict[str, FrameEncoder] = {}
        self._active: tuple[FrameEncoder, ...] = ()  # read by the source thread
        self._retired: list[FrameEncoder] = []
        self._supervisor: asyncio.Task[None] | None = None
        self._epoch = time.monotonic()
        self._last_pts = -1
        self._frame_times: collections.deque[float] = collections.deque(maxlen=512)
        self.frames_produced = 0
        self.last_frame_at: float | None = None
        self._source_started_at = 0.0
        self.first_frame = asyncio.Event()
        self._source_lock = asyncio.Lock()  # one restart at a time: supervisor or reload

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the source (a SourceError means it cannot be used) and supervise it."""
        self._loop = asyncio.get_running_loop()
        await self._open_source()
        self._supervisor = asyncio.create_task(self._supervise(), name="robotcam-supervisor")

    async def stop(self) -> None:
        """Reverse order of start: viewers' tracks, encoders, then the source."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        for hub in list(self._hubs.values()):
            hub.close()
        for codec in list(self._encoders):
            self._retire(codec)
        retired, self._retired = self._retired, []
        await asyncio.to_thread(lambda: [enc.join() for enc in retired])
        await self._close_source()
        self.state = "stopped"

    async def reconfigure(self, video: VideoConfig) -> None:
        """Apply new video settings: encoders take bitrate/GOP at their next frame; a new
        source, size or rate restarts the source while viewers stay attached."""
        old, self.video = self.video, video
        if encoder_settings(old) != encoder_settings(video):
            for encoder in self._encoders.values():
                encoder.update(encoder_settings(video))
        if (old.source, old.width, old.height, old.fps) != (video.source, video.width, video.height, video.fps):
            log.info("video settings changed: restarting the source")
            async with self._source_lock:
                await self._close_source()
                try:
                    await self._open_source()
                except Exception as exc:
                    # keep the robot streaming: back to the settings that worked
                    log.error("%s; keeping the previous video settings", exc)
                    self.video = old
                    await self._open_source()
                    raise

    async def _open_source(self) -> None:
        source, why = await asyncio.to_thread(self._source_factory, self.video)
        self.source_name, self.source_reason = source.name, why
        self._source = source
        self._source_started_at = time.monotonic()
        self.state, self.reason = "starting", None
        source.start(self._on_frame)
        log.info("video source: %s (%s)", source.name, why)

    async def _close_source(self) -> None:
        source, self._source = self._source, None
        if source is not None:
            await asyncio.to_thread(source.stop)

    # --- frames in (source thread) ----------------------------------------------------------

    def _on_frame(self, frame: av.VideoFrame) -> None:
        now = time.monotonic()
        pts = round((now - self._epoch) / TIME_BASE)
        if pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        frame.pts, frame.time_base = pts, TIME_BASE
        self.frames_produced += 1
        self.last_frame_at = now
        self._frame_times.append(now)
        if self.frames_produced == 1 or self.state != "running":
            self._call_soon(self._frames_flowing)
        for encoder in self._active:
            encoder.submit(frame)

    def _frames_flowing(self) -> None:
        if self.state in ("starting", "stalled"):
            if self.restarts:
                log.info("video source %s recovered: frames flowing again", self.source_name)
            self.state, self.reason = "running", None
        self.first_frame.set()

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # loop closed between the check and the call: shutting down
            pass

    # --- viewers ----------------------------------------------------------------------------

    def queue_size(self) -> int:
        """Per-viewer queue: half a second of frames, enough for a scheduling hiccup."""
        return max(8, round(self.video.fps / 2))

    def attach(self, track: PeerVideoTrack, codec: str) -> None:
        """Subscribe a viewer's track to the codec's hub, starting its encoder if idle."""
        hub = self._hubs.get(codec)
        if hub is None:
            encoder = ENCODERS[codec](encoder_settings(self.video), self._publisher(codec))
            hub = PacketHub(codec, encoder.request_keyframe, self._hub_empty)
            self._hubs[codec], self._encoders[codec] = hub, encoder
            encoder.start()
            self._active = tuple(self._encoders.values())
            log.info("%s encoder started for the first viewer", codec)
        hub.subscribe(track)

    def _publisher(self, codec: str) -> Callable[[av.Packet], None]:
        def publish(packet: av.Packet) -> None:  # encoder thread
            hub = self._hubs.get(codec)
            if hub is not None:
                self._call_soon(hub.publish, packet)
        return publish

    def _hub_empty(self, hub: PacketHub) -> None:
        if self._hubs.get(hub.codec) is hub:
            self._retire(hub.codec)
            log.info("%s encoder stopped: no viewers left", hub.codec)

    def _retire(self, codec: str) -> None:
        self._hubs.pop(codec, None)
        encoder = self._encoders.pop(codec, None)
        self._active = tuple(self._encoders.values())
        if encoder is not None:
            encoder.close()  # the thread ends by itself; stop() joins it
            self._retired = [e for e in self._retired if e.alive] + [encoder]

    @property
    def encoders(self) -> dict[str, FrameEncoder]:
        return dict(self._encoders)

    @property
    def viewers(self) -> int:
        return sum(len(hub) for hub in self._hubs.values())

    # --- supervision ------------------------------------------------------------------------

    def _source_problem(self) -> str | None:
        source = self._source
        if source is None:
            return self.reason or "no video source"
        if not source.running:
            return (f"{source.name} source failed: {source.error!r}" if source.error
                    else f"{source.name} source ended")
        last = max(self.last_frame_at or 0.0, self._source_started_at)
        idle = time.monotonic() - last
        if idle > self.video.stall_timeout:
            return f"{source.name} source produced no frame for {idle:.1f} s"
        return None

    async def _supervise(self) -> None:
        """Restart a failed, ended or stalled source with capped exponential backoff. One log
        line per failure and one per recovery, never a traceback per frame."""
        backoff = BACKOFF_FIRST
        tick = min(0.5, self.video.stall_timeout / 4)
        while True:
            await asyncio.sleep(tick)
            async with self._source_lock:
                problem = self._source_problem()
                if problem is None:
                    if self.healthy():
                        backoff = BACKOFF_FIRST
                    continue
                self.state = "stalled" if self._source and self._source.running else "failed"
                self.reason = problem
                self.restarts += 1
                log.error("%s; restarting it in %.0f s", problem, backoff)
                await self._close_source()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            async with self._source_lock:
                if self._source is not None:
                    continue  # a reload opened one meanwhile
                try:
                    await self._open_source()
                    self.reason = f"restarted after: {problem}"
                except Exception as exc:  # noqa: BLE001 - stays failed, retried next tick
                    self.state, self.reason = "failed", f"cannot reopen video source: {exc}"
                    log.error("%s", self.reason)

    # --- measurements -----------------------------------------------------------------------

    def measured_fps(self) -> float:
        now = time.monotonic()
        times = [t for t in tuple(self._frame_times) if now - t <= FPS_WINDOW]
        if len(times) < 2:
            return 0.0
        return (len(times) - 1) / max(1e-6, times[-1] - times[0])

    def last_frame_age(self) -> float | None:
        return None if self.last_frame_at is None else time.monotonic() - self.last_frame_at

    def healthy(self) -> bool:
        age = self.last_frame_age()
        return self.state == "running" and age is not None and age <= self.video.stall_timeout

    def snapshot(self) -> dict[str, Any]:
        age = self.last_frame_age()
        return {
            "source": self.source_name,
            "source_reason": self.source_reason,
            "state": self.state,
            "reason": self.reason,
            "restarts": self.restarts,
            "width": self.video.width,
            "height": self.video.height,
            "fps_configured": self.video.fps,
            "fps_measured": round(self.measured_fps(), 2),
            "frames_produced": self.frames_produced,
            "last_frame_age": None if age is None else round(age, 3),
            "encoders": {
                codec: {
                    "frames_encoded": enc.frames_encoded,
                    "frames_skipped": enc.frames_skipped,
                    "keyframes": enc.keyframes_out,
                    "viewers": len(self._hubs[codec]) if codec in self._hubs else 0,
                }
                for codec, enc in self._encoders.items()
            },
        }

