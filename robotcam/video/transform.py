"""Frame preparation, once per frame before any encoder: flips, size and pixel format.

Sources deliver what their device gives (MJPEG decodes to yuvj422p, webcams pick their own
sizes); the encoders want yuv420p at the configured size. Doing it here, once, means two
encoders (H.264 and VP8) never convert the same frame twice. Sources that flip in hardware
(the Pi camera's ISP) skip the flips.
"""

from __future__ import annotations

import av
import numpy as np


def flip_yuv420p(frame: av.VideoFrame, horizontal: bool, vertical: bool) -> av.VideoFrame:
    """Mirror a yuv420p frame; both flips together are a 180-degree rotation."""
    if not (horizontal or vertical):
        return frame
    w, h = frame.width, frame.height
    data = frame.to_ndarray()  # planes stacked: Y (h rows), then U and V (h/4 rows each)
    y = data[:h]
    u = data[h:h + h // 4].reshape(h // 2, w // 2)
    v = data[h + h // 4:].reshape(h // 2, w // 2)
    step = (slice(None, None, -1) if vertical else slice(None), slice(None, None, -1) if horizontal else slice(None))
    planes = [np.ascontiguousarray(p[step]).ravel() for p in (y, u, v)]
    out = av.VideoFrame.from_ndarray(np.concatenate(planes).reshape(-1, w), format="yuv420p")
    _keep_timing(frame, out)
    return out


def _keep_timing(source: av.VideoFrame, target: av.VideoFrame) -> None:
    target.pts = source.pts
    if source.time_base is not None:
        target.time_base = source.time_base


def prepare(frame: av.VideoFrame, width: int, height: int, hflip: bool, vflip: bool) -> av.VideoFrame:
    """A yuv420p frame of the configured size, flipped as configured; the input if it already is."""
    if frame.format.name != "yuv420p" or frame.width != width or frame.height != height:
        converted = frame.reformat(width=width, height=height, format="yuv420p")
        _keep_timing(frame, converted)
        frame = converted
    return flip_yuv420p(frame, hflip, vflip)
