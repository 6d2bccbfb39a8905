"""The Raspberry Pi camera source, against a fake picamera2 at the hardware boundary.

tests/fakes holds a fake `picamera2` and `libcamera` with the real API's names and signatures;
its "sensor" draws the test pattern and its encoders make real H.264 with libx264, so a real
aiortc viewer decodes the frame numbers the fake camera drew. Everything above the fake (the
source, pipeline, hubs, peers, HTTP) is the real daemon.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import pytest

from robotcam.video.hub import PeerVideoTrack
from robotcam.video.sources.base import SourceError
from robotcam.video.sources.picamera import BUSY, NEEDS_PICAMERA2, NO_CAMERA, PicameraSource, probe, yuv420_frame
from robotcam.video.sources.testpattern import decode_frame_number
from tests.conftest import make_config
from tests.conftest import wait_until as wait_until_async
from tests.viewer import Viewer, advancing

FAKES = Path(__file__).resolve().parent / "fakes"
THREAD_FAILS = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
NEW_PYAV = pytest.mark.skipif(
    int(av.__version__.split(".")[0]) < 14, reason="PyAV < 14 still takes pict_type letters"
)


def _forget_camera_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in ("picamera2", "libcamera"):
            del sys.modules[name]


@pytest.fixture
def no_picamera2(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A machine without picamera2 (None in sys.modules makes `import picamera2` fail)."""
    _forget_camera_modules()
    monkeypatch.setitem(sys.modules, "picamera2", None)
    monkeypatch.setitem(sys.modules, "libcamera", None)
    yield
    _forget_camera_modules()


def _use_fakes(monkeypatch: pytest.MonkeyPatch, platform: str) -> Any:
    _forget_camera_modules()
    monkeypatch.setenv("FAKE_PICAMERA2_PLATFORM", platform)
    monkeypatch.syspath_prepend(str(FAKES))
    import picamera2

    assert Path(picamera2.__file__).is_relative_to(FAKES)
    picamera2.Picamera2.fake_reset()
    return picamera2


@pytest.fixture(params=["vc4", "pisp"], ids=["pi4-hardware", "pi5-libav"])
def picamera2(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The fake picamera2, as on a Pi 4 (hardware H.264) and on a Pi 5 (libav)."""
    module = _use_fakes(monkeypatch, request.param)
    yield module
    _cleanup(module)


@pytest.fixture
def pi4(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    module = _use_fakes(monkeypatch, "vc4")
    yield module
    _cleanup(module)


@pytest.fixture
def pi5(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    module = _use_fakes(monkeypatch, "pisp")
    yield module
    _cleanup(module)


def _cleanup(module: Any) -> None:
    for cam in module.Picamera2.instances:
        cam.close()
    _forget_camera_modules()


def _fake_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("fake-", "robotcam-picamera"))]


def assert_released(module: Any) -> None:
    """Nothing left open: every fake camera closed, no camera/encoder thread running."""
    assert all(not cam.is_open for cam in module.Picamera2.instances)
    deadline = time.monotonic() + 5
    while _fake_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _fake_threads() == []


def picamera_config(**video: Any) -> Any:
    values = {"source": "picamera", "width": 320, "height": 240, "fps": 30}
    values.update(video)
    return make_config(video=values)


def picamera_factory(video: Any) -> tuple[PicameraSource, str]:
    return PicameraSource(video), "test"


class Sink:
    """The pipeline's side of the contract, recording what arrives."""

    def __init__(self) -> None:
        self.packets: list[av.Packet] = []
        self.event = threading.Event()
        self.fail = False

    def on_frame(self, frame: av.VideoFrame) -> None:
        raise AssertionError("an h264 source delivers packets, not frames")

    def on_packet(self, packet: av.Packet) -> None:
        if self.fail:
            raise RuntimeError("sink exploded")
        self.packets.append(packet)
        self.event.set()

    def wait_packets(self, count: int, timeout: float = 15.0) -> list[av.Packet]:
        deadline = time.monotonic() + timeout
        while len(self.packets) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(self.packets)} of {count} packets in {timeout} s")
            self.event.clear()
            self.event.wait(0.1)
        return self.packets


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def nal_units(data: bytes) -> list[bytes]:
    starts, pos = [], data.find(b"\x00\x00\x01")
    while pos != -1:
        starts.append(pos + 3)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return [data[s: (starts[i + 1] - 3 if i + 1 < len(starts) else len(data))].rstrip(b"\x00")
            for i, s in enumerate(starts)]


