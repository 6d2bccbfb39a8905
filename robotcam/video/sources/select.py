"""Choosing the video source named by `video.source`, and saying why.

`auto` takes the Pi camera when picamera2 imports and lists a camera, else the first V4L2
capture device, else the test pattern. The reason goes to the log and to /health. Camera
modules are imported only when needed: picamera2 exists only on Raspberry Pi OS. With several
cameras, `taken` holds the devices the others hold ("/dev/video0", "Pi camera 0"): `auto`
never picks one of those, so two cameras never fight over one device.
"""

from __future__ import annotations

import logging

from robotcam.config import VideoConfig
from robotcam.video.sources.base import VideoSource
from robotcam.video.sources.testpattern import TestPatternSource

log = logging.getLogger(__name__)


def _picamera(video: VideoConfig, taken: frozenset[str]) -> VideoSource:
    from robotcam.video.sources.picamera import PicameraSource

    return PicameraSource(video)


def _v4l2(video: VideoConfig, taken: frozenset[str]) -> VideoSource:
    from robotcam.video.sources.v4l2 import V4L2Source

    return V4L2Source(video, taken)


def _file(video: VideoConfig, taken: frozenset[str]) -> VideoSource:
    from robotcam.video.sources.file import FileSource

    return FileSource(video)


def _testpattern(video: VideoConfig, taken: frozenset[str]) -> VideoSource:
    return TestPatternSource(video.width, video.height, video.fps)


_BY_NAME = {"picamera": _picamera, "v4l2": _v4l2, "file": _file, "testpattern": _testpattern}


def choose_auto(
    video: VideoConfig, skip: frozenset[str] = frozenset(), taken: frozenset[str] = frozenset(),
) -> tuple[str, str]:
    """(source name, why) for `video.source: auto`, passing over sources in `skip` (ones that
    failed to open) and devices in `taken` (other cameras'). Never raises."""
    from robotcam.video.sources import picamera, v4l2

    reasons = []
    pi_camera = f"Pi camera {video.picamera.camera}"
    if "picamera" not in skip and pi_camera in taken:
        reasons.append(f"{pi_camera} is another camera's")
    elif "picamera" not in skip:
        found, why = picamera.probe()
        if found:
            return "picamera", f"video.source is auto: {why}"
        reasons.append(f"no Pi camera ({why})")
    if "v4l2" not in skip:
        device = video.device or v4l2.first_capture_device(exclude=taken)
        if device:
            return "v4l2", f"video.source is auto: {'; '.join(reasons + [f'using V4L2 camera {device}'])}"
        reasons.append("no V4L2 capture device" + (" that no other camera holds" if taken else ""))
    return "testpattern", f"video.source is auto: {'; '.join(reasons)}; showing the test pattern"


def open_source(video: VideoConfig, taken: frozenset[str] = frozenset()) -> tuple[VideoSource, str]:
    """The source to run and why it was chosen. Blocking (probes devices): call off the loop.
    The caller opens it; a SourceError from open() names the key to fix."""
    if video.source == "auto":
        name, why = choose_auto(video, taken=taken)
    else:
        name, why = video.source, f"video.source is {video.source}"
    return _BY_NAME[name](video, taken), why


def fallback(
    video: VideoConfig, failed: VideoSource, error: Exception, taken: frozenset[str] = frozenset(),
) -> tuple[VideoSource, str] | None:
    """With `auto`, the next choice after `failed` could not be opened; None otherwise."""
    if video.source != "auto" or failed.name == "testpattern":
        return None
    skip = frozenset({"picamera"} if failed.name == "picamera" else {"picamera", "v4l2"})
    name, why = choose_auto(video, skip, taken)
    log.warning("%s; video.source is auto: trying %s instead", error, name)
    return _BY_NAME[name](video, taken), f"{why} ({failed.name} could not be used: {error})"
