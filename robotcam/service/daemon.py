"""The media side of the service: the cameras' pipelines and the viewers, without HTTP.

Tests and the service both drive it the same way: start(), serve offers, stop(). Stop runs in
reverse order of start: viewers first, then encoders and sources, then the ICE address pin.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from robotcam import __version__
from robotcam.audio.component import AudioComponent
from robotcam.audio.talk import TalkbackComponent
from robotcam.auth import AccessControl
from robotcam.config import Config
from robotcam.webrtc.control import ControlBridge
from robotcam.http.events import EventHub
from robotcam.webrtc.ice import pin_host_addresses
from robotcam.service.metrics import Metrics
from robotcam.video.mjpeg import MjpegBroadcaster
from robotcam.webrtc.peers import PeerManager
from robotcam.video.cameras import Cameras
from robotcam.video.pipeline import SourceFactory, VideoPipeline
from robotcam.publish import PublishComponent, PublishTiming
from robotcam.record.recorder import Recorder
from robotcam.service.process import process_report
from robotcam.tasks import TaskSet
from robotcam.video.sources import open_source
from robotcam.video.stills import Snapshots

DEGRADED_FPS_RATIO = 0.5  # measured below half the configured rate: degraded
CAMERA_STATE_POLL = 0.5  # seconds between looks at the cameras' states for pages

log = logging.getLogger(__name__)


class Component(Protocol):
    """A singleton beside the video pipeline (microphone, speaker, control bridge). Its
    failures degrade /health but never take video down."""

    name: str

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def health(self) -> dict[str, Any]:
        """Its section of /health; {"ok": False, ...} marks the daemon degraded."""
        ...
    def apply_config(self, config: Config) -> None:
        """A reload: take what can change live."""
        ...


class Daemon:
    def __init__(
        self, config: Config, source_factory: SourceFactory = open_source,
        publish_timing: PublishTiming | None = None,
    ) -> None:
        self.config = config
        self.cameras = Cameras(config.camera_configs(), source_factory)
        self.peers = PeerManager(self.cameras, config.webrtc)
        self.components: list[Component] = []
        self.access = AccessControl(config)  # who may watch, talk and drive
        self.components.append(self.access)
        # Components register here, each with its peer extension when it has one.
        self.control = ControlBridge(config.control)  # data channel <-> robot program
        self.components.append(self.control)
        self.peers.extensions.append(self.control.extension)
        self.events = EventHub()  # GET /api/events: named server-sent events for pages
        self.audio = AudioComponent(config)  # microphone/tone -> every viewer, Opus once
        self.talkback = TalkbackComponent(config, self.events)  # one viewer -> speaker
        self.components += [self.events, self.audio, self.talkback]
        self.peers.extensions += [self.audio.extension, self.talkback.extension]
        self.snapshots = Snapshots(self.cameras.get, config.snapshot)  # GET /snapshot.jpg
        self.mjpeg = MjpegBroadcaster(self.cameras.get, config.mjpeg)  # GET /stream.mjpg
        self.recorder = Recorder(self.cameras.get, config.recording, self.audio)  # fMP4 segments, /api/recordings
        self.components += [self.snapshots, self.mjpeg, self.recorder]
        # GET /metrics; components may add their own metrics to self.metrics.registry
        self.metrics = Metrics(self)
        self.peers.extensions.append(self.metrics.viewers)
        # WHIP publishers: readers of the shared hubs, never viewers (last: stops first)
        self.publish = PublishComponent(config, self.cameras.get, self.audio, publish_timing)
        self.components.append(self.publish)
        self.started_at = time.monotonic()
        self._tasks = TaskSet()  # the camera-state watcher
        self._unpin = lambda: None
        self._started: list[Component] = []

    @property
    def pipeline(self) -> VideoPipeline:
        """The first camera: what stills, MJPEG, recording and publishing show by default."""
        return self.cameras.first

    async def start(self) -> None:
        """ICE pin, video, then components in order; a failure undoes what started."""
        self._unpin = pin_host_addresses(self.config.webrtc.host_addresses)
        try:
            await self.cameras.start()
            for component in self.components:
                await component.start()
                self._started.append(component)
            self._tasks.spawn(self._publish_camera_states(), "robotcam-camera-states")
        except BaseException:
            await self._stop_components()
            await self.cameras.stop()
            self._unpin()
            raise

    async def stop(self) -> None:
        """Viewers first, then components in reverse order, then video."""
        try:
            await self._tasks.close()
            await self.peers.close_all()
            await self._stop_components()
            await self.cameras.stop()
        finally:
            self._unpin()

    async def _stop_components(self) -> None:
        while self._started:
            component = self._started.pop()
            try:
                await component.stop()
            except Exception:  # noqa: BLE001 - the rest must still be released
                log.exception("stopping %s failed", component.name)

    def apply_config(self, config: Config) -> None:
        """Take a reloaded config for everything but the video pipeline (see reload.py)."""
        if config.webrtc.host_addresses != self.config.webrtc.host_addresses:
            self._unpin()
            self._unpin = pin_host_addresses(config.webrtc.host_addresses)
        self.config = config
        self.peers.webrtc = config.webrtc
        for component in self.components:
            component.apply_config(config)
        self.revoke_stale_viewers()

    def revoke_stale_viewers(self) -> int:
        """Close the viewers whose user or token a reload removed or changed."""
        return self.peers.revoke(self.access.current, "its user or token was removed or changed")

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _publish_camera_states(self) -> None:
        """The page's per-camera "reconnecting": a retained `cameras` event (GET /api/events)
        whenever a camera's state changes. Polled: states change in source threads and
        supervisors, and a second's delay is nothing next to a camera's recovery."""
        last: dict[str, Any] | None = None
        while True:
            states = {
                p.name: {"state": "running" if p.healthy() else "stalled" if p.state == "running" else p.state,
                         "reason": p.reason}
                for p in self.cameras
            }
            if states != last:
                self.events.publish("cameras", states, retain=True)
                last = states
            await asyncio.sleep(CAMERA_STATE_POLL)

    def camera_health(self) -> dict[str, dict[str, Any]]:
        """Per camera: the pipeline's report, whether it is ok, and how many viewers watch it."""
        watching = self.peers.viewers_by_camera()
        warm = time.monotonic() - self.started_at > 5
        report = {}
        for pipeline in self.cameras:
            video = pipeline.snapshot()
            slow = warm and video["fps_measured"] < pipeline.video.fps * DEGRADED_FPS_RATIO
            video["ok"] = pipeline.healthy() and not slow
            video["viewers"] = watching[pipeline.name]
            report[pipeline.name] = video
        return report

    def health(self) -> dict[str, Any]:
        """What /health reports: failing (503) when no camera's frames flow, degraded when some
        camera fails or is slow or the viewer limit is reached, ok otherwise."""
        cameras = self.camera_health()
        viewers = len(self.peers)
        limit = self.config.webrtc.max_peers
        sections = {component.name: component.health() for component in self.components}
        if not self.cameras.healthy():
            status = "failing"
        elif (
            any(not camera["ok"] for camera in cameras.values())
            or viewers >= limit or any(section.get("ok") is False for section in sections.values())
        ):
            status = "degraded"
        else:
            status = "ok"
        return {
            "status": status,
            "version": __version__,
            "uptime": round(time.monotonic() - self.started_at, 1),
            "video": cameras[self.pipeline.name],
            "cameras": cameras,
            **sections,
            "peers": {"count": viewers, "max": limit, "sessions": self.peers.snapshot()},
            "process": process_report(),
        }

    def status_line(self) -> str:
        """One line for `systemctl status`: '3 viewers, 30.0 fps, testpattern', or with several
        cameras '3 viewers, 2 cameras at 30.0/15.0 fps; failing: arm (failed)'."""
        viewers = len(self.peers)
        head = f"{viewers} viewer{'s' if viewers != 1 else ''}, "
        if len(self.cameras) == 1:
            pipeline = self.pipeline
            return (
                head + f"{pipeline.measured_fps():.1f} fps, {pipeline.source_name}"
                + ("" if pipeline.healthy() else f" ({pipeline.state})")
            )
        rates = "/".join(f"{p.measured_fps():.1f}" for p in self.cameras)
        failing = ", ".join(f"{p.name} ({p.state})" for p in self.cameras.failing())
        return head + f"{len(self.cameras)} cameras at {rates} fps" + (f"; failing: {failing}" if failing else "")