# --- 1. end to end ---------------------------------------------------------------------------


async def test_viewer_decodes_what_the_camera_encoded(picamera2, robot_factory) -> None:
    config = picamera_config(
        bitrate=800_000, keyframe_interval=1.0, hflip=True, rotation=180,
        picamera={
            "autofocus": "continuous", "exposure": "short", "awb": "daylight",
            "controls": {"Brightness": 0.1, "ColourGains": [1.5, 1.2]},
        },
    )
    robot = await robot_factory(config, source_factory=picamera_factory)
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        assert viewer.codec == "H264"
        numbers = await viewer.wait_frames(30)
        decoded = [n for n in numbers if n is not None]
        assert len(decoded) >= 0.9 * len(numbers)
        assert advancing(numbers)
        assert viewer.sizes == {(320, 240)}
        status, health = await robot.health()
        assert health["video"]["encoders"]["H264"]["implementation"].startswith("camera")
    finally:
        await viewer.close()

    cam = picamera2.Picamera2.instances[-1]
    (configured,) = cam.fake_configure_calls
    assert configured["main"]["size"] == (320, 240)
    assert configured["main"]["format"] == "YUV420"
    assert configured["controls"]["FrameDurationLimits"] == (33333, 33333)  # 30 fps
    # hflip and a half turn fold into a vertical flip, done by the ISP
    assert (cam.fake_transform.hflip, cam.fake_transform.vflip) == (False, True)

    from libcamera import controls

    assert cam.fake_set_controls_calls[0] == {
        "AfMode": controls.AfModeEnum.Continuous,
        "AeExposureMode": controls.AeExposureModeEnum.Short,
        "AwbMode": controls.AwbModeEnum.Daylight,
        "Brightness": 0.1,
        "ColourGains": (1.5, 1.2),
    }

    (encoder,) = picamera2.encoders.encoder.Encoder.instances
    expected = "H264Encoder" if picamera2.get_platform() == picamera2.Platform.VC4 else "LibavH264Encoder"
    assert type(encoder).__name__ == expected
    assert (encoder.bitrate, encoder.iperiod, encoder.repeat, encoder.framerate) == (800_000, 30, True, 30)
    assert encoder.profile == "constrained baseline"

    status, health = await robot.health()
    info = health["video"]["source_info"]
    assert info["camera"] == "imx708"
    assert info["encoder"] == (
        "hardware H.264 (V4L2)" if expected == "H264Encoder" else "software H.264 (libav)"
    )
    assert info["transform"] == "vflip"


def test_packets_are_annex_b_access_units_on_the_sensor_clock(picamera2) -> None:
    source = PicameraSource(picamera_config(keyframe_interval=0.5).video)
    sink = Sink()
    source.open()
    try:
        source.start(sink)
        packets = sink.wait_packets(40)[:40]
        assert source.running
    finally:
        source.stop()
    assert_released(picamera2)

    assert all(p.time_base == Fraction(1, 1_000_000) for p in packets)
    pts = [p.pts for p in packets]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    first = nal_units(bytes(packets[0]))
    assert packets[0].is_keyframe and [n[0] & 0x1F for n in first][:2] == [7, 8]  # SPS, PPS
    sps = first[0]
    assert sps[1] == 66 and sps[2] & 0x40  # baseline, constraint_set1: constrained baseline
    keyframes = [i for i, p in enumerate(packets) if p.is_keyframe]
    assert keyframes[:2] == [0, 15]  # iperiod = 30 fps * 0.5 s
    for i in keyframes:  # SPS/PPS repeated before every IDR
        types = [n[0] & 0x1F for n in nal_units(bytes(packets[i]))]
        assert {7, 8, 5} <= set(types)
    codec = av.CodecContext.create("h264", "r")
    numbers = [decode_frame_number(f) for p in packets for f in codec.decode(av.Packet(bytes(p)))]
    assert numbers[:5] == [0, 1, 2, 3, 4]


# --- 2. keyframes -----------------------------------------------------------------------------


