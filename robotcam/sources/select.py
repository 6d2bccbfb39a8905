"""Choosing and opening the video source named by `video.source`."""

from __future__ import annotations

import logging

from robotcam.config import VideoConfig
from robotcam.sources.base import SourceError, VideoSource
from robotcam.sources.testpattern import TestPatternSource

log = logging.getLogger(__name__)


def open_source(video: VideoConfig) -> tuple[VideoSource, str]:
    """The source to run and why it was chosen (shown in the log and in /health)."""
    if video.source in ("auto", "testpattern"):
        why = (
            "video.source is testpattern"
            if video.source == "testpattern"
            else "video.source is auto and this build has no camera drivers yet"
        )
        return TestPatternSource(video.width, video.height, video.fps), why
    raise SourceError(
        f"video.source: {video.source!r} is not supported by this version of robotcam yet; "
        "use 'testpattern' or 'auto'"
    )
