"""Choosing the video source named by `video.source`, and saying why.

`auto` takes the Pi camera when picamera2 imports and lists a camera, else the first V4L2
capture device, else the test pattern. The reason goes to the log and to /health. Camera
modules are imported only when needed: picamera2 exists only on Raspberry Pi OS.
"""

from __future__ import annotations

import logging

from robotcam.config import VideoConfig
from robotcam.video.sources.base import VideoSource
from robotcam.video.sources.testpattern import TestPatternSource

log = logging.getLogger(__name__)


def _picamera(video: VideoConfig) -> VideoSource:
    from robotcam.video.sources.picamera import PicameraSource

    return PicameraSource(video)


def _v4l2(video: VideoConfig) -> VideoSource:
    from robotcam.video.sources.v4l2 import V4L2Source

    return V4L2Source(video)


def _file(video: VideoConfig) -> VideoSource:
    from robotcam.video.sources.file import FileSource

    return FileSource(video)


def _testpattern(video: VideoConfig) -> VideoSource:
    return TestPatternSource(video.width, video.height, video.fps)


_BY_NAME = {"picamera": _picamera, "v4l2": _v4l2, "file": _file, "testpattern": _testpattern}


def choose_auto(video: VideoConfig, skip: frozenset[str] = frozenset()) -> tuple[str, str]:
    """(source name, why) for `video.source: auto`, passing over sources in `skip` (ones that
    failed to open). Never raises."""
    from robotcam.video.sources import picamera, v4l2

    reasons = []
    if "picamera" not in skip:
        found, why = picamera.probe()
        if found:
            return "picamera", f"video.source is auto: {why}"
        reasons.append(f"no Pi camera ({why})")
    if "v4l2" not in skip:
        device = video.device or v4l2.first_capture_device()
        if device:
            return "v4l2", f"video.source is auto: {'; '.join(reasons + [f'using V4L2 camera {device}'])}"
        reasons.append("no V4L2 capture device")
    return "testpattern", f"video.source is auto: {'; '.join(reasons)}; showing the test pattern"


def open_source(video: VideoConfig) -> tuple[VideoSource, str]:
    """The source to run and why it was chosen. Blocking (probes devices): call off the loop.
    The caller opens it; a SourceError from open() names the key to fix."""
    if video.source == "auto":
        name, why = choose_auto(video)
    else:
        name, why = video.source, f"video.source is {video.source}"
    return _BY_NAME[name](video), why


def fallback(video: VideoConfig, failed: VideoSource, error: Exception) -> tuple[VideoSource, str] | None:
    """With `auto`, the next choice after `failed` could not be opened; None otherwise."""
    if video.source != "auto" or failed.name == "testpattern":
        return None
    skip = frozenset({"picamera"} if failed.name == "picamera" else {"picamera", "v4l2"})
    name, why = choose_auto(video, skip)
    log.warning("%s; video.source is auto: trying %s instead", error, name)
    return _BY_NAME[name](video), f"{why} ({failed.name} could not be used: {error})"
