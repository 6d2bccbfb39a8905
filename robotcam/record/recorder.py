"""Recording: the H.264 stream as the encoder made it, in fragmented MP4 segments on disk.

The recorder is one more reader of the pipeline's H.264 hub (a PeerVideoTrack, like a viewer's,
so the encoder runs while it records, and it never counts against webrtc.max_peers). Packets
are remuxed with PyAV's mp4 muxer (`frag_keyframe+empty_moov+default_base_moof`): no decode,
no re-encode. When there is sound, the shared Opus packets every viewer gets are muxed beside
the video (a PeerAudioTrack on the audio hub); the sound card's clock is tied to the video's
once per segment, from when its first packet arrives, so drift cannot add up over hours. Each segment starts at a keyframe, asked for when the segment is due, so every
file plays on its own; names are the UTC start time, so they sort by time.

The disk never takes the live view down: a write that fails (full disk, read-only or missing
folder) ends the segment, logs one line, shows `recording: failed` with the reason in /health,
detaches from the hub, and is retried every RETRY_SECONDS; recording resumes when it works
again. Retention deletes the oldest segments beyond recording.max_bytes or recording.max_age.
All file work runs in threads, never on the event loop.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import logging
import os
import re
import shutil
import struct
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import av
from aiortc.mediastreams import MediaStreamError

from robotcam.audio.clock import LAYOUTS
from robotcam.audio.component import AudioComponent
from robotcam.audio.fanout import PeerAudioTrack
from robotcam.audio.opus import OPUS_RATE, OPUS_TIME_BASE
from robotcam.config import Config, RecordingConfig
from robotcam.video.encoder import TIME_BASE
from robotcam.video.hub import PeerVideoTrack
from robotcam.video.pipeline import VideoPipeline
from robotcam.tasks import TaskSet

log = logging.getLogger(__name__)

RETRY_SECONDS = 2.0  # between attempts to record again after a failure
MIN_FREE_BYTES = 512 * 1024  # below this much free space, do not even start a segment
NAME_FORMAT = "%Y%m%dT%H%M%SZ"
#: what a segment's name looks like: the UTC start time, and a number when two share a second
NAME = re.compile(r"^(\d{8}T\d{6}Z)(?:-(\d{1,4}))?\.mp4$")
MP4_OPTIONS = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}
OPUS_PRE_SKIP = 312  # libopus's lookahead at 48 kHz, in samples (what its own OpusHead says)
AUDIO_BACKLOG = 500  # Opus packets (10 s) waiting for the next video packet, at most

#: (pipeline-clock seconds at arrival, Opus packet)
Sound = tuple[float, av.Packet]


def opus_head(channels: int) -> bytes:
    """The Opus identification header MP4's dOps box is made from (RFC 7845, mapping 0)."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, OPUS_PRE_SKIP, OPUS_RATE, 0, 0)


@dataclass(frozen=True)
class SegmentInfo:
    """One recorded file, as GET /api/recordings lists it."""

    name: str
    start: str  # ISO 8601, UTC
    duration: float | None  # seconds; None when the file cannot be read
    bytes: int

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "start": self.start, "duration": self.duration, "bytes": self.bytes}


def segment_start(name: str) -> datetime | None:
    match = NAME.match(name)
    if match is None:
        return None
    return datetime.strptime(match.group(1), NAME_FORMAT).replace(tzinfo=timezone.utc)


