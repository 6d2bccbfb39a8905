"""Several cameras on one robot (issue #11): config, signaling, switching, failure, reload.

Two real cameras' worth of content without hardware: the test pattern (its frame number decodes)
and a looping file of one flat colour (no frame number, a chroma no test pattern has). A real
aiortc client with several receive-only video sections decodes both, so every assertion is
about pictures that arrived, not about server bookkeeping.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from robotcam.config import ConfigError, Config, parse_config
from robotcam.service.reload import apply_reload
from robotcam.video.sources import SourceError
from robotcam.video.sources.select import open_source
from robotcam.video.sources.testpattern import TestPatternSource, decode_frame_number
from tests.conftest import Robot, make_config, wait_until
from tests.test_file_source import write_clip

FLAT_U, FLAT_V = 200, 60  # the file camera's colour: far from anything the test pattern draws


def flat_clip(path: Path, seconds: float = 1.0, fps: int = 30) -> Path:
    """A looping file of one flat colour at 320x240."""
    def flat(number: int) -> av.VideoFrame:
        frame = av.VideoFrame(320, 240, "yuv420p")
        frame.planes[0].update(np.full(320 * 240, 128, np.uint8).tobytes())
        frame.planes[1].update(np.full(160 * 120, FLAT_U, np.uint8).tobytes())
        frame.planes[2].update(np.full(160 * 120, FLAT_V, np.uint8).tobytes())
        return frame

    return write_clip(path, frames=int(seconds * fps), fps=fps, render=flat)


def which_camera(frame: av.VideoFrame) -> str | None:
    """"front" (the test pattern: its number decodes), "arm" (the flat file) or None."""
    if decode_frame_number(frame) is not None:
        return "front"
    u = frame.to_ndarray(format="yuv420p")[frame.height:frame.height + frame.height // 4].mean()
    return "arm" if abs(u - FLAT_U) < 20 else None


class MultiViewer:
    """An aiortc viewer with `sections` receive-only video sections; records which camera each
    section's decoded frames show."""

    def __init__(self, sections: int) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.transceivers = [self.pc.addTransceiver("video", direction="recvonly") for _ in range(sections)]
        self.seen: list[list[tuple[float, str | None]]] = [[] for _ in range(sections)]
        self._tasks: list[asyncio.Task[None]] = []
        self.ended: list[bool] = [False] * sections

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            index = next(i for i, t in enumerate(self.transceivers) if t.receiver.track is track)
            self._tasks.append(asyncio.ensure_future(self._read(index, track)))

    async def _read(self, index: int, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                self.seen[index].append((time.monotonic(), which_camera(frame)))
        except MediaStreamError:
            self.ended[index] = True

    async def offer_body(self) -> dict[str, str]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": "offer"}

    async def connect(self, http: Any, path: str = "/offer") -> dict[str, Any]:
        response = await http.post(path, json=await self.offer_body())
        body = await response.json()
        assert response.status == 200, body
        await self.pc.setRemoteDescription(RTCSessionDescription(**body))
        return {"session": response.headers["X-Robotcam-Session"], **body}

    def latest(self, index: int, count: int = 5) -> set[str | None]:
        return {camera for _, camera in self.seen[index][-count:]}

    async def wait_showing(self, index: int, camera: str, timeout: float = 15.0) -> None:
        await wait_until(lambda: self.latest(index) == {camera}, timeout, f"video {index} shows {camera}")

    def fps(self, index: int, seconds: float) -> float:
        now = time.monotonic()
        return sum(1 for at, _ in self.seen[index] if now - at <= seconds) / seconds

    async def close(self) -> None:
        await self.pc.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def two_cameras(clip: Path, **extra: Any) -> Config:
    config = make_config(**extra)
    data = config.model_dump(mode="json")
    data.pop("cameras")
    data["cameras"] = {"front": {"source": "testpattern"}, "arm": {"source": "file", "file": str(clip)}}
    return Config.model_validate(data)


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return flat_clip(tmp_path / "flat.mkv")


async def start_two(robot_factory: Any, clip: Path, **extra: Any) -> Robot:
    robot = await robot_factory(two_cameras(clip, **extra))
    await asyncio.wait_for(robot.daemon.cameras.get("arm").first_frame.wait(), 10)
    return robot


# --- config ----------------------------------------------------------------------------------

def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text)
    return caught.value.problems


