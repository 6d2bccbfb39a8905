"""The video pipeline: one source, one producer per codec in use, one hub per codec.

It owns the singletons. Peers never open, stop or encode anything: they get a per-peer track
attached to the hub of the codec they negotiated. What feeds a hub depends on the source:

  frame source (test pattern, USB camera, file)  -> prepare once -> H264Encoder / VP8Encoder
  H.264 source (Pi camera's own encoder)         -> packets as they are (H.264 hub)
                                                 -> Transcoder (VP8 hub, only for VP8 viewers)
  its lores stream (only while a lower rung runs) -> H264Encoder / VP8Encoder per lower rung

A producer runs only while its hub has viewers, so an unwatched robot spends nothing on
encoding. Each codec also has lower rungs (robotcam/video/rungs.py): the prepared frame (or the
Pi camera's lores picture) is scaled once per rung in use and encoded once per rung, and a
viewer's track moves between the hubs of its codec at a keyframe (`switch`). Hubs and
producers are keyed by stream: "H264" for rung 0, "H264/1" for rung 1. A supervisor restarts
a source that fails, ends or stalls, with capped backoff, while peers stay connected and
resume at the next keyframe.

One pipeline is one camera (video/cameras.py holds them all). Every camera's packets are stamped
on one shared clock, so a viewer's track can move from one camera's hub to another's at a
keyframe and its RTP timestamps still only go forward.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from typing import Any, Callable, Protocol

import av

from robotcam.config import VideoConfig
from robotcam.video.encoder import (
    ENCODERS,
    TIME_BASE,
    EncoderSettings,
    FrameEncoder,
    Transcoder,
    choose_h264_codec,
)
from robotcam.video.hub import PacketHub, PeerVideoTrack
from robotcam.video.sources import SourceError, VideoSource, open_source
from robotcam.video.rungs import Rung, ladder
from robotcam.video.sources.select import fallback
from robotcam.video.stills import LatestPicture
from robotcam.video.transform import prepare

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
STILL_MAX_AGE = 2.0  # seconds: an older newest frame is no current picture
FPS_WINDOW = 2.0  # seconds of frame times behind the measured fps

#: producer counters that /metrics reports as totals, kept across producers' lives
COUNTED = ("frames_encoded", "frames_skipped", "keyframes_forced")

SourceFactory = Callable[[VideoConfig], tuple[VideoSource, str]]


class CameraLog(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Log lines of one camera, named when the robot has several: "[arm] video source: ..."."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        prefix = self.extra.get("prefix", "") if self.extra else ""
        return f"{prefix}{msg}", kwargs


class Producer(Protocol):
    """What feeds one hub: an encoder thread, a transcoder, or the source itself."""

    codec: str

    def start(self) -> None: ...
    def request_keyframe(self) -> None: ...
    def update(self, settings: EncoderSettings) -> None: ...
    def close(self) -> None: ...
    def join(self, timeout: float = 2.0) -> None: ...

    @property
    def alive(self) -> bool: ...
    @property
    def implementation(self) -> str: ...


class SourcePackets:
    """The H.264 hub's producer when the source encodes itself: nothing to run; keyframe
    requests go to the source's encoder."""

    codec = "H264"

    def __init__(self, pipeline: VideoPipeline) -> None:
        self._pipeline = pipeline
        self.frames_encoded = 0  # encoded by the camera; counted by the pipeline as they pass
        self.frames_skipped = 0
        self.keyframes_out = 0
        self.keyframes_forced = 0  # requests passed to the camera, which merges close ones
        self.alive = True

    @property
    def implementation(self) -> str:
        source = self._pipeline.source
        described = source.describe().get("encoder") if source else None
        return f"camera ({described})" if described else "camera"

    def start(self) -> None: ...

    def request_keyframe(self) -> None:
        source = self._pipeline.source
        if source is not None:
            self.keyframes_forced += 1
            source.request_keyframe()

    def update(self, settings: EncoderSettings) -> None: ...

    def close(self) -> None:
        self.alive = False

    def join(self, timeout: float = 2.0) -> None: ...


