"""GET /stream.mjpg: one shared encoder at the configured rate, slow clients skip, a limit."""

from __future__ import annotations

import asyncio
import socket

from tests.conftest import make_config, wait_until
from tests.media_support import jpeg_number, read_parts

FPS = 10


async def test_mjpeg_rate_shared_encoder_slow_client_and_limit(robot_factory) -> None:
    # 720p at the best quality: big JPEGs fill a stalled connection's buffers within seconds
    robot = await robot_factory(make_config(
        video={"width": 1280, "height": 720}, mjpeg={"fps": FPS, "max_clients": 3, "quality": 100},
    ))
    mjpeg = robot.daemon.mjpeg
    assert mjpeg.encoders_started == 0  # nothing runs before anyone watches

    # a client that connects and then never reads, on a tiny receive window
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(stalled, (robot.http.host, robot.http.port))
    await loop.sock_sendall(stalled, b"GET /stream.mjpg HTTP/1.1\r\nHost: robot\r\n\r\n")
    await wait_until(lambda: len(mjpeg) == 1, what="stalled client joined")
    (stalled_client,) = mjpeg.clients
    try:
        first = await robot.http.get("/stream.mjpg")
        second = await robot.http.get("/stream.mjpg", params={"camera": "main"})
        assert first.status == second.status == 200
        assert first.headers["Cache-Control"] == "no-store"
        one, two = await asyncio.gather(read_parts(first, 25), read_parts(second, 25))

        numbers = [jpeg_number(body) for _, body in one]
        assert None not in numbers
        assert len(set(numbers)) == len(numbers) >= 20  # distinct pictures
        assert numbers == sorted(numbers)
        elapsed = one[-1][0] - one[0][0]
        rate = (len(one) - 1) / elapsed
        print(f"MJPEG: {rate:.1f} fps for a {FPS} fps setting")
        assert FPS / 3 <= rate <= FPS * 1.5, rate  # about the configured rate, not the camera's 30

        # shared: one encoder, the very same JPEG bytes to both clients
        assert mjpeg.encoders_started == 1
        assert len({body for _, body in one} & {body for _, body in two}) >= 15

        # once its connection is full, the stalled client skips frames; the others go on at
        # the same rate
        started = asyncio.get_running_loop().time()
        while stalled_client.skipped == 0:
            await read_parts(first, 1)
            await read_parts(second, 1)
            assert asyncio.get_running_loop().time() - started < 30, (stalled_client.sent, len(one[0][1]))
        after = await read_parts(first, 10)
        rate_after = (len(after) - 1) / (after[-1][0] - after[0][0])
        print(f"MJPEG: {rate_after:.1f} fps beside a stalled client ({stalled_client.sent} sent, "
              f"{stalled_client.skipped} skipped)")
        assert rate_after >= FPS / 3

        # the limit: 3 clients are in, a 4th is refused with JSON
        refused = await robot.http.get("/stream.mjpg")
        assert refused.status == 503
        assert (await refused.json())["max_clients"] == 3

        unknown = await robot.http.get("/stream.mjpg", params={"camera": "arm"})
        assert unknown.status == 404 and (await unknown.json())["cameras"] == ["main"]
        first.close()
        second.close()
    finally:
        stalled.close()
    # the encoder stops with the last client
    await wait_until(lambda: len(mjpeg) == 0 and not mjpeg.health()["encoding"], what="encoder stopped")
    encoded = mjpeg.frames_encoded
    await asyncio.sleep(0.5)
    assert mjpeg.frames_encoded <= encoded + 1
