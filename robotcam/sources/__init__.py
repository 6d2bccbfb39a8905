"""Video sources: each owns one device (or generator) and hands raw frames to the pipeline."""

from robotcam.sources.base import FrameCallback, SourceError, ThreadedSource, VideoSource
from robotcam.sources.select import open_source

__all__ = ["FrameCallback", "SourceError", "ThreadedSource", "VideoSource", "open_source"]
