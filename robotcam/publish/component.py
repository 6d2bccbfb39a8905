"""The daemon component owning every publisher: one per `publish` entry.

It owns the aiohttp client session (their sockets) and the tasks that stop publishers a
reload removed. A reload adds, removes and changes entries by URL; local viewers are never
touched. Stop ends every publisher at once (each DELETEs its session, bounded), before the
pipeline stops (the daemon stops components in reverse order).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

import aiohttp

from robotcam.audio.component import AudioComponent
from robotcam.config import Config, PublishEntry
from robotcam.video.pipeline import VideoPipeline
from robotcam.publish.publisher import PublishMedia, Publisher, PublishTiming
from robotcam.tasks import TaskSet

log = logging.getLogger(__name__)


class PublishComponent:
    """Component protocol (daemon.py): start, stop, health, apply_config."""

    name = "publish"

    def __init__(
        self, config: Config, camera: Callable[[str | None], VideoPipeline], audio: AudioComponent,
        timing: PublishTiming | None = None,
    ) -> None:
        self.entries = list(config.publish)
        self.media = PublishMedia(camera, audio, config.webrtc)
        self.timing = timing or PublishTiming()
        self.publishers: dict[str, Publisher] = {}  # by URL
        self._http: aiohttp.ClientSession | None = None
        self._tasks = TaskSet()  # stopping publishers a reload removed or changed
        self._restarting: set[str] = set()  # URLs whose old publisher is still stopping

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        for index, entry in enumerate(self.entries):
            self._start(entry, index)

    async def stop(self) -> None:
        """Every publisher at once (DELETE each session), and the removals under way."""
        publishers, self.publishers = list(self.publishers.values()), {}
        await asyncio.gather(
            *(p.stop() for p in publishers), self._tasks.close(self.timing.delete_timeout + 1.0),
            return_exceptions=True,
        )
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _start(self, entry: PublishEntry, index: int) -> None:
        assert self._http is not None, "start() first"
        publisher = Publisher(entry, index, self.media, self._http, self.timing)
        self.publishers[entry.url] = publisher
        publisher.start()
        log.info("publish[%d]: publishing to %s", index, entry.masked_url)

    def apply_config(self, config: Config) -> None:
        """Entries by URL: new ones start, removed ones stop (DELETE), changed ones restart."""
        self.media.webrtc = config.webrtc
        self.entries = list(config.publish)
        if self._http is None:
            return  # not started: start() reads self.entries
        wanted = {entry.url: (index, entry) for index, entry in enumerate(config.publish)}
        for url, publisher in list(self.publishers.items()):
            index, entry = wanted.get(url, (None, None))
            if entry is not None and entry == publisher.entry:
                publisher.index = index  # may have moved in the list
                continue
            del self.publishers[url]
            if entry is None:
                log.info("%s: removed from the config: stopping", publisher.label)
                self._tasks.spawn(publisher.stop(), "robotcam-publish-stop")
            else:
                log.info("%s: changed: reconnecting", publisher.label)
                self._restarting.add(url)
                self._tasks.spawn(self._restart(publisher, entry, index), "robotcam-publish-restart")
        for url, (index, entry) in wanted.items():
            if url not in self.publishers and url not in self._restarting:
                self._start(entry, index)

    async def _restart(self, old: Publisher, entry: PublishEntry, index: int) -> None:
        try:
            await old.stop()  # its DELETE before the new session's POST
        finally:
            self._restarting.discard(entry.url)
        if self._http is not None and entry.url not in self.publishers and entry in self.entries:
            self._start(entry, self.entries.index(entry))

    def health(self) -> dict[str, Any]:
        publishers = [p.health() for p in self.publishers.values()]
        return {"ok": all(p["ok"] for p in publishers), "publishers": publishers}