def test_cameras_inherit_video_and_override_it() -> None:
    config = parse_config(
        "video: {width: 1280, height: 720, fps: 30, bitrate: 2000000}\n"
        "cameras:\n"
        "  front: {source: picamera, picamera: {camera: 0}}\n"
        "  arm: {source: v4l2, device: /dev/video2, width: 640, height: 480}\n"
    )
    front, arm = config.camera_configs()["front"], config.camera_configs()["arm"]
    assert list(config.camera_configs()) == ["front", "arm"]
    assert (front.source, front.width, front.height, front.bitrate) == ("picamera", 1280, 720, 2_000_000)
    assert (arm.source, arm.device, arm.width, arm.height, arm.bitrate) == ("v4l2", "/dev/video2", 640, 480, 2_000_000)
    assert list(parse_config("video: {source: testpattern}").camera_configs()) == ["main"]


def test_camera_config_errors_name_the_key() -> None:
    assert problems("cameras:\n  a: {source: v4l2, device: /dev/video0}\n  b: {source: v4l2, device: /dev/video0}\n") == [
        "cameras.b.device: /dev/video0 is already used by camera 'a'"]
    assert problems("cameras:\n  a: {source: picamera}\n  b: {source: picamera}\n") == [
        "cameras.b.picamera.camera: Pi camera 0 is already used by camera 'a'"]
    assert problems("cameras:\n  'front cam': {source: testpattern}\n") == [
        "cameras: 'front cam' is not a camera name: use 1-32 letters, digits, '-' or '_'"]
    assert problems("cameras:\n  arm: {source: testpattern, devcie: /dev/video0}\n") == [
        "cameras.arm.devcie: unknown key (did you mean 'device'?)"]
    assert problems("cameras:\n  arm: 3\n") == ["cameras.arm: must be a mapping of keys (got an integer)"]
    # a bad video: key is reported once, not again for every camera that inherits it
    assert problems("video: {width: 641}\ncameras:\n  a: {source: testpattern}\n  b: {width: 8}\n") == [
        "video.width: must be an even number (got 641): 4:2:0 video halves it",
        "cameras.b.width: must be at least 64 (got 8)"]
    assert problems("cameras:\n  arm: {source: testpattern}\npublish:\n  - {url: 'http://m/whip', camera: front}\n") == [
        "publish[0].camera: unknown camera 'front': known cameras are arm (empty = the first)"]


def test_auto_never_picks_a_device_another_camera_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    from robotcam.video.sources import picamera, v4l2

    monkeypatch.setattr(picamera, "probe", lambda: (True, "picamera2 found 1 Pi camera(s): imx708"))
    listed = [{"path": "/dev/video0", "kind": "capture", "formats": ["MJPG"]},
              {"path": "/dev/video2", "kind": "capture", "formats": ["YUYV"]}]
    monkeypatch.setattr(v4l2, "list_capture_devices", lambda pattern="/dev/video*": listed)
    video = parse_config("video: {source: auto}").video
    assert open_source(video)[0].name == "picamera"
    source, why = open_source(video, frozenset({"Pi camera 0"}))
    assert source.name == "v4l2" and "Pi camera 0 is another camera's" in why
    source, why = open_source(video, frozenset({"Pi camera 0", "/dev/video0"}))
    assert source.name == "v4l2" and "/dev/video2" in why
    source, why = open_source(video, frozenset({"Pi camera 0", "/dev/video0", "/dev/video2"}))
    assert source.name == "testpattern" and "that no other camera holds" in why


# --- signaling ---------------------------------------------------------------------------------

