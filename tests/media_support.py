"""Helpers for the snapshot, MJPEG and recording tests: JPEG decoding and a multipart reader."""

from __future__ import annotations

import asyncio
import io
import time

import aiohttp
import av

from robotcam.video.sources.testpattern import decode_frame_number


def decode_jpeg(data: bytes) -> av.VideoFrame:
    with av.open(io.BytesIO(data)) as container:
        return next(container.decode(video=0))


def jpeg_number(data: bytes) -> int | None:
    return decode_frame_number(decode_jpeg(data))


async def read_parts(response: aiohttp.ClientResponse, count: int, timeout: float = 20.0) -> list[tuple[float, bytes]]:
    """Read `count` JPEG parts of a multipart/x-mixed-replace body: (arrival time, bytes)."""
    assert response.content_type == "multipart/x-mixed-replace", response.content_type
    boundary = response.headers["Content-Type"].split("boundary=")[1].encode()
    parts: list[tuple[float, bytes]] = []

    async def read() -> None:
        while len(parts) < count:
            line = await response.content.readline()
            if not line:
                raise AssertionError(f"stream ended after {len(parts)} parts")
            if line.strip() != b"--" + boundary:
                continue
            headers = {}
            while (line := await response.content.readline()).strip():
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            assert headers["content-type"] == "image/jpeg"
            body = await response.content.readexactly(int(headers["content-length"]))
            parts.append((time.monotonic(), body))

    await asyncio.wait_for(read(), timeout)
    return parts
