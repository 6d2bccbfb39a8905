"""robotcam: one camera, encoded once, streamed over WebRTC to every browser that asks."""

__version__ = "0.1.0"
