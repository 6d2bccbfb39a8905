"""Sources that read an FFmpeg container (a file, a V4L2 device) in their capture thread."""

from __future__ import annotations

import logging
import threading
from abc import abstractmethod
from typing import Any

from robotcam.video.sources.base import ThreadedSource

log = logging.getLogger(__name__)


class ContainerSource(ThreadedSource):
    """Owns one PyAV container. The capture thread may be blocked inside FFmpeg with it, and
    closing a container under a reader crashes FFmpeg; so close() from another thread only asks,
    and the capture thread closes the container itself when it returns."""

    def __init__(self) -> None:
        super().__init__()
        self._container: Any = None
        self._stream: Any = None
        self._lock = threading.Lock()
        self._close_on_exit = False

    @property
    @abstractmethod
    def label(self) -> str:
        """The file or device, for log lines."""

    def capture(self, stop: threading.Event) -> None:
        if self._container is None or self._stream is None:
            raise RuntimeError(f"{type(self).__name__}.capture() before open()")
        try:
            self.read(stop)
        finally:
            with self._lock:
                close_now = self._close_on_exit
            if close_now:
                self._release()

    @abstractmethod
    def read(self, stop: threading.Event) -> None:
        """Decode and emit until stop is set (the container is self._container)."""

    def close(self) -> None:
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            with self._lock:
                self._close_on_exit = True
            if thread.is_alive():
                return
        self._release()

    def _release(self) -> None:
        with self._lock:
            container, self._container = self._container, None
            self._stream = None
            self._forget()
        if container is not None:
            try:
                container.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                log.debug("closing %s failed", self.label, exc_info=True)

    def _forget(self) -> None:
        """Drop what else refers to the closed container (under the lock)."""