async def test_two_sections_decode_both_cameras(robot_factory: Any, clip: Path) -> None:
    robot = await start_two(robot_factory, clip, webrtc={"max_peers": 1})
    viewer = MultiViewer(2)
    try:
        await viewer.connect(robot.http)
        await viewer.wait_showing(0, "front")
        await viewer.wait_showing(1, "arm")
        assert len(robot.daemon.peers) == 1  # one viewer watching two cameras is one viewer
        status, health = await robot.health()
        assert set(health["cameras"]) == {"front", "arm"}
        assert health["cameras"]["front"]["source"] == "testpattern"
        assert health["cameras"]["arm"]["source"] == "file"
        assert all(c["viewers"] == 1 and c["state"] == "running" for c in health["cameras"].values())
        assert health["peers"]["sessions"][0]["cameras"] == ["front", "arm"]
        # each camera encodes once, for its own hub
        assert set(robot.daemon.cameras.get("front").encoders) == {"H264"}
        assert set(robot.daemon.cameras.get("arm").encoders) == {"H264"}
    finally:
        await viewer.close()


async def test_camera_query_picks_the_camera(robot_factory: Any, clip: Path) -> None:
    robot = await start_two(robot_factory, clip)
    one, whep, reordered, refused = MultiViewer(1), MultiViewer(1), MultiViewer(2), MultiViewer(1)
    try:
        await one.connect(robot.http, "/offer?camera=arm")
        await one.wait_showing(0, "arm")
        await reordered.connect(robot.http, "/offer?camera=arm")  # named first, then the rest
        await reordered.wait_showing(0, "arm")
        await reordered.wait_showing(1, "front")
        await whep.pc.setLocalDescription(await whep.pc.createOffer())
        response = await robot.http.post("/whep?camera=arm", data=whep.pc.localDescription.sdp,
                                         headers={"Content-Type": "application/sdp"})
        assert response.status == 201, await response.text()
        await whep.pc.setRemoteDescription(RTCSessionDescription(await response.text(), "answer"))
        await whep.wait_showing(0, "arm")
        # unknown names: 404 listing the names there are, on every signaling route
        response = await robot.http.post("/offer?camera=rear", json=await refused.offer_body())
        assert response.status == 404
        assert await response.json() == {
            "error": "unknown camera 'rear': the cameras are front, arm", "cameras": ["front", "arm"]}
        response = await robot.http.post("/whep?camera=rear", data=whep.pc.localDescription.sdp,
                                          headers={"Content-Type": "application/sdp"})
        assert response.status == 404 and "front, arm" in await response.text()
        assert len(robot.daemon.peers) == 3
    finally:
        for viewer in (one, whep, reordered, refused):
            await viewer.close()


async def test_switching_a_section_needs_no_new_offer(robot_factory: Any, clip: Path) -> None:
    robot = await start_two(robot_factory, clip)
    viewer, other = MultiViewer(1), MultiViewer(2)
    try:
        answer = await viewer.connect(robot.http)
        await other.connect(robot.http)
        await viewer.wait_showing(0, "front")
        session = robot.daemon.peers.by_key(answer["session"])
        pc_before = session.pc.localDescription.sdp
        body = {"session": answer["session"], "video": 0, "camera": "arm"}
        response = await robot.http.post("/api/camera", json=body)
        assert response.status == 200, await response.text()
        assert await response.json() == {"video": 0, "camera": "arm", "cameras": ["front", "arm"]}
        switched_at = time.monotonic()
        await viewer.wait_showing(0, "arm")
        gap = max(b - a for (a, _), (b, _) in zip(viewer.seen[0], viewer.seen[0][1:]) if b >= switched_at - 1)
        assert gap < 1.5, f"the picture stood still {gap:.2f} s"  # a keyframe away, not a GOP
        assert session.pc.localDescription.sdp == pc_before  # nothing renegotiated
        response = await robot.http.post("/api/camera", json={**body, "camera": "front"})
        assert response.status == 200
        await viewer.wait_showing(0, "front")
        # the other viewer saw nothing happen
        assert other.latest(0, 30) == {"front"} and other.latest(1, 30) == {"arm"}
        # mistakes get clear errors
        for wrong, status, words in [
            ({**body, "camera": "rear"}, 404, "unknown camera 'rear'"),
            ({**body, "video": 3}, 404, "no video section 3"),
            ({**body, "session": "nope"}, 404, "unknown session"),
            ({"session": answer["session"]}, 400, "missing field 'camera'"),
            ({**body, "video": "0"}, 400, "field 'video'"),
            ([1, 2], 400, "send JSON"),
        ]:
            response = await robot.http.post("/api/camera", json=wrong)
            assert response.status == status and words in (await response.json())["error"], wrong
    finally:
        await viewer.close()
        await other.close()


