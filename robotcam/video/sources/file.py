"""A video file played in a loop at its own frame rate: a stand-in camera for demos and tests.

Frames are paced by their own timestamps (pts x time_base, relative to the first frame), so a
24 fps file plays at 24 fps whatever video.fps says; the pipeline scales and re-times them. At the
end of the file the source seeks back to the start (or reopens a file that cannot seek) and goes
on, until stopped. A file that yields no frame on a pass is an error, never a busy loop; a source
that falls behind (a busy machine) shifts its clock instead of bursting to catch up.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from typing import Any, Iterator

import av
import av.error

from robotcam.config import VideoConfig
from robotcam.video.sources.base import SourceError
from robotcam.video.sources.container import ContainerSource

log = logging.getLogger(__name__)

PROBE_PACKETS = 600  # packets read at most while looking for the first decodable frame
MAX_BAD_PACKETS = 100  # consecutive undecodable packets before a pass gives up


class FileSource(ContainerSource):
    """Loops `video.file` forever, paced at the file's own frame rate."""

    name = "file"
    output = "frames"

    def __init__(self, video: VideoConfig) -> None:
        super().__init__()
        self.video = video
        self.path = os.path.expanduser(video.file.strip()) if video.file.strip() else ""
        self._info: dict[str, Any] = {}
        self.loops = 0
        self.frames_emitted = 0
        self.frames_late = 0

    # --- opening ------------------------------------------------------------------------------

    def open(self) -> None:
        path = self.path
        if not path:
            raise SourceError("video.file: required when video.source is file")
        if not os.path.exists(path):
            raise SourceError(f"video.file: {path} does not exist")
        if os.path.isdir(path):
            raise SourceError(f"video.file: {path} is a directory, not a video file")
        if not os.access(path, os.R_OK):
            raise SourceError(f"video.file: {path} is not readable: permission denied")
        self._container = self._open_container(path)
        try:
            self._check_decodable()
            self._rewind()
        except BaseException:
            self._release()
            raise

    def _open_container(self, path: str) -> Any:
        try:
            container = av.open(path, "r")
        except (OSError, av.error.FFmpegError) as exc:
            raise self._explain(exc) from None
        try:
            if not container.streams.video:
                kinds = sorted({str(s.type) for s in container.streams}) or ["none"]
                raise SourceError(
                    f"video.file: {path} has no video stream (streams: {', '.join(kinds)})"
                )
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise SourceError(
                    f"video.file: {path}: this FFmpeg build cannot decode its video "
                    f"({stream.codec_tag or 'unknown codec'})"
                )
            stream.thread_type = "AUTO"  # a file is not live: throughput matters, not latency
        except BaseException:
            container.close()
            raise
        self._stream = stream
        return container

    def _explain(self, exc: BaseException) -> SourceError:
        code = getattr(exc, "errno", None)
        reason = getattr(exc, "strerror", None) or str(exc)
        if code in (errno.EACCES, errno.EPERM):
            return SourceError(f"video.file: {self.path} is not readable: permission denied")
        if code == errno.ENOENT:
            return SourceError(f"video.file: {self.path} does not exist")
        if isinstance(exc, av.error.EOFError):
            return SourceError(
                f"video.file: {self.path}: no video frame could be decoded (it ends before its first frame)"
            )
        if isinstance(exc, av.error.InvalidDataError):
            return SourceError(f"video.file: {self.path} is not a video file FFmpeg can read ({reason})")
        return SourceError(f"video.file: cannot read {self.path}: {reason}")

    def _check_decodable(self) -> None:
        """Decode the first frame, so a file of no use fails at open() and not in the thread."""
        stream = self._stream
        frame = None
        error: BaseException | None = None
        try:
            for index, packet in enumerate(self._container.demux(stream)):
                if index >= PROBE_PACKETS:
                    break
                try:
                    frames = stream.codec_context.decode(packet)
                except av.error.FFmpegError as exc:
                    error = exc
                    continue
                if frames:
                    frame = frames[0]
                    break
        except (OSError, av.error.FFmpegError) as exc:
            error = exc
        if frame is None:
            why = f" ({getattr(error, 'strerror', None) or error})" if error else ""
            raise SourceError(f"video.file: {self.path}: no video frame could be decoded{why}")
        rate = stream.average_rate or stream.guessed_rate
        self._info = {
            "codec": stream.codec_context.name,
            "width": frame.width,
            "height": frame.height,
            "fps": round(float(rate), 3) if rate else None,
            "duration": (
                round(float(stream.duration * stream.time_base), 3)
                if stream.duration and stream.time_base else None
            ),
        }

    def _rewind(self) -> None:
        """Back to the first frame: seek, or reopen a file that cannot seek."""
        try:
            self._container.seek(0)
            return
        except (OSError, av.error.FFmpegError) as exc:
            log.debug("%s: seek failed (%s); reopening it", self.path, exc)
        with self._lock:
            old, self._container = self._container, None
        old.close()
        self._container = self._open_container(self.path)

    # --- playing --------------------------------------------------------------------------------

    def _period(self) -> float:
        rate = self._stream.average_rate or self._stream.guessed_rate
        if rate and float(rate) > 0:
            return 1.0 / float(rate)
        return 1.0 / self.video.fps

    def _frames(self) -> Iterator[av.VideoFrame]:
        """One pass over the file's decoded frames."""
        stream = self._stream
        bad = 0
        for packet in self._container.demux(stream):
            try:
                frames = stream.codec_context.decode(packet)
            except av.error.FFmpegError as exc:
                bad += 1
                if bad >= MAX_BAD_PACKETS:
                    raise SourceError(
                        f"video.file: {self.path}: {bad} packets in a row could not be decoded ({exc})"
                    ) from exc
                continue
            bad = 0
            yield from frames

    @property
    def label(self) -> str:
        return self.path

    def read(self, stop: threading.Event) -> None:
        period = self._period()
        anchor = time.monotonic()  # when the current pass's first frame is due
        while not stop.is_set():
            count = 0
            first: float | None = None
            last_offset = 0.0
            last_duration = period
            for frame in self._frames():
                if stop.is_set():
                    return
                when = frame.time
                if first is None:
                    first = when if when is not None else 0.0
                if when is None:  # no timestamps: count frames
                    offset = last_offset + period if count else 0.0
                else:
                    offset = max(when - first, last_offset if count else 0.0)
                if frame.duration and frame.time_base:
                    last_duration = float(frame.duration * frame.time_base) or period
                delay = anchor + offset - time.monotonic()
                if delay > 0:
                    if stop.wait(delay):
                        return
                elif delay < -period:
                    # fell behind (busy machine, slow decoder): shift the clock, never burst
                    anchor -= delay
                    self.frames_late += 1
                self.emit(frame)
                self.frames_emitted += 1
                count += 1
                last_offset = offset
            if stop.is_set():
                return
            if count == 0:
                raise SourceError(f"video.file: {self.path}: a pass over the file decoded no frame")
            self.loops += 1
            anchor += last_offset + max(last_duration, 1e-3)  # the next pass follows the last frame
            self._rewind()

    def describe(self) -> dict[str, Any]:
        return {
            "file": self.path,
            **self._info,
            "loops": self.loops,
            "frames_emitted": self.frames_emitted,
            "frames_late": self.frames_late,
        }
