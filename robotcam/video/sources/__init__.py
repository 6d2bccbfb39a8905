"""Video sources: each owns one device (or generator) and hands frames or packets to the pipeline."""

from robotcam.video.sources.base import SourceError, SourceSink, ThreadedSource, VideoSource
from robotcam.video.sources.select import open_source

__all__ = ["SourceError", "SourceSink", "ThreadedSource", "VideoSource", "open_source"]