async def test_keyframe_requests_reach_force_key_frame(pi4, robot_factory) -> None:
    robot = await robot_factory(picamera_config(keyframe_interval=10), source_factory=picamera_factory)
    (encoder,) = pi4.encoders.encoder.Encoder.instances
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        await viewer.wait_frames(5)
        # the joining viewer asked for an IDR rather than wait up to 10 s for one
        assert encoder.fake_keyframes_forced >= 1
        receiver = viewer.pc.getReceivers()[0]
        media_ssrc = receiver.getSynchronizationSources()[0].source
        await asyncio.sleep(0.5)  # past the keyframe merge interval
        forced_before, idrs_before = encoder.fake_keyframes_forced, encoder.fake_idrs_forced
        await receiver._send_rtcp_pli(media_ssrc)  # a real RTCP PLI, as a browser sends
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and encoder.fake_idrs_forced == idrs_before:
            await asyncio.sleep(0.05)
        assert encoder.fake_keyframes_forced > forced_before
        assert encoder.fake_idrs_forced > idrs_before  # and the camera encoded that IDR
        frames = len(viewer.numbers)
        await viewer.wait_frames(frames + 5)
        assert advancing(viewer.numbers)
    finally:
        await viewer.close()


def test_keyframe_requests_merge_but_are_never_lost(pi4) -> None:
    source = PicameraSource(picamera_config(keyframe_interval=10).video)
    sink = Sink()
    source.open()
    try:
        source.start(sink)
        sink.wait_packets(5)
        (encoder,) = pi4.encoders.encoder.Encoder.instances
        before = encoder.fake_keyframes_forced
        for _ in range(5):  # a burst of PLIs from several viewers
            source.request_keyframe()
        assert wait_until(lambda: encoder.fake_keyframes_forced == before + 1)
        time.sleep(0.1)
        source.request_keyframe()  # within 0.3 s: deferred to the next frame after it
        count = len(sink.packets)
        assert wait_until(lambda: any(p.is_keyframe for p in sink.packets[count:]))
        assert encoder.fake_keyframes_forced <= before + 2
    finally:
        source.stop()
    assert_released(pi4)


def test_without_force_key_frame_the_encoder_restarts(pi4, monkeypatch) -> None:
    """picamera2 before 0.3.32 has no force_key_frame(): restart the encoder (its first frame
    is an IDR) while the camera runs, keeping the timestamps increasing."""
    monkeypatch.delattr(pi4.encoders.H264Encoder, "force_key_frame")
    source = PicameraSource(picamera_config(keyframe_interval=10).video)
    sink = Sink()
    source.open()
    try:
        source.start(sink)
        sink.wait_packets(10)
        (encoder,) = pi4.encoders.encoder.Encoder.instances
        count = len(sink.packets)
        source.request_keyframe()
        assert wait_until(lambda: encoder.fake_starts == 2)
        assert wait_until(lambda: any(p.is_keyframe for p in sink.packets[count:]))
        sink.wait_packets(len(sink.packets) + 5)
        assert source.running and source.describe()["keyframes"] == "encoder restart"
    finally:
        source.stop()
    pts = [p.pts for p in sink.packets]
    assert all(b > a for a, b in zip(pts, pts[1:]))
    assert_released(pi4)


@NEW_PYAV
def test_pi5_keyframes_avoid_picamera2s_libav_force_path_on_new_pyav(pi5) -> None:
    """picamera2's LibavH264Encoder forces with frame.pict_type = "I", which PyAV >= 14
    refuses in the camera thread: the source restarts the encoder instead."""
    source = PicameraSource(picamera_config(keyframe_interval=10).video)
    sink = Sink()
    source.open()
    try:
        assert source.describe()["keyframes"] == "encoder restart"
        source.start(sink)
        sink.wait_packets(10)
        (encoder,) = pi5.encoders.encoder.Encoder.instances
        count = len(sink.packets)
        source.request_keyframe()
        assert wait_until(lambda: encoder.fake_starts == 2)
        assert wait_until(lambda: any(p.is_keyframe for p in sink.packets[count:]))
        sink.wait_packets(len(sink.packets) + 5)
        assert source.running and encoder.fake_keyframes_forced == 0
    finally:
        source.stop()
    assert_released(pi5)


