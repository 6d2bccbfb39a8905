"""The contract between a video source and the pipeline.

A source owns its device for as long as it runs and delivers frames from its own thread: camera
I/O and frame generation never run on the event loop. The pipeline stamps, counts and encodes
what it is given; a source only captures.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from typing import Callable

import av

FrameCallback = Callable[[av.VideoFrame], None]

log = logging.getLogger(__name__)


class SourceError(Exception):
    """A source that cannot be used at all; the message names the config key to change."""


class VideoSource(ABC):
    """One video device. start() begins delivering frames to the callback; stop() releases it."""

    name: str = "source"

    #: Set when the capture thread ended: the exception that ended it, or None for end of stream.
    error: BaseException | None = None

    @abstractmethod
    def start(self, on_frame: FrameCallback) -> None: ...

    @abstractmethod
    def stop(self, timeout: float = 2.0) -> None:
        """Stop capturing and release the device; blocks up to timeout (call it off the loop)."""

    @property
    @abstractmethod
    def running(self) -> bool: ...


class ThreadedSource(VideoSource):
    """A source whose capture loop runs in one daemon thread until stop() is called."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_frame: FrameCallback | None = None
        self.error = None

    def start(self, on_frame: FrameCallback) -> None:
        self._on_frame = on_frame
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

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def ended(self) -> bool:
        """The capture thread has finished on its own (error or end of stream), not by stop()."""
        return self._thread is not None and not self._thread.is_alive() and not self._stop.is_set()

    def _main(self) -> None:
        try:
            self.capture(self._stop)
        except BaseException as exc:  # noqa: BLE001 - reported to the supervisor, not lost
            self.error = exc

    def emit(self, frame: av.VideoFrame) -> None:
        assert self._on_frame is not None
        self._on_frame(frame)

    @abstractmethod
    def capture(self, stop: threading.Event) -> None:
        """Deliver frames with emit() until stop is set; return at end of stream, raise on failure."""