def probe_duration(path: Path) -> float | None:
    """Seconds of video in a segment, from its packets' timestamps (demuxed, not decoded)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            first = last = None
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                end = packet.pts + (packet.duration or 0)
                first = packet.pts if first is None else min(first, packet.pts)
                last = end if last is None else max(last, end)
            if first is None or last is None or stream.time_base is None:
                return 0.0
            return round(float((last - first) * stream.time_base), 3)
    except (av.error.FFmpegError, IndexError, OSError):
        return None


class Segment:
    """One MP4 file being written. Blocking methods, called in threads: a lock keeps them one at
    a time, because a cancelled `to_thread` write may still be running when close() comes."""

    def __init__(self, path: Path, width: int, height: int, fps: float, channels: int | None) -> None:
        self.path = path
        self.container = av.open(str(path), "w", format="mp4", options=MP4_OPTIONS)
        self.stream = self.container.add_stream("h264", rate=Fraction(fps).limit_denominator(1001))
        self.stream.width, self.stream.height = width, height
        self.stream.time_base = TIME_BASE
        self.audio: Any = None
        if channels:
            self.audio = self.container.add_stream("opus", rate=OPUS_RATE)
            self.audio.layout = LAYOUTS[channels]
            self.audio.time_base = OPUS_TIME_BASE
            self.audio.codec_context.extradata = opus_head(channels)
        self.first_pts: int | None = None
        self.last_pts: int | None = None
        self.frames = 0
        self.sound_packets = 0
        self._audio_offset: float | None = None  # sound card clock -> pipeline clock, seconds
        self._last_audio_pts = -1
        self._lock = threading.Lock()
        self._closed = False

    def write(self, packet: av.Packet, sounds: list[Sound]) -> None:
        """Remux one video packet (a copy: the hub's packet also goes to every viewer), then
        the sound that arrived with it."""
        with self._lock:
            if not self._closed:
                self._write(packet, sounds)

    def _write(self, packet: av.Packet, sounds: list[Sound]) -> None:
        if self.first_pts is None:
            self.first_pts = packet.pts
        copy = av.Packet(bytes(packet))
        copy.pts = copy.dts = packet.pts - self.first_pts
        copy.time_base = TIME_BASE
        copy.is_keyframe = packet.is_keyframe
        copy.stream = self.stream
        self.container.mux(copy)
        self.last_pts = packet.pts
        self.frames += 1
        self._write_sounds(sounds)

    def write_sounds(self, sounds: list[Sound]) -> None:
        with self._lock:
            if not self._closed:
                self._write_sounds(sounds)

    def _write_sounds(self, sounds: list[Sound]) -> None:
        if self.audio is None or self.first_pts is None:
            return
        start = float(self.first_pts * TIME_BASE)
        for arrived, packet in sounds:
            seconds = float(packet.pts * packet.time_base)
            if self._audio_offset is None:
                self._audio_offset = arrived - seconds
            pts = round((seconds + self._audio_offset - start) * OPUS_RATE)
            if pts < 0 or pts <= self._last_audio_pts:
                continue  # from before this segment's first frame
            copy = av.Packet(bytes(packet))
            copy.pts = copy.dts = pts
            copy.time_base = OPUS_TIME_BASE
            copy.stream = self.audio
            self.container.mux(copy)
            self._last_audio_pts = pts
            self.sound_packets += 1

    @property
    def seconds(self) -> float:
        if self.first_pts is None or self.last_pts is None:
            return 0.0
        return float((self.last_pts - self.first_pts) * TIME_BASE)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.container.close()
            finally:
                if self.frames == 0:
                    self.path.unlink(missing_ok=True)

    def discard_if_empty(self) -> None:
        """After a failed write: a file with nothing playable in it goes."""
        try:
            if self.path.stat().st_size < 1024:
                self.path.unlink()
        except OSError:
            pass


class Recorder:
    """The recording component (recording.*): a reader of the H.264 hub writing segments."""

    name = "recording"

    @property
    def pipeline(self) -> VideoPipeline:
        """The camera recorded: the first (looked up each time: a reload may replace it)."""
        return self._camera(None)

    def __init__(
        self, camera: Callable[[str | None], VideoPipeline], config: RecordingConfig,
        audio: AudioComponent | None = None,
    ) -> None:
        self._camera = camera  # name (None: the first) -> its pipeline
        self.config = config
        self.audio = audio
        self._tasks = TaskSet()
        self._restarting = asyncio.Lock()  # reloads one after the other
        self._track: PeerVideoTrack | None = None
        self._sound_track: PeerAudioTrack | None = None
        self._sounds: collections.deque[Sound] = collections.deque(maxlen=AUDIO_BACKLOG)
        self._segment: Segment | None = None
        self._durations: dict[tuple[str, int], float | None] = {}  # (name, size) -> seconds
        self.state = "off"  # off | starting | recording | failed
        self.reason: str | None = None
        self.segments_written = 0
        self.segments_deleted = 0
        self.bytes_written = 0  # bytes of the segments finished so far
        self.failures = 0
        self.frames = 0

    @property
    def folder(self) -> Path:
        return Path(self.config.path)

    # --- Component --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.config.enabled:
            self._tasks.spawn(self._run(), "robotcam-recorder")

    async def stop(self) -> None:
        await self._tasks.close()
        await self._detach()
        self.state = "off"

    def apply_config(self, config: Config) -> None:
        """Segment length and retention apply at the next segment; enabling, disabling or a
        new folder restart the recorder (between segments)."""
        old, self.config = self.config, config.recording
        if (old.enabled, old.path) != (self.config.enabled, self.config.path):
            self._tasks.spawn(self._restart(), "robotcam-recorder-restart")

    async def _restart(self) -> None:
        async with self._restarting:
            for task in self._tasks:
                if task.get_name() == "robotcam-recorder":
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await self._detach()
            self.state, self.reason = "off", None
            if self.config.enabled:
                self._tasks.spawn(self._run(), "robotcam-recorder")

    def health(self) -> dict[str, Any]:
        if not self.config.enabled:
            return {"enabled": False, "state": "off"}
        segment = self._segment
        return {
            "enabled": True,
            "ok": self.state != "failed",
            "state": self.state,
            "reason": self.reason,
            "path": self.config.path,
            "current": segment.path.name if segment is not None else None,
            "segments_written": self.segments_written,
            "segments_deleted": self.segments_deleted,
            "failures": self.failures,
        }

    # --- recording --------------------------------------------------------------------------

    async def _run(self) -> None:
        """Record until stopped; after a failure, wait and try again."""
        while True:
            if self.state != "failed":
                self.state, self.reason = "starting", None
            try:
                await asyncio.to_thread(self._check_folder)
                await self._record()
                return  # the hub ended (shutdown)
            except (OSError, av.error.FFmpegError) as exc:
                await self._failed(exc)
            except Exception as exc:  # noqa: BLE001 - a bug costs the recording, not the video
                log.exception("recording failed unexpectedly")
                await self._failed(exc)
            await asyncio.sleep(RETRY_SECONDS)

    def _check_folder(self) -> None:
        """Create the folder when missing; refuse to start on a full disk (OSError)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if not os.access(self.folder, os.W_OK):
            raise OSError(errno.EACCES, "Permission denied")
        if shutil.disk_usage(self.folder).free < MIN_FREE_BYTES:
            raise OSError(errno.ENOSPC, "No space left on device")

    async def _failed(self, exc: BaseException) -> None:
        reason = f"{self.folder}: {getattr(exc, 'strerror', None) or exc}"
        if self.state != "failed" or reason != self.reason:
            log.error("recording failed: %s; live video goes on, retrying every %.0f s",
                      reason, RETRY_SECONDS)
        self.failures += 1
        self.state, self.reason = "failed", reason
        await self._detach()

    async def _detach(self) -> None:
        """Leave the hub (the encoder stops if nobody else watches) and end the segment."""
        track, self._track = self._track, None
        if track is not None:
            track.stop()
        sound_track, self._sound_track = self._sound_track, None
        if sound_track is not None:
            sound_track.stop()  # its reader task ends with it
        segment, self._segment = self._segment, None
        if segment is not None:
            try:
                await asyncio.to_thread(segment.close)
            except (OSError, av.error.FFmpegError):
                # the failure that got us here is reported already; keep what was written
                await asyncio.to_thread(segment.discard_if_empty)
            else:
                await self._finished(segment)

    async def _record(self) -> None:
        track = self._track = PeerVideoTrack(max(16, round(self.pipeline.video.fps * 2)), number=0)
        self.pipeline.attach(track, "H264")  # asks for a keyframe: the first segment starts at once
        self._listen()
        asked = False
        while True:
            try:
                packet = await track.recv()
            except MediaStreamError:
                return
            sounds = list(self._sounds)
            self._sounds.clear()
            segment = self._segment
            due = segment is not None and segment.seconds >= self.config.segment_seconds
            if due and not asked:
                asked = True
                track.request_keyframe()  # start the next segment promptly
            if segment is None or (due and packet.is_keyframe):
                if not packet.is_keyframe:
                    continue  # a track starts at a keyframe; after an overflow it waits again
                if segment is not None:
                    await asyncio.to_thread(segment.write_sounds, sounds)  # the old one's tail
                    sounds = []
                segment = await self._next_segment()
                asked = False
            await asyncio.to_thread(segment.write, packet, sounds)
            self.frames += 1
            if self.state != "recording":
                if self.state == "failed" or self.failures:
                    log.info("recording resumed: %s", segment.path)
                self.state, self.reason = "recording", None

    def _listen(self) -> None:
        """When there is sound, take the shared Opus packets too, as a viewer does."""
        audio = self.audio
        if audio is None or audio.source is None:
            return
        self._sounds.clear()
        track = self._sound_track = PeerAudioTrack(number=0, queue_size=50)
        audio.hub.subscribe(track)
        self._tasks.spawn(self._hear(track), "robotcam-recorder-sound")

    async def _hear(self, track: PeerAudioTrack) -> None:
        while True:
            try:
                packet = await track.recv()
            except MediaStreamError:
                return
            if isinstance(packet, av.Packet):
                self._sounds.append((self.pipeline.clock(time.monotonic()), packet))

    def _channels(self) -> int | None:
        """The Opus stream's channels when sound is being recorded, else None."""
        if self._sound_track is None or self.audio is None or self.audio.source is None:
            return None
        return self.audio.audio.channels

    async def _next_segment(self) -> Segment:
        old, self._segment = self._segment, None
        if old is not None:
            await asyncio.to_thread(old.close)
            await self._finished(old)
        segment = await asyncio.to_thread(self._open_segment)
        self._segment = segment
        return segment

    def _open_segment(self) -> Segment:
        stamp = datetime.now(timezone.utc).strftime(NAME_FORMAT)
        path = self.folder / f"{stamp}.mp4"
        number = 1
        while path.exists():
            path = self.folder / f"{stamp}-{number}.mp4"
            number += 1
        video = self.pipeline.video
        return Segment(path, video.width, video.height, video.fps, self._channels())

    async def _finished(self, segment: Segment) -> None:
        if segment.frames == 0:
            return
        self.segments_written += 1
        try:
            size = await asyncio.to_thread(lambda: segment.path.stat().st_size)
        except OSError:
            size = 0
        self.bytes_written += size
        self._durations[(segment.path.name, size)] = round(segment.seconds, 3)
        try:
            deleted = await asyncio.to_thread(self._apply_retention)
        except OSError as exc:
            log.warning("recording: retention could not clean up %s: %s", self.folder, exc)
            return
        self.segments_deleted += len(deleted)
        if deleted:
            log.info("recording: deleted %d old segment(s) to stay within the budget", len(deleted))

    # --- the folder -------------------------------------------------------------------------

    def _files(self) -> list[tuple[str, int, float]]:
        """(name, bytes, modified) of every segment, oldest first."""
        found = []
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if NAME.match(entry.name) and entry.is_file(follow_symlinks=False):
                    stat = entry.stat(follow_symlinks=False)
                    found.append((entry.name, stat.st_size, stat.st_mtime))
        return sorted(found)

    def _apply_retention(self) -> list[str]:
        """Delete the oldest finished segments beyond max_bytes or older than max_age."""
        current = self._segment.path.name if self._segment is not None else None
        files = [f for f in self._files() if f[0] != current]
        total = sum(size for _, size, _ in files)
        now = time.time()
        deleted = []
        for name, size, modified in files[:-1]:  # the newest finished one always stays
            too_big = self.config.max_bytes and total > self.config.max_bytes
            too_old = self.config.max_age and now - modified > self.config.max_age
            if not (too_big or too_old):
                break
            try:
                (self.folder / name).unlink()
            except FileNotFoundError:
                pass
            total -= size
            deleted.append(name)
        return deleted

    def list_segments(self) -> list[SegmentInfo]:
        """Every segment in the folder, oldest first (blocking: call it in a thread)."""
        try:
            files = self._files()
        except OSError:  # missing or unusable folder: /health says why
            return []
        present = {(name, size) for name, size, _ in files}
        self._durations = {key: value for key, value in self._durations.items() if key in present}
        listed = []
        for name, size, _ in files:
            key = (name, size)
            if key not in self._durations:
                self._durations[key] = probe_duration(self.folder / name)
            start = segment_start(name)
            listed.append(SegmentInfo(
                name=name, start=start.isoformat().replace("+00:00", "Z") if start else "",
                duration=self._durations[key], bytes=size,
            ))
        return listed

    def segment_path(self, name: str) -> Path | None:
        """The file a name from the listing refers to; None for anything that is not a
        segment's name (so no path can lead outside the folder)."""
        if not NAME.match(name):
            return None
        path = self.folder / name
        return path if path.parent == self.folder else None
