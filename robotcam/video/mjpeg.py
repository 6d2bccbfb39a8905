"""GET /stream.mjpg: one MJPEG encoder per camera shared by its MJPEG clients, running only
while watched.

The encoder thread takes the camera's newest picture at up to `mjpeg.fps`, encodes it once,
and hands the same bytes to every client. Each client holds one slot: a newer JPEG replaces one
its connection has not taken yet, so a slow client skips frames and never delays the others or
the encoder. The thread ends when the last client leaves.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, Callable

from robotcam.config import Config, MjpegConfig
from robotcam.video.pipeline import VideoPipeline
from robotcam.video.stills import JpegEncoder, StillError

log = logging.getLogger(__name__)

IDLE_POLL = 0.005  # seconds between looks for a new picture once a frame is due


class MjpegFull(Exception):
    """mjpeg.max_clients reached."""


class MjpegClient:
    """One client's slot: the newest JPEG it has not sent yet. Event-loop only."""

    def __init__(self, number: int) -> None:
        self.number = number
        self._jpeg: bytes | None = None
        self._ready = asyncio.Event()
        self.closed = False
        self.sent = 0
        self.skipped = 0

    def offer(self, jpeg: bytes) -> None:
        if self._jpeg is not None:
            self.skipped += 1  # the connection has not taken the previous one: replace it
        self._jpeg = jpeg
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self) -> bytes | None:
        """The next JPEG to send, or None once the stream is closed."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            if self.closed:
                return None
            jpeg, self._jpeg = self._jpeg, None
            if jpeg is not None:
                self.sent += 1
                return jpeg


class MjpegFeed:
    """One camera's MJPEG: its clients and, while it has any, its encoder thread's stop flag."""

    def __init__(self, pipeline: VideoPipeline) -> None:
        self.pipeline = pipeline
        self.clients: set[MjpegClient] = set()
        self.stop: threading.Event | None = None  # the running thread's stop flag

    def publish(self, jpeg: bytes) -> None:
        for client in tuple(self.clients):
            client.offer(jpeg)


class MjpegBroadcaster:
    """The MJPEG component: clients, and per camera the encoder thread that serves them while
    any exist. `mjpeg.max_clients` counts every camera's clients together."""

    name = "mjpeg"

    def __init__(self, camera: Callable[[str | None], VideoPipeline], config: MjpegConfig) -> None:
        self.camera = camera  # name (None: the first) -> that camera's pipeline
        self.config = config
        self._feeds: dict[str, MjpegFeed] = {}
        self._feed_of: dict[MjpegClient, MjpegFeed] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._numbers = 0
        self.encoders_started = 0
        self.frames_encoded = 0
        self.errors = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._feed_of)

    @property
    def clients(self) -> tuple[MjpegClient, ...]:
        return tuple(self._feed_of)

    # --- Component --------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        """End every client's stream and wait for the encoder threads."""
        self.closed = True
        for client in self.clients:
            self.leave(client)
        threads, self._threads = self._threads, []
        await asyncio.to_thread(lambda: [t.join(2.0) for t in threads])

    def health(self) -> dict[str, Any]:
        return {
            "clients": len(self),
            "max_clients": self.config.max_clients,
            "fps": self.config.fps,
            "encoding": any(feed.stop is not None for feed in self._feeds.values()),
            "frames_encoded": self.frames_encoded,
        }

    def apply_config(self, config: Config) -> None:
        self.config = config.mjpeg  # the threads read rate and quality at every frame

    # --- clients ----------------------------------------------------------------------------

    def join(self, camera: str | None = None) -> MjpegClient:
        """A new client of `camera` (None: the first); UnknownCamera for a name no camera has."""
        if self.closed:
            raise MjpegFull("robotcam is shutting down")
        if len(self) >= self.config.max_clients:
            raise MjpegFull(f"MJPEG client limit reached ({self.config.max_clients}): try again later")
        pipeline = self.camera(camera)
        feed = self._feeds.get(pipeline.name)
        if feed is None or feed.pipeline is not pipeline:  # new, or a reload replaced the camera
            feed = self._feeds[pipeline.name] = MjpegFeed(pipeline)
        self._numbers += 1
        client = MjpegClient(self._numbers)
        feed.clients.add(client)
        self._feed_of[client] = feed
        if feed.stop is None:
            self._start_encoder(feed)
        return client

    def leave(self, client: MjpegClient) -> None:
        client.close()
        feed = self._feed_of.pop(client, None)
        if feed is None:
            return
        feed.clients.discard(client)
        if not feed.clients and feed.stop is not None:
            feed.stop.set()  # the thread ends by itself; stop() joins it
            feed.stop = None
            log.info("MJPEG %s: encoder stopped, no clients left", feed.pipeline.name)

    def _start_encoder(self, feed: MjpegFeed) -> None:
        self._loop = asyncio.get_running_loop()
        stop = feed.stop = threading.Event()
        thread = threading.Thread(target=self._main, args=(feed, stop), name="robotcam-mjpeg", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        self.encoders_started += 1
        thread.start()
        log.info("MJPEG %s: encoder started for the first client (%g fps)", feed.pipeline.name, self.config.fps)

    # --- the encoder threads ----------------------------------------------------------------

    def _main(self, feed: MjpegFeed, stop: threading.Event) -> None:
        pipeline = feed.pipeline
        encoder: JpegEncoder | None = None
        last_sequence = -1
        due = time.monotonic()
        while not stop.is_set():
            delay = due - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
            sequence = pipeline.latest.sequence
            if sequence == last_sequence or pipeline.picture_problem() is not None:
                stop.wait(IDLE_POLL)  # no new picture yet: look again shortly
                continue
            config = self.config
            period, now = 1.0 / config.fps, time.monotonic()
            due = due + period if due + period >= now else now + period  # late: no burst
            if encoder is None or encoder.quality != config.quality:
                encoder = JpegEncoder(config.quality)
            try:
                jpeg = encoder.encode(pipeline.picture())
            except StillError:
                continue
            except Exception:  # noqa: BLE001 - one bad frame must not end the stream
                self.errors += 1
                encoder = None
                if self.errors <= 3:
                    log.exception("MJPEG: encoding a frame failed")
                continue
            last_sequence = sequence
            self.frames_encoded += 1
            loop = self._loop
            if loop is None or loop.is_closed():
                break
            try:
                loop.call_soon_threadsafe(feed.publish, jpeg)
            except RuntimeError:  # the loop closed meanwhile: shutting down
                break