@THREAD_FAILS
@NEW_PYAV
def test_a_dead_camera_thread_is_reported(pi5) -> None:
    """What the restart avoids: the fake, like picamera2, dies in the camera thread when
    force_key_frame() meets PyAV >= 14; the source notices and reports it."""
    source = PicameraSource(picamera_config().video)
    sink = Sink()
    source.open()
    try:
        source.start(sink)
        sink.wait_packets(3)
        pi5.encoders.encoder.Encoder.instances[0].force_key_frame()
        assert wait_until(lambda: not source.running)
        assert "camera thread ended unexpectedly" in str(source.error)
    finally:
        source.stop()
    assert_released(pi5)


# --- 3. cannot be used -------------------------------------------------------------------------


def _open_fails(video: Any) -> str:
    source = PicameraSource(video)
    with pytest.raises(SourceError) as caught:
        source.open()
    source.stop()  # safe after a failed open, and twice
    source.stop()
    assert not source.running
    return str(caught.value)


def test_without_picamera2_the_message_says_how_to_install_it(no_picamera2) -> None:
    assert _open_fails(picamera_config().video) == NEEDS_PICAMERA2


def test_no_camera(pi4) -> None:
    pi4.Picamera2.fake_cameras = []
    assert _open_fails(picamera_config().video) == NO_CAMERA
    assert pi4.Picamera2.instances == []


def test_camera_index_out_of_range(pi4) -> None:
    message = _open_fails(picamera_config(picamera={"camera": 2}).video)
    assert message.startswith("video.picamera.camera: there is no camera 2")
    assert "lists 1 camera (0: imx708)" in message
    assert pi4.Picamera2.instances == []


def test_usb_camera_is_not_a_pi_camera(pi4) -> None:
    pi4.Picamera2.fake_cameras = [{"Model": "HD USB Camera", "Id": "/base/scb/pcie@7d500000/usb@0/1-1.2:1.0-046d:0825"}]
    assert _open_fails(picamera_config().video).startswith("video.picamera.camera: camera 0 (HD USB Camera) is a USB camera")


def test_busy_camera(pi4) -> None:
    pi4.Picamera2.fake_busy = True
    assert _open_fails(picamera_config().video) == BUSY
    assert_released(pi4)


def test_size_the_sensor_cannot_deliver(pi5) -> None:
    pi5.Picamera2.fake_sensor_resolution = (1640, 1232)
    message = _open_fails(picamera_config(width=2048, height=1536).video)
    assert message.startswith("video.width/video.height: camera imx708 cannot deliver 2048x1536")
    assert "1640x1232" in message
    assert len(pi5.Picamera2.instances) == 1
    assert_released(pi5)


def test_size_the_hardware_encoder_cannot_encode(pi4) -> None:
    message = _open_fails(picamera_config(width=2592, height=1944).video)
    assert message.startswith("video.width/video.height: 2592x1944 is larger than the Pi's hardware H.264 encoder")
    assert_released(pi4)


def test_flip_the_camera_cannot_do(pi4) -> None:
    pi4.Picamera2.fake_can_flip = False
    message = _open_fails(picamera_config(hflip=True).video)
    assert message.startswith("video.hflip/video.vflip/video.rotation: camera imx708 cannot apply hflip")
    assert_released(pi4)


def test_hardware_encoder_demanded_on_a_pi5(pi5) -> None:
    message = _open_fails(picamera_config(encoder="h264_v4l2m2m").video)
    assert message.startswith("video.encoder: h264_v4l2m2m: this Raspberry Pi has no hardware H.264 encoder")
    assert pi5.Picamera2.instances == []


def test_libx264_requested_on_a_pi4_uses_libav(pi4) -> None:
    source = PicameraSource(picamera_config(encoder="libx264").video)
    source.open()
    try:
        assert source.describe()["encoder"] == "software H.264 (libav)"
        (encoder,) = pi4.encoders.encoder.Encoder.instances
        assert type(encoder).__name__ == "LibavH264Encoder"
    finally:
        source.stop()
    assert_released(pi4)