async def test_switching_over_the_websocket(robot_factory: Any, clip: Path) -> None:
    robot = await start_two(robot_factory, clip)
    viewer = MultiViewer(1)
    ws = await robot.http.ws_connect("/ws?camera=arm")
    try:
        await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
        await ws.send_json({"type": "offer", "sdp": viewer.pc.localDescription.sdp})
        answer = await asyncio.wait_for(ws.receive_json(), 10)
        assert answer["type"] == "answer", answer
        await viewer.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await viewer.wait_showing(0, "arm")
        await ws.send_json({"type": "camera", "video": 0, "camera": "front"})
        assert await asyncio.wait_for(ws.receive_json(), 10) == {"type": "camera", "video": 0, "camera": "front"}
        await viewer.wait_showing(0, "front")
        await ws.send_json({"type": "camera", "video": 0, "camera": "rear"})
        error = await asyncio.wait_for(ws.receive_json(), 10)
        assert error["status"] == 404 and "front, arm" in error["error"]
    finally:
        await ws.close()
        await viewer.close()


async def test_a_websocket_offer_names_its_cameras(robot_factory: Any, clip: Path) -> None:
    robot = await start_two(robot_factory, clip)
    viewer = MultiViewer(2)
    ws = await robot.http.ws_connect("/ws?camera=front")
    try:
        offer = await viewer.offer_body()
        for wrong in (5, [], ["arm", 3], ""):  # clear errors; the socket stays usable
            await ws.send_json({"type": "offer", "sdp": offer["sdp"], "camera": wrong})
            error = await asyncio.wait_for(ws.receive_json(), 10)
            assert error["status"] == 400 and '"camera" names a camera' in error["error"], (wrong, error)
        # the message's list beats the URL's ?camera=
        await ws.send_json({"type": "offer", "sdp": offer["sdp"], "camera": ["arm", "front"]})
        answer = await asyncio.wait_for(ws.receive_json(), 10)
        assert answer["type"] == "answer", answer
        await viewer.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        await viewer.wait_showing(0, "arm")
        await viewer.wait_showing(1, "front")
    finally:
        await ws.close()
        await viewer.close()


# --- failure -----------------------------------------------------------------------------------

class StallingSource(TestPatternSource):
    """A camera that delivers a few frames, then nothing (a wedged USB camera)."""

    def __init__(self, frames: int) -> None:
        super().__init__(320, 240, 30)
        self.left = frames

    def render(self, number: int, now: float) -> av.VideoFrame:
        while self.left <= 0 and not self._stop.is_set():
            self._stop.wait(0.1)
        self.left -= 1
        return super().render(number, now)


class BrokenSource(TestPatternSource):
    """A camera whose driver throws after a few frames."""

    def render(self, number: int, now: float) -> av.VideoFrame:
        if number >= 5:
            raise OSError(5, "Input/output error")
        return super().render(number, now)


