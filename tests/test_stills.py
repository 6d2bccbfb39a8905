"""GET /snapshot.jpg: the newest picture at once, with nobody watching; 503 when the camera stalls."""

from __future__ import annotations

import threading
import time

from robotcam.config import VideoConfig
from robotcam.video.sources.testpattern import TestPatternSource
from robotcam.video.stills import jpeg_qscale
from tests.conftest import make_config, wait_until
from tests.media_support import decode_jpeg, jpeg_number


async def test_snapshot_with_no_viewer_is_the_live_picture_at_the_camera_size(robot_factory) -> None:
    robot = await robot_factory(make_config(video={"width": 320, "height": 240, "fps": 30}))
    daemon = robot.daemon
    await wait_until(lambda: daemon.pipeline.healthy(), what="frames flowing")
    assert daemon.pipeline.encoders == {} and len(daemon.peers) == 0  # nobody watches
    encoded_before = daemon.snapshots.encoded
    time_start = time.perf_counter()
    response = await robot.http.get("/snapshot.jpg")
    body = await response.read()
    answer_time = time.perf_counter() - time_start
    live = daemon.pipeline.source.frame_number
    print(f"snapshot answered in {answer_time * 1000:.1f} ms")
    assert response.status == 200, body
    assert response.content_type == "image/jpeg"
    assert response.headers["Cache-Control"] == "no-store"
    assert answer_time < 2.0  # generous: the figure that matters is in scripts/bench_snapshot.py
    frame = decode_jpeg(body)
    assert (frame.width, frame.height) == (320, 240)
    number = jpeg_number(body)
    assert number is not None
    assert 0 <= live - number <= 15, (live, number)  # within 0.5 s at 30 fps
    assert daemon.snapshots.encoded == encoded_before + 1
    assert daemon.pipeline.encoders == {}  # no video encoder was started for it

    # nothing is encoded while nobody asks; the next request shows a newer picture
    await wait_until(lambda: daemon.pipeline.source.frame_number > live + 3, what="new frames")
    assert daemon.snapshots.encoded == encoded_before + 1
    again = await robot.http.get("/snapshot.jpg", params={"camera": "main"})
    assert again.status == 200
    assert jpeg_number(await again.read()) > number

    # cameras other than "main" do not exist (yet)
    unknown = await robot.http.get("/snapshot.jpg", params={"camera": "arm"})
    assert unknown.status == 404
    assert await unknown.json() == {"error": "unknown camera 'arm': the cameras are main", "cameras": ["main"]}
    assert unknown.headers["Cache-Control"] == "no-store"


def test_jpeg_quality_maps_onto_ffmpeg_qscale() -> None:
    assert jpeg_qscale(100) == 2 and jpeg_qscale(1) == 31
    assert jpeg_qscale(85) < jpeg_qscale(50) < jpeg_qscale(10)


class HangingSource(TestPatternSource):
    """A camera that delivers a few frames, then stays open and silent."""

    def __init__(self, video: VideoConfig) -> None:
        super().__init__(video.width, video.height, video.fps)

    def capture(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self.frame_number < 10:
                self.emit(self.render(self.frame_number, time.time()))
                self.frame_number += 1
            stop.wait(1 / self.fps)


async def test_a_stalled_source_gives_503_json(robot_factory) -> None:
    robot = await robot_factory(
        make_config(video={"stall_timeout": 1.0}),
        source_factory=lambda video: (HangingSource(video), "test"),
    )
    deadline = time.monotonic() + 15
    while True:
        response = await robot.http.get("/snapshot.jpg")
        if response.status == 503 or time.monotonic() > deadline:
            break
        await response.read()
    assert response.status == 503
    body = await response.json()
    assert body["error"].startswith("no snapshot: ")
    stream = await robot.http.get("/stream.mjpg")
    assert stream.status == 503 and "error" in await stream.json()