def encoder_settings(video: VideoConfig, h264_codec: str = "libx264", rung: Rung | None = None) -> EncoderSettings:
    return EncoderSettings(
        fps=rung.fps if rung else video.fps, bitrate=rung.bitrate if rung else video.bitrate,
        keyframe_interval=video.keyframe_interval, preset=video.encoder_preset, h264_codec=h264_codec,
    )


def stream_key(codec: str, rung: int) -> str:
    return codec if rung == 0 else f"{codec}/{rung}"


class VideoPipeline:
    def __init__(
        self, video: VideoConfig, source_factory: SourceFactory = open_source, name: str = "main",
        epoch: float | None = None, taken: Callable[[], frozenset[str]] = frozenset,
        named_logs: bool = False,
    ) -> None:
        """`epoch`: the clock every camera shares (monotonic seconds at pts 0); `taken`: the
        devices other cameras hold, which `auto` passes over."""
        self.video = video
        self.name = name
        self.log = CameraLog(log, {"prefix": f"[{name}] " if named_logs else ""})
        self._source_factory = source_factory
        self._taken = taken
        self._loop: asyncio.AbstractEventLoop | None = None
        self.source: VideoSource | None = None
        self.source_name = video.source
        self.source_reason = ""
        self.state = "stopped"
        self.reason: str | None = None
        self.restarts = 0
        self.h264_codec = "libx264"
        self.h264_codec_reason = ""
        self._hubs: dict[str, PacketHub] = {}  # by stream key: "H264", "H264/1", "VP8"
        self._producers: dict[str, Producer] = {}
        self._rungs: list[Rung] = ladder(video)
        # what the source thread feeds: (encoder, its rung), swapped whole, never mutated
        self._frame_encoders: tuple[tuple[FrameEncoder, Rung], ...] = ()
        self._rung_last_pts: dict[int, int] = {}  # source thread only: frame-rate decimation
        self._transcoder: Transcoder | None = None  # read by the source thread
        self._retired: list[Producer] = []
        self._counted: dict[str, collections.Counter[str]] = {}  # of producers gone, per codec
        self._built_for = "frames"  # the kind of source the producers are built for
        self._lores = False  # an encoding source's lores stream feeds the lower rungs
        self._supervisor: asyncio.Task[None] | None = None
        self._epoch = time.monotonic() if epoch is None else epoch
        self._last_pts = -1
        self._clock_offset: float | None = None  # source clock -> pipeline clock, per source
        self._frame_times: collections.deque[float] = collections.deque(maxlen=512)
        self.frames_produced = 0
        self.last_frame_at: float | None = None
        self._source_started_at = 0.0
        self.first_frame = asyncio.Event()
        self.latest = LatestPicture()  # for stills: a reference to the newest picture
        self._source_lock = asyncio.Lock()  # one restart at a time: supervisor or reload

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self, required: bool = True) -> None:
        """Open the source and supervise it. A source that cannot be opened raises (SourceError:
        it cannot be used) when `required`; otherwise the camera starts failed, says why, and
        the supervisor retries it with backoff (a USB camera plugged in later comes up)."""
        self._loop = asyncio.get_running_loop()
        await self._choose_h264_codec()
        try:
            await self._open_source()
        except Exception as exc:
            if required:
                raise
            self.state, self.reason = "failed", f"cannot open video source: {exc}"
            self.log.error("%s; retrying", self.reason)
        self._supervisor = asyncio.create_task(self._supervise(), name=f"robotcam-supervisor-{self.name}")

    async def stop(self) -> None:
        """Reverse order of start: viewers' tracks, encoders, then the source."""
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        for hub in list(self._hubs.values()):
            hub.close()
        for codec in list(self._producers):
            self._retire(codec)
        await self._join_retired()
        await self._close_source()
        self.state = "stopped"

    async def _join_retired(self) -> None:
        retired, self._retired = self._retired, []
        await asyncio.to_thread(lambda: [producer.join() for producer in retired])

    async def _choose_h264_codec(self) -> None:
        self.h264_codec, self.h264_codec_reason = await asyncio.to_thread(
            choose_h264_codec, self.video.encoder, self.video.width, self.video.height, self.video.fps
        )
        if self.video.encoder != "auto" or self.h264_codec != "libx264":
            self.log.info("H.264 encoder: %s (%s)", self.h264_codec, self.h264_codec_reason)

    async def reconfigure(self, video: VideoConfig) -> None:
        """Apply new video settings: encoders take bitrate/GOP at their next frame; a new
        source, size, rate or flip (or lores size) restarts the source while viewers stay
        attached."""
        old, self.video = self.video, video
        if old.encoder != video.encoder or (old.width, old.height) != (video.width, video.height):
            await self._choose_h264_codec()
        self._rungs = ladder(video)
        for key, producer in self._producers.items():
            hub = self._hubs.get(key)
            rung = self._rungs[min(hub.rung, len(self._rungs) - 1)] if hub else None
            producer.update(encoder_settings(video, self.h264_codec, rung))
        source = self.source
        if self._source_settings(old) != self._source_settings(video) or (
                source is not None and source.needs_reopen(video)):
            self.log.info("video settings changed: restarting the source")
            async with self._source_lock:
                await self._close_source()
                try:
                    await self._open_source()
                except Exception as exc:
                    # keep the robot streaming: back to the settings that worked
                    self.log.error("%s; keeping the previous video settings", exc)
                    self.video = old
                    await self._open_source()
                    raise

    @staticmethod
    def _source_settings(video: VideoConfig) -> tuple[Any, ...]:
        return (video.source, video.device, video.input_format, video.file, video.width,
                video.height, video.fps, video.bitrate, video.keyframe_interval, video.flips,
                video.picamera)

    async def _open_source(self) -> None:
        def open_it() -> tuple[VideoSource, str]:
            source, why = self._source_factory(self.video)
            while True:
                try:
                    source.open()
                    return source, why
                except SourceError as exc:
                    next_choice = fallback(self.video, source, exc, self._taken())
                    if next_choice is None:
                        raise
                    source, why = next_choice

        source, why = await asyncio.to_thread(open_it)
        self.source_name, self.source_reason = source.name, why
        self.source = source
        self._clock_offset = None
        self.latest.clear()
        self._lores = source.lores_size is not None
        if source.output != self._built_for:
            self._rebuild_producers(source)
        self._refresh_taps()
        self._source_started_at = time.monotonic()
        self.state, self.reason = "starting", None
        source.start(self)
        self.log.info("video source: %s (%s)", source.name, why)

    async def _close_source(self) -> None:
        source, self.source = self.source, None
        if source is not None:
            await asyncio.to_thread(source.stop)

    def _rebuild_producers(self, source: VideoSource) -> None:
        """A reload switched between a frame source and an encoding one: same hubs and
        viewers, new producers behind them. A camera that encodes itself and has no lores
        stream has no lower rungs: their viewers go back to the full stream (at its next
        keyframe)."""
        self._built_for = source.output
        for key in list(self._producers):
            producer = self._producers.pop(key)
            producer.close()
            self._fold_counts(key, producer)
            self._retired.append(producer)
            hub = self._hubs[key]
            rung = self._rungs[min(hub.rung, len(self._rungs) - 1)] if hub.rung else None
            self._producers[key] = self._new_producer(hub.codec, source.output, key, rung)
            self._producers[key].start()
        self._refresh_taps()
        if source.output != "frames" and not self._lores:
            for hub in [h for h in self._hubs.values() if h.rung]:
                for track in hub.tracks:
                    self.switch(track, 0)

    # --- from the source thread (SourceSink) ------------------------------------------------

    def _count(self, now: float) -> None:
        self.frames_produced += 1
        self.last_frame_at = now
        self._frame_times.append(now)
        if self.frames_produced == 1 or self.state != "running":
            self._call_soon(self._frames_flowing)

    def _stamp(self, now: float, source_seconds: float | None = None) -> int:
        """A strictly increasing 90 kHz pts on the pipeline's clock, continuous across source
        restarts (a viewer's RTP timestamps must not jump back). A source clock (the camera's
        sensor timestamps) keeps its own spacing, mapped once per source onto ours."""
        if source_seconds is None:
            seconds = now - self._epoch
        else:
            if self._clock_offset is None:
                self._clock_offset = (now - self._epoch) - source_seconds
            seconds = source_seconds + self._clock_offset
        pts = round(seconds / TIME_BASE)
        if pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def on_frame(self, frame: av.VideoFrame) -> None:
        now = time.monotonic()
        frame.pts, frame.time_base = self._stamp(now), TIME_BASE
        self._count(now)
        self.latest.on_frame(frame)
        encoders = self._frame_encoders
        if not encoders:
            return
        source = self.source
        hflip, vflip = (False, False) if source is None or source.handles_transform else self.video.flips
        top = prepare(frame, self.video.width, self.video.height, hflip, vflip)
        self._feed_rungs(top, encoders, {0: top})

    def on_lores_frame(self, frame: av.VideoFrame) -> None:
        """The lores picture of an encoding source (its pts on the clock of its packets), for
        the lower rungs' encoders: mapped onto the pipeline's clock as its packets are, so a
        frame has the same pts on every rung."""
        offset, encoders = self._clock_offset, self._frame_encoders
        if offset is None or not encoders or frame.pts is None or frame.time_base is None:
            return  # no packet yet to map the clocks by, or nobody on a lower rung any more
        frame.pts = round((float(frame.pts * frame.time_base) + offset) / TIME_BASE)
        frame.time_base = TIME_BASE
        self._feed_rungs(frame, encoders, {})

    def _feed_rungs(self, frame: av.VideoFrame, encoders: tuple[tuple[FrameEncoder, Rung], ...],
                    scaled: dict[int, av.VideoFrame]) -> None:
        """Submit `frame` to each encoder, scaled once per rung, every n-th for a lower rate."""
        for encoder, rung in encoders:
            if rung.index and rung.fps < self.video.fps:  # a lower frame rate: every n-th frame
                last = self._rung_last_pts.get(rung.index, -(1 << 62))
                if frame.pts - last < 0.9 / (rung.fps * TIME_BASE):
                    continue
                self._rung_last_pts[rung.index] = frame.pts
            picture = scaled.get(rung.index)
            if picture is None:  # scaled once per rung, whichever codecs use it
                picture = scaled[rung.index] = prepare(frame, rung.width, rung.height, False, False)
            encoder.submit(picture)

    def on_packet(self, packet: av.Packet) -> None:
        now = time.monotonic()
        source_seconds = (
            float(packet.pts * packet.time_base)
            if packet.pts is not None and packet.time_base is not None else None
        )
        packet.pts, packet.time_base = self._stamp(now, source_seconds), TIME_BASE
        self._count(now)
        self.latest.on_packet(packet)
        hub = self._hubs.get("H264")
        if hub is not None:
            producer = self._producers.get("H264")
            if isinstance(producer, SourcePackets):
                producer.frames_encoded += 1
            self._call_soon(hub.publish, packet)
        transcoder = self._transcoder
        if transcoder is not None:
            transcoder.submit_packet(packet)

    def _frames_flowing(self) -> None:
        if self.source is None:  # the last frame of a source being closed: it is not back
            return
        if self.state in ("starting", "stalled"):
            if self.restarts:
                self.log.info("video source %s recovered: frames flowing again", self.source_name)
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

    # --- stills ------------------------------------------------------------------------------

    def picture(self) -> av.VideoFrame:
        """The newest picture, yuv420p at the configured size (blocking: call it in a thread).
        Raises StillError when there is none."""
        source = self.source
        flips = (False, False) if source is None or source.handles_transform else self.video.flips
        capture = source.capture_picture if source is not None and source.output == "h264" else None
        return self.latest.picture(self.video.width, self.video.height, flips, capture)

    def picture_problem(self) -> str | None:
        """Why no current picture can be had now (stalled, failed, not started), or None."""
        age = self.last_frame_age()
        fresh = age is not None and age <= max(STILL_MAX_AGE, 3 / self.video.fps)
        if self.healthy() and fresh:
            return None
        if self.reason:
            return self.reason
        if age is None:
            return "no picture yet: the camera has not delivered a frame"
        return f"the camera delivered no frame for {age:.1f} s"

    # --- viewers ----------------------------------------------------------------------------

    def queue_size(self) -> int:
        """Per-viewer queue: half a second of frames, enough for a scheduling hiccup."""
        return max(8, round(self.video.fps / 2))

    @property
    def rungs(self) -> list[Rung]:
        """The ladder viewers can move on: rung 0 only for a source that encodes itself and
        has no lores stream to feed the lower rungs from."""
        return self._rungs if self._built_for == "frames" or self._lores else self._rungs[:1]

    def attach(self, track: PeerVideoTrack, codec: str, rung: int = 0) -> None:
        """Subscribe a viewer's track to the codec's hub, starting its producer if idle."""
        self._hub(codec, rung).subscribe(track)

    def switch(self, track: PeerVideoTrack, rung: int, drain: float = 0.0) -> None:
        """Move a viewer to another rung of its codec, at that rung's next keyframe (asked for
        after `drain` seconds)."""
        codec = track.codec
        if codec is not None:
            track.switch_to(self._hub(codec, min(rung, len(self.rungs) - 1)), drain)

    def _hub(self, codec: str, rung: int) -> PacketHub:
        """The hub of this codec and rung, with its producer started if it was idle."""
        key = stream_key(codec, rung)
        hub = self._hubs.get(key)
        if hub is None:
            producer = self._new_producer(codec, self._built_for, key, self._rungs[rung] if rung else None)
            hub = PacketHub(codec, producer.request_keyframe, self._hub_empty, key, rung)
            self._hubs[key], self._producers[key] = hub, producer
            producer.start()
            self._refresh_taps()
            what = "for the first viewer" if rung == 0 else f"for rung {rung} ({self._rungs[rung].describe()})"
            self.log.info("%s: %s started %s", key, producer.implementation, what)
        return hub

    def _new_producer(self, codec: str, source_output: str, key: str | None = None, rung: Rung | None = None) -> Producer:
        settings = encoder_settings(self.video, self.h264_codec, rung)
        publish = self._publisher(key or codec)
        if source_output == "h264" and rung is None:  # lower rungs encode the lores stream
            if codec == "H264":
                return SourcePackets(self)
            return Transcoder(settings, publish, self._request_source_keyframe)
        return ENCODERS[codec](settings, publish)

    def _request_source_keyframe(self) -> None:
        source = self.source
        if source is not None:
            source.request_keyframe()

    def _refresh_taps(self) -> None:
        """What the source thread feeds: swapped whole, never mutated in place."""
        producers = tuple(self._producers.values())
        rung_of = {key: self._hubs[key].rung if key in self._hubs else 0 for key in self._producers}
        self._frame_encoders = tuple(
            (p, self._rungs[min(rung_of[key], len(self._rungs) - 1)])
            for key, p in self._producers.items() if isinstance(p, FrameEncoder)
        )
        self._transcoder = next((p for p in producers if isinstance(p, Transcoder)), None)
        source = self.source
        if source is not None:  # the lores stream costs a copy per frame: only while in use
            source.feed_lores(any(rung.index for _, rung in self._frame_encoders))

    def _publisher(self, codec: str) -> Callable[[av.Packet], None]:
        def publish(packet: av.Packet) -> None:  # encoder thread
            hub = self._hubs.get(codec)
            if hub is not None:
                self._call_soon(hub.publish, packet)
        return publish

    def _hub_empty(self, hub: PacketHub) -> None:
        if self._hubs.get(hub.name) is hub:
            self._retire(hub.name)
            self.log.info("%s: stopped, no viewers left", hub.name)

    def _retire(self, codec: str) -> None:
        self._hubs.pop(codec, None)
        producer = self._producers.pop(codec, None)
        self._refresh_taps()
        if producer is not None:
            producer.close()  # threads end by themselves; stop() joins them
            self._fold_counts(codec, producer)
            self._retired = [p for p in self._retired if p.alive] + [producer]

    def _fold_counts(self, codec: str, producer: Producer) -> None:
        counted = self._counted.setdefault(codec, collections.Counter())
        for name in COUNTED:
            counted[name] += getattr(producer, name, 0)

    def encoder_totals(self) -> dict[str, dict[str, int]]:
        """Per codec, frames encoded/skipped and keyframes forced since the daemon started,
        over every producer that has run (they stop when their last viewer leaves)."""
        totals = {codec: collections.Counter(counted) for codec, counted in self._counted.items()}
        for codec, producer in self._producers.items():
            counted = totals.setdefault(codec, collections.Counter())
            for name in COUNTED:
                counted[name] += getattr(producer, name, 0)
        return {codec: {name: counted[name] for name in COUNTED} for codec, counted in totals.items()}

    @property
    def encoders(self) -> dict[str, Producer]:
        return dict(self._producers)

    @property
    def viewers(self) -> int:
        return sum(len(hub) for hub in self._hubs.values())

    # --- supervision ------------------------------------------------------------------------

    def _source_problem(self) -> str | None:
        source = self.source
        if source is None:
            return self.reason or "no video source"
        if not source.running:
            return (f"{source.name} source failed: {source.error}" if source.error
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
                self.state = "stalled" if self.source and self.source.running else "failed"
                self.reason = problem
                self.restarts += 1
                self.log.error("%s; restarting it in %.0f s", problem, backoff)
                await self._close_source()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            async with self._source_lock:
                if self.source is not None:
                    continue  # a reload opened one meanwhile
                try:
                    await self._open_source()
                    self.reason = f"restarted after: {problem}"
                except Exception as exc:  # noqa: BLE001 - stays failed, retried next tick
                    self.state, self.reason = "failed", f"cannot reopen video source: {exc}"
                    self.log.error("%s", self.reason)

    # --- measurements -----------------------------------------------------------------------

    def clock(self, at: float) -> float:
        """Seconds on the pipeline's clock (what video pts count, / 90 kHz) at monotonic `at`."""
        return at - self._epoch

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
        source = self.source
        return {
            "source": self.source_name,
            "source_reason": self.source_reason,
            "source_info": source.describe() if source is not None else {},
            "state": self.state,
            "reason": self.reason,
            "restarts": self.restarts,
            "width": self.video.width,
            "height": self.video.height,
            "fps_configured": self.video.fps,
            "fps_measured": round(self.measured_fps(), 2),
            "frames_produced": self.frames_produced,
            "last_frame_age": None if age is None else round(age, 3),
            "h264_encoder": self.h264_codec if self._built_for == "frames" else "camera",
            "encoders": {
                codec: {
                    "implementation": producer.implementation,
                    "frames_encoded": getattr(producer, "frames_encoded", 0),
                    "frames_skipped": getattr(producer, "frames_skipped", 0),
                    "keyframes": getattr(producer, "keyframes_out", 0),
                    "viewers": len(self._hubs[codec]) if codec in self._hubs else 0,
                    "rung": self._hubs[codec].rung if codec in self._hubs else 0,
                }
                for codec, producer in self._producers.items()
            },
            "renditions": [rung.describe() for rung in self.rungs],
        }