async def test_a_failing_camera_leaves_the_others_alone(robot_factory: Any, clip: Path) -> None:
    def factory(video: Any) -> Any:
        if video.device == "/dev/stuck":
            return StallingSource(10), "test: stalls after 10 frames"
        if video.device == "/dev/broken":
            return BrokenSource(320, 240, 30), "test: raises after 5 frames"
        return open_source(video)

    config = two_cameras(clip)
    data = config.model_dump(mode="json")
    data["cameras"] = {
        "front": {**data["cameras"]["front"]},
        "stuck": {**data["cameras"]["front"], "device": "/dev/stuck", "stall_timeout": 1.0},
        "gone": {**data["cameras"]["front"], "source": "v4l2", "device": "/dev/video-not-here"},
        "broken": {**data["cameras"]["front"], "device": "/dev/broken"},
    }
    robot = await robot_factory(Config.model_validate(data), source_factory=factory)
    viewer = MultiViewer(4)
    try:
        await viewer.connect(robot.http)
        await viewer.wait_showing(0, "front")
        await wait_until(lambda: robot.daemon.cameras.get("stuck").state in ("stalled", "failed"), 15, "stuck stalls")
        broken = robot.daemon.cameras.get("broken")  # fails, restarts, runs 5 frames, fails again
        await wait_until(lambda: "Input/output error" in (broken.reason or ""), 15, "broken says why")
        status, health = await robot.health()
        assert status == 200 and health["status"] == "degraded"
        cameras = health["cameras"]
        assert cameras["front"]["state"] == "running" and cameras["front"]["ok"] is True
        assert cameras["gone"]["state"] == "failed" and "/dev/video-not-here" in cameras["gone"]["reason"]
        assert cameras["stuck"]["ok"] is False and "no frame" in cameras["stuck"]["reason"]
        assert cameras["broken"]["restarts"] >= 1
        started = time.monotonic()
        await asyncio.sleep(3)
        assert viewer.fps(0, time.monotonic() - started) > 24  # the good camera keeps its rate
        # systemctl status names the failing cameras (stuck and broken come and go as they retry)
        line = robot.daemon.status_line
        await wait_until(lambda: "stuck (" in line() and "gone (failed)" in line(), 15, f"status line: {line()}")
        assert line().startswith("1 viewer, 4 cameras at ")
    finally:
        await viewer.close()


async def test_every_camera_failing_stops_the_start(robot_factory: Any) -> None:
    data = make_config().model_dump(mode="json")
    data["cameras"] = {"a": {"source": "v4l2", "device": "/dev/video-a"}, "b": {"source": "file", "file": "/nope.mkv"}}
    with pytest.raises(SourceError, match="no camera could be opened"):
        await robot_factory(Config.model_validate(data))


# --- reload ------------------------------------------------------------------------------------

async def test_reload_adds_and_removes_one_camera_only(robot_factory: Any, clip: Path) -> None:
    robot = await start_two(robot_factory, clip)
    daemon = robot.daemon
    viewer = MultiViewer(2)
    try:
        await viewer.connect(robot.http)
        await viewer.wait_showing(0, "front")
        await viewer.wait_showing(1, "arm")
        front = daemon.cameras.get("front")
        old = daemon.config
        data = old.model_dump(mode="json")
        data["cameras"] = {"front": data["cameras"]["front"], "rear": {**data["cameras"]["front"], "width": 160, "height": 120}}
        new = Config.model_validate(data)
        reloaded_at = time.monotonic()
        changes = await apply_reload(daemon, old, new)
        assert "cameras.arm" in changes and "cameras.rear" in changes and "cameras.front" not in str(changes)
        assert daemon.cameras.names == ["front", "rear"] and daemon.cameras.get("front") is front
        await wait_until(lambda: session_video(daemon, 1).track.readyState == "ended", 5, "arm's track ends")
        await wait_until(lambda: daemon.cameras.get("rear").healthy(), 10, "rear starts")
        await asyncio.sleep(1)
        # front never noticed: its frames kept coming, with no gap a restart would leave
        front_times = [at for at, _ in viewer.seen[0] if at >= reloaded_at - 0.5]
        gaps = [b - a for a, b in zip(front_times, front_times[1:])]
        assert len(front_times) > 15 and max(gaps) < 0.7, gaps
        assert viewer.latest(0) == {"front"}
        late = MultiViewer(1)
        try:
            await late.connect(robot.http, "/offer?camera=rear")
            await wait_until(lambda: len(late.seen[0]) > 5, 10, "rear's frames")
        finally:
            await late.close()
    finally:
        await viewer.close()


def session_video(daemon: Any, index: int) -> Any:
    session = next(iter(daemon.peers.sessions.values()))
    return session.videos[index]
