"""Every camera of the robot: one VideoPipeline each, by name, in config order.

Each camera has its own source, encoders, hubs, recovery and stall detection, so a failing
camera never stalls another. They share one clock (a viewer's track can move between cameras
and its timestamps still only go forward) and one rule: a device belongs to one camera, and
`auto` passes over what another camera holds.

With one camera nothing changes from before: it must open at start, or the daemon does not
start. With several, a camera that cannot be opened starts failed, shows why in /health and is
retried with backoff; only every camera failing stops the start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Iterator

from robotcam.config import VideoConfig, device_of
from robotcam.video.pipeline import SourceFactory, VideoPipeline
from robotcam.video.sources import SourceError, open_source

log = logging.getLogger(__name__)


class UnknownCamera(KeyError):
    """A camera name no camera has; the message lists the names there are."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = known

    def __str__(self) -> str:
        return f"unknown camera {self.name!r}: the cameras are {', '.join(self.known)}"


class Cameras:
    """The cameras' pipelines. Event-loop only."""

    def __init__(self, configs: dict[str, VideoConfig], source_factory: SourceFactory = open_source) -> None:
        self._factory = source_factory
        self.epoch = time.monotonic()  # pts 0 of every camera
        self.pipelines: dict[str, VideoPipeline] = {}
        self._named_logs = len(configs) > 1
        for name, video in configs.items():
            self.pipelines[name] = self._pipeline(name, video)

    def _pipeline(self, name: str, video: VideoConfig) -> VideoPipeline:
        factory = self._factory
        if factory is open_source:  # the real chooser: tell `auto` what the others hold
            def factory(video: VideoConfig) -> Any:  # noqa: F811 - the same factory, told more
                return open_source(video, self.taken_by_others(name))
        return VideoPipeline(video, factory, name, self.epoch, lambda: self.taken_by_others(name),
                             self._named_logs)

    def taken_by_others(self, name: str) -> frozenset[str]:
        """Devices every other camera is configured with or holds now."""
        taken: set[str] = set()
        for other, pipeline in self.pipelines.items():
            if other == name:
                continue
            device = device_of(pipeline.video)
            if device is not None:
                taken.add(device[1])
            held = pipeline.source.claim() if pipeline.source is not None else None
            if held:
                taken.add(held)
        return frozenset(taken)

    # --- lookup -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[VideoPipeline]:
        return iter(tuple(self.pipelines.values()))

    def __len__(self) -> int:
        return len(self.pipelines)

    @property
    def names(self) -> list[str]:
        return list(self.pipelines)

    @property
    def first(self) -> VideoPipeline:
        return next(iter(self.pipelines.values()))

    def get(self, name: str | None) -> VideoPipeline:
        """The camera called `name` (None or "": the first); UnknownCamera otherwise."""
        if not name:
            return self.first
        pipeline = self.pipelines.get(name)
        if pipeline is None:
            raise UnknownCamera(name, self.names)
        return pipeline

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start every camera in config order (so `auto` choices are the same every time). One
        camera must open; of several, at least one."""
        required = len(self.pipelines) == 1
        started: list[VideoPipeline] = []
        try:
            for pipeline in self:
                await pipeline.start(required=required)
                started.append(pipeline)
        except BaseException:
            await asyncio.gather(*(p.stop() for p in started), return_exceptions=True)
            raise
        if not required and all(p.source is None for p in self):
            problems = "; ".join(f"{p.name}: {p.reason}" for p in self)
            await self.stop()
            raise SourceError(f"no camera could be opened ({problems})")

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self), return_exceptions=True)

    async def reconfigure(self, configs: dict[str, VideoConfig]) -> None:
        """A reload: a removed camera stops (its viewers' tracks end), an added one starts
        (failed if it cannot open, retried), a changed one applies its new settings; the others
        see nothing. Raises the first camera's error after doing all the rest."""
        self._named_logs = self._named_logs or len(configs) > 1
        errors: list[BaseException] = []
        for name in [n for n in self.pipelines if n not in configs]:
            pipeline = self.pipelines.pop(name)
            log.info("camera %s removed: stopping it", name)
            await pipeline.stop()
        for name, video in configs.items():
            pipeline = self.pipelines.get(name)
            if pipeline is None:
                log.info("camera %s added: starting it", name)
                pipeline = self.pipelines[name] = self._pipeline(name, video)
                await pipeline.start(required=False)
            elif pipeline.video != video:
                try:
                    await pipeline.reconfigure(video)
                except Exception as exc:  # noqa: BLE001 - the others still get theirs
                    errors.append(exc)
        self.pipelines = {name: self.pipelines[name] for name in configs}  # config order
        if errors:
            raise errors[0]

    # --- health -----------------------------------------------------------------------------

    async def first_frame(self) -> None:
        """Until some camera has produced a frame."""
        waits = [asyncio.ensure_future(p.first_frame.wait()) for p in self]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()

    def healthy(self) -> list[VideoPipeline]:
        return [p for p in self if p.healthy()]

    def failing(self) -> list[VideoPipeline]:
        return [p for p in self if not p.healthy()]