def test_controls_the_camera_lacks_are_skipped_and_logged(pi4, caplog) -> None:
    no_af = {k: v for k, v in pi4.Picamera2.fake_camera_controls.items() if not k.startswith("Af")}
    pi4.Picamera2.fake_camera_controls = no_af  # e.g. a Camera Module 2 (imx219): fixed focus
    video = picamera_config(picamera={"autofocus": "continuous", "controls": {"Sharpness": 2, "HdrMode": 1}}).video
    source = PicameraSource(video)
    with caplog.at_level("INFO", logger="robotcam.video.sources.picamera"):
        source.open()
    try:
        cam = pi4.Picamera2.instances[-1]
        assert set(cam.fake_set_controls_calls[0]) == {"AeExposureMode", "AwbMode", "Sharpness"}
        skipped = [r.getMessage() for r in caplog.records if "has no" in r.getMessage()]
        assert len(skipped) == 2
        assert any("AfMode" in m and "video.picamera.autofocus" in m for m in skipped)
        assert any("HdrMode" in m and "video.picamera.controls.HdrMode" in m for m in skipped)
        assert source.describe()["controls_skipped"] == ["AfMode", "HdrMode"]
    finally:
        source.stop()


# --- 4. probe -------------------------------------------------------------------------------


def test_probe_finds_the_fake_camera(pi4) -> None:
    ok, why = probe()
    assert ok and "imx708" in why
    assert pi4.Picamera2.instances == []  # listing cameras opened none


def test_probe_without_picamera2(no_picamera2) -> None:
    ok, why = probe()
    assert not ok and "picamera2 is not installed" in why


def test_probe_without_camera(pi4) -> None:
    pi4.Picamera2.fake_cameras = []
    ok, why = probe()
    assert not ok and "no camera" in why


def test_probe_with_only_a_usb_camera(pi4) -> None:
    pi4.Picamera2.fake_cameras = [{"Model": "HD USB Camera", "Id": "/base/scb/usb@0/1-1.2:1.0-046d:0825"}]
    ok, why = probe()
    assert not ok and "USB" in why


def test_probe_never_raises(pi4, monkeypatch) -> None:
    def broken() -> list[Any]:
        raise RuntimeError("libcamera exploded")

    monkeypatch.setattr(pi4.Picamera2, "global_camera_info", staticmethod(broken))
    ok, why = probe()
    assert not ok and "libcamera exploded" in why


# --- 5. failures while streaming -----------------------------------------------------------


@THREAD_FAILS
def test_encoder_failing_mid_stream_ends_running_with_an_error(picamera2) -> None:
    picamera2.encoders.encoder.Encoder.fake_fail_after = 10
    source = PicameraSource(picamera_config().video)
    sink = Sink()
    source.open()
    try:
        source.start(sink)
        sink.wait_packets(5)
        assert wait_until(lambda: not source.running)
        assert isinstance(source.error, RuntimeError)
        assert "thread ended unexpectedly" in str(source.error)
        assert len(sink.packets) <= 10
    finally:
        source.stop()
    assert_released(picamera2)


def test_sink_failure_is_reported_not_raised_into_picamera2(pi4) -> None:
    source = PicameraSource(picamera_config().video)
    sink = Sink()
    source.open()
    try:
        source.start(sink)
        sink.wait_packets(3)
        sink.fail = True
        assert wait_until(lambda: not source.running)
        assert str(source.error) == "sink exploded"
    finally:
        source.stop()
    assert_released(pi4)


