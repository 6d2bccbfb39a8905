"""The contract between a video source and the pipeline.

A source owns its device for as long as it runs and delivers from its own thread: camera I/O and
frame generation never run on the event loop. Most sources deliver raw frames, which the
pipeline flips, scales and encodes once. A source with its own encoder (the Pi camera's
hardware H.264) delivers encoded packets instead, and the pipeline fans those out untouched;
it may also have a second, smaller stream of raw frames (the Pi camera's lores stream), which
it hands over only while the pipeline asks for it (`feed_lores`), for the lower rungs.

Life of a source (the pipeline makes a new instance for every restart):
  source = SomeSource(video_config)   cheap, no I/O
  source.open()                       blocking (run off the loop): probe and open the device;
                                      raises SourceError naming the config key to change
  source.start(sink)                  capture thread begins calling sink.on_frame / on_packet
  source.stop()                       blocking: end the thread, release the device
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import Any, Literal, Protocol

import av

from robotcam.config import VideoConfig

log = logging.getLogger(__name__)


class SourceError(Exception):
    """A source that cannot be used at all; the message names the config key to change."""


class SourceSink(Protocol):
    """Where a source delivers; called from the source's thread."""

    def on_frame(self, frame: av.VideoFrame) -> None:
        """A raw frame, any pixel format and size; pts is assigned by the pipeline."""

    def on_packet(self, packet: av.Packet) -> None:
        """One encoded H.264 access unit (Annex B) with is_keyframe set. pts/time_base, when
        set, are the capture time on the source's own clock (e.g. the sensor timestamp)."""

    def on_lores_frame(self, frame: av.VideoFrame) -> None:
        """A picture of the source's second, smaller stream (yuv420p, `lores_size`), for the
        lower rungs; pts/time_base on the clock of its packets, so that the same instant has
        the same pts in both (a viewer moving between rungs stays on one timeline)."""


class VideoSource(ABC):
    name: str = "source"
    #: "frames": raw frames to encode; "h264": already encoded by the source itself.
    output: Literal["frames", "h264"] = "frames"
    #: True when the source applies video.hflip/vflip/rotation itself (e.g. in the ISP).
    handles_transform: bool = False
    #: Set when the capture thread ended: the exception that ended it, or None at end of stream.
    error: BaseException | None = None
    #: Size of the second, smaller stream an encoding source delivers to on_lores_frame while
    #: feed_lores(True) (the Pi camera's lores stream); None when it has none.
    lores_size: tuple[int, int] | None = None

    def open(self) -> None:
        """Probe and open the device. Blocking; raises SourceError naming the config key."""

    def claim(self) -> str | None:
        """The device this source holds ("/dev/video2", "Pi camera 0"), or None: another
        camera's `auto` choice passes it over."""
        return None

    @abstractmethod
    def start(self, sink: SourceSink) -> None: ...

    @abstractmethod
    def stop(self, timeout: float = 2.0) -> None:
        """Stop capturing and release the device; blocks up to timeout (call it off the loop)."""

    @property
    @abstractmethod
    def running(self) -> bool: ...

    def request_keyframe(self) -> None:
        """Ask an encoding source for an IDR soon (thread-safe). Frame sources ignore it."""

    def feed_lores(self, on: bool) -> None:
        """Start or stop delivering the lores stream (thread-safe, non-blocking). The pipeline
        turns it on only while some viewer is on a lower rung: off, it costs no copy."""

    def needs_reopen(self, video: VideoConfig) -> bool:
        """Whether new settings the pipeline would otherwise apply without restarting the
        source (renditions, adaptive) change what this source opened (a lores stream's size)."""
        return False

    def capture_picture(self) -> av.VideoFrame | None:
        """A still from the running camera, for sources that encode themselves (blocking, off
        the loop); None when the source cannot, and the pipeline decodes its packets instead."""
        return None

    def describe(self) -> dict[str, Any]:
        """What /health shows about this source: device, format, encoder in use, ..."""
        return {}


class ThreadedSource(VideoSource):
    """A source whose capture loop runs in one daemon thread until stop() is called."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sink: SourceSink | None = None
        self.error = None

    def start(self, sink: SourceSink) -> None:
        self._sink = sink
        self._stop.clear()
        self.error = None
        self._thread = threading.Thread(
            target=self._main, name=f"robotcam-source-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("%s source did not stop within %.1f s", self.name, timeout)
        self.close()

    def close(self) -> None:
        """Release the device after the thread has ended (override in sources that hold one)."""

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _main(self) -> None:
        try:
            self.capture(self._stop)
        except BaseException as exc:  # noqa: BLE001 - reported to the supervisor, not lost
            self.error = exc

    def emit(self, frame: av.VideoFrame) -> None:
        assert self._sink is not None
        self._sink.on_frame(frame)

    def emit_packet(self, packet: av.Packet) -> None:
        assert self._sink is not None
        self._sink.on_packet(packet)

    @abstractmethod
    def capture(self, stop: threading.Event) -> None:
        """Deliver with emit()/emit_packet() until stop is set; return at end of stream,
        raise on failure (the pipeline restarts the source with backoff)."""