def test_start_failure_is_reported_to_the_supervisor(pi4, monkeypatch) -> None:
    def refuse(self: Any, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("Failed to start camera")

    monkeypatch.setattr(pi4.Picamera2, "start", refuse)
    source = PicameraSource(picamera_config().video)
    source.open()
    try:
        source.start(Sink())
        assert wait_until(lambda: source.error is not None)
        assert not source.running
    finally:
        source.stop()
    assert_released(pi4)


def test_stop_is_idempotent_and_releases_everything(picamera2) -> None:
    source = PicameraSource(picamera_config().video)
    source.stop()  # before open: nothing to do
    source = PicameraSource(picamera_config().video)
    source.open()
    source.start(Sink())
    source.stop()
    source.stop()
    assert not source.running
    source.request_keyframe()  # after stop: ignored, never raises
    assert_released(picamera2)


async def test_snapshot_comes_from_the_running_camera_or_its_packets(pi4, robot_factory, monkeypatch) -> None:
    """GET /snapshot.jpg with no viewer: a capture from the running camera (capture_array, no
    decode); without one, the H.264 packets since the last keyframe are decoded."""
    from tests.media_support import decode_jpeg, jpeg_number

    robot = await robot_factory(picamera_config(keyframe_interval=1.0), source_factory=picamera_factory)
    cam = pi4.Picamera2.instances[-1]
    response = await robot.http.get("/snapshot.jpg")
    body = await response.read()
    assert response.status == 200, body
    assert cam.fake_captures == 1
    frame = decode_jpeg(body)
    assert (frame.width, frame.height) == (320, 240)
    number = jpeg_number(body)
    assert number is not None and 0 <= cam.fake_frames - number <= 15

    monkeypatch.setattr(PicameraSource, "capture_picture", lambda self: None)
    await asyncio.sleep(1.2)  # at least one keyframe later
    response = await robot.http.get("/snapshot.jpg")
    body = await response.read()
    assert response.status == 200, body
    assert cam.fake_captures == 1
    number = jpeg_number(body)
    assert number is not None and 0 <= cam.fake_frames - number <= 15


# --- 6. lower rungs from the lores stream ---------------------------------------------------


async def read_packets(track: PeerVideoTrack, count: int, timeout: float = 15.0) -> list[av.Packet]:
    """What aiortc's sender would read from a viewer's track: `count` packets."""
    return [await asyncio.wait_for(track.recv(), timeout) for _ in range(count)]


def decode(packets: list[av.Packet]) -> list[tuple[int | None, int, tuple[int, int]]]:
    """(frame number, pts, size) of each picture, decoded with PyAV's H.264 decoder."""
    codec = av.CodecContext.create("h264", "r")
    pictures = []
    for packet in packets:
        copy = av.Packet(bytes(packet))
        copy.pts = packet.pts
        for frame in codec.decode(copy):
            pictures.append((decode_frame_number(frame), frame.pts, (frame.width, frame.height)))
    return pictures


async def test_a_viewer_on_rung_1_gets_the_lores_stream_encoded_once(picamera2, robot_factory) -> None:
    """Two viewers on the Pi camera; one is moved to rung 1: it decodes the lores picture,
    encoded once by the pipeline, while the other keeps the camera's own packets. A frame has
    the same pts on both rungs. Nothing is copied out of the lores stream before or after."""
    robot = await robot_factory(picamera_config(keyframe_interval=1.0), source_factory=picamera_factory)
    pipeline = robot.daemon.pipeline
    cam = picamera2.Picamera2.instances[-1]
    (configured,) = cam.fake_configure_calls
    assert configured["lores"] == {"size": (160, 120), "format": "YUV420", "preserve_ar": False}
    _, health = await robot.health()
    assert health["video"]["renditions"] == [
        "320x240 at 30 fps, 1000 kbit/s", "160x120 at 30 fps, 250 kbit/s", "160x120 at 15 fps, 100 kbit/s"]
    assert health["video"]["source_info"]["lores"] == "160x120"

    good, weak = Viewer(), Viewer()
    main_tap, lores_tap = PeerVideoTrack(pipeline.queue_size()), PeerVideoTrack(pipeline.queue_size())
    try:
        await good.connect(robot.post_offer)
        await weak.connect(robot.post_offer)
        await asyncio.gather(good.wait_frames(10), weak.wait_frames(10))
        assert cam.fake_arrays.get("lores", 0) == 0, "nobody on a lower rung: no copy"
        session = max(robot.daemon.peers.sessions.values(), key=lambda s: s.id)
        pipeline.switch(session.track, 1)
        await wait_until_async(lambda: (160, 120) in weak.sizes, 10, "the viewer gets the lores picture")
        count = len(weak.numbers)
        await weak.wait_frames(count + 20)
        assert advancing(weak.numbers[count:])
        assert weak.last_frame.width == 160
        assert set(pipeline.encoders) == {"H264", "H264/1"}
        assert pipeline.encoders["H264"].implementation.startswith("camera")
        assert pipeline.encoders["H264/1"].implementation == pipeline.h264_codec
        good_count = len(good.numbers)
        await good.wait_frames(good_count + 15)
        assert good.sizes == {(320, 240)} and advancing(good.numbers[good_count:])

        # decodable H.264 at the lores size, on the main stream's timeline
        pipeline.attach(main_tap, "H264", 0)
        pipeline.attach(lores_tap, "H264", 1)
        main_packets, lores_packets = await asyncio.gather(
            read_packets(main_tap, 40), read_packets(lores_tap, 40))
        main, lores = decode(main_packets), decode(lores_packets)
        assert {size for _, _, size in main} == {(320, 240)}
        assert {size for _, _, size in lores} == {(160, 120)}
        assert sum(n is not None for n, _, _ in lores) >= 0.9 * len(lores)
        main_pts = {n: pts for n, pts, _ in main if n is not None}
        common = [(pts, main_pts[n]) for n, pts, _ in lores if n in main_pts]
        assert len(common) >= 10 and all(a == b for a, b in common), common
        assert all(b > a for a, b in zip([p.pts for p in lores_packets], [p.pts for p in lores_packets][1:]))
        _, health = await robot.health()
        assert health["video"]["encoders"]["H264/1"]["viewers"] == 2
        assert health["video"]["source_info"]["lores_fed"] is True

        # the camera still runs one encoder of its own: the lower rung is not a second one
        assert len(picamera2.encoders.encoder.Encoder.instances) == 1

        # the last one leaves the lower rung: its encoder stops, and so do the copies
        lores_tap.stop()
        pipeline.switch(session.track, 0)
        await wait_until_async(lambda: set(pipeline.encoders) == {"H264"}, 10, "the lower rung's encoder stops")
        await wait_until_async(lambda: weak.last_frame.width == 320, 10, "the viewer is back on the full stream")
        assert pipeline.source.describe()["lores_fed"] is False
        copies = cam.fake_arrays["lores"]
        await asyncio.sleep(0.3)
        assert cam.fake_arrays["lores"] == copies
    finally:
        main_tap.stop()
        lores_tap.stop()
        await asyncio.gather(good.close(), weak.close())


async def test_a_vp8_viewer_on_rung_1_gets_the_lores_stream_not_a_transcode(pi5, robot_factory) -> None:
    robot = await robot_factory(picamera_config(), source_factory=picamera_factory)
    pipeline = robot.daemon.pipeline
    viewer = Viewer(codecs=("VP8",))
    try:
        await viewer.connect(robot.post_offer)
        assert viewer.codec == "VP8"
        await viewer.wait_frames(5)
        assert pipeline.encoders["VP8"].implementation.startswith("libvpx (transcoded")
        session = next(iter(robot.daemon.peers.sessions.values()))
        pipeline.switch(session.track, 1)
        await wait_until_async(lambda: (160, 120) in viewer.sizes, 10, "the viewer moves to rung 1")
        count = len(viewer.numbers)
        await viewer.wait_frames(count + 10)
        assert advancing(viewer.numbers[count:])
        await wait_until_async(lambda: set(pipeline.encoders) == {"VP8/1"}, 10, "the transcoder stops")
        assert pipeline.encoders["VP8/1"].implementation == "libvpx"
    finally:
        await viewer.close()


async def test_without_adaptation_the_camera_has_no_lores_stream(pi4, robot_factory) -> None:
    robot = await robot_factory(picamera_config(adaptive=False), source_factory=picamera_factory)
    pipeline = robot.daemon.pipeline
    cam = pi4.Picamera2.instances[-1]
    (configured,) = cam.fake_configure_calls
    assert configured["lores"] is None and cam.camera_configuration()["lores"] is None
    assert cam.post_callback is None
    _, health = await robot.health()
    assert health["video"]["renditions"] == ["320x240 at 30 fps, 1000 kbit/s"]
    assert health["video"]["source_info"]["lores"] is None
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        await viewer.wait_frames(5)
        session = next(iter(robot.daemon.peers.sessions.values()))
        pipeline.switch(session.track, 1)  # there is no rung 1: it stays on the full stream
        count = len(viewer.numbers)
        await viewer.wait_frames(count + 10)
        assert viewer.sizes == {(320, 240)} and set(pipeline.encoders) == {"H264"}
        # turned on by a reload: the camera is reopened with a lores stream
        await pipeline.reconfigure(picamera_config(adaptive=True).video)
        assert pi4.Picamera2.instances[-1].camera_configuration()["lores"]["size"] == (160, 120)
        assert len(pipeline.rungs) == 3
        pipeline.switch(session.track, 1)
        await wait_until_async(lambda: (160, 120) in viewer.sizes, 10, "the viewer moves to rung 1")
    finally:
        await viewer.close()


def test_a_camera_refusing_the_lores_stream_still_streams(pi4, monkeypatch, caplog) -> None:
    checked = pi4.Picamera2.check_camera_config

    def no_lores(self: Any, config: dict[str, Any]) -> None:
        if config["lores"] is not None:
            raise RuntimeError("Invalid camera configuration")
        checked(self, config)

    monkeypatch.setattr(pi4.Picamera2, "check_camera_config", no_lores)
    source = PicameraSource(picamera_config().video)
    sink = Sink()
    with caplog.at_level("WARNING", logger="robotcam.video.sources.picamera"):
        source.open()
    try:
        assert "refused a 160x120 lores stream" in caplog.text and "no lower rungs" in caplog.text
        assert source.lores_size is None
        source.start(sink)
        sink.wait_packets(5)
        assert source.running
    finally:
        source.stop()
    assert_released(pi4)


def test_the_fake_lores_stream_is_checked_as_picamera2_checks_it(pi4) -> None:
    """tests/fakes follows picamera2 here too: lores no larger than main, YUV on a Pi 4,
    (height * 3 / 2, stride) arrays, and only streams that were configured."""
    cam = pi4.Picamera2(0)
    try:
        too_big = cam.create_video_configuration({"size": (320, 240), "format": "YUV420"}, lores={"size": (640, 480)})
        with pytest.raises(RuntimeError, match="lores stream dimensions may not exceed main stream"):
            cam.configure(too_big)
        rgb = cam.create_video_configuration({"size": (320, 240)}, lores={"size": (160, 120), "format": "RGB888"})
        with pytest.raises(RuntimeError, match="lores stream must be YUV"):
            cam.configure(rgb)
        cam.configure(cam.create_video_configuration({"size": (320, 240), "format": "YUV420"}))
        with pytest.raises(RuntimeError, match="Encode stream lores was not defined"):
            cam.start_encoder(pi4.encoders.H264Encoder(), pi4.outputs.Output(), name="lores")
        cam.configure(cam.create_video_configuration({"size": (320, 240), "format": "YUV420"}, lores={"size": (161, 121)}))
        lores = cam.camera_configuration()["lores"]
        assert lores["size"] == (160, 120) and lores["stride"] >= 160
        cam.start()
        array = cam.capture_array("lores")
        assert array.shape == (180, lores["stride"])
        assert decode_frame_number(yuv420_frame(array, 160, 120, lores["stride"])) is not None
    finally:
        cam.close()


async def test_reload_between_a_frame_source_and_the_camera_keeps_lower_rung_viewers(pi4, robot_factory) -> None:
    """A reload from the test pattern to the Pi camera and back, while one viewer is on rung 1
    and one on the full stream: same hubs, new producers behind them (the lower rung's encoder
    fed from the lores stream, then from frames again), and both keep decoding."""
    robot = await robot_factory(make_config(video={"bitrate": 1_000_000}))
    pipeline = robot.daemon.pipeline
    good, weak = Viewer(), Viewer()
    try:
        await good.connect(robot.post_offer)
        await weak.connect(robot.post_offer)
        await asyncio.gather(good.wait_frames(10), weak.wait_frames(10))
        session = max(robot.daemon.peers.sessions.values(), key=lambda s: s.id)
        pipeline.switch(session.track, 1)
        await wait_until_async(lambda: (160, 120) in weak.sizes, 10, "the viewer moves to rung 1")

        for video, implementation in ((picamera_config().video, "camera"), (make_config().video, "libx264")):
            frames = pi4.Picamera2.instances[-1].fake_frames if pi4.Picamera2.instances else 0
            await pipeline.reconfigure(video)
            assert pipeline.source_name == video.source
            await wait_until_async(lambda: set(pipeline.encoders) == {"H264", "H264/1"}, 10, "both rungs run")
            assert pipeline.encoders["H264"].implementation.startswith(implementation)
            assert len(pipeline.rungs) == 3
            weak_count, good_count = len(weak.numbers), len(good.numbers)
            await asyncio.gather(weak.wait_frames(weak_count + 20), good.wait_frames(good_count + 20))
            assert weak.last_frame.width == 160 and good.last_frame.width == 320
            assert session.track.hub is not None and session.track.hub.rung == 1
            if video.source == "picamera":
                cam = pi4.Picamera2.instances[-1]
                assert cam.fake_frames > frames and cam.fake_arrays.get("lores", 0) > 0
                assert pipeline.source.describe()["lores_fed"] is True
        assert len(robot.daemon.peers) == 2
    finally:
        await asyncio.gather(good.close(), weak.close())
