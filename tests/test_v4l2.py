"""V4L2Source without a camera: the ioctl structs and node classification, the format/size/rate
checks, the error messages, and the shared decode loop fed from generated files (blocking reads)
or from a fake live camera (non-blocking reads with poll, as from a real device)."""

from __future__ import annotations

import collections
import errno
import os
import struct
import threading
import time
from pathlib import Path
from typing import Any

import av
import av.error
import pytest

import robotcam.video.sources.v4l2 as v4l2
from robotcam.config import VideoConfig
from robotcam.video.sources.base import SourceError
from robotcam.video.sources.v4l2 import (
    CAP_DEVICE_CAPS,
    CAP_META_CAPTURE,
    CAP_STREAMING,
    CAP_VIDEO_CAPTURE,
    CAP_VIDEO_CAPTURE_MPLANE,
    CAP_VIDEO_M2M_MPLANE,
    CAP_VIDEO_OUTPUT,
    Capability,
    RateRange,
    SizeRange,
    V4L2Source,
    choose_input_format,
    classify,
    parse_capability,
)
from tests.conftest import make_config
from tests.test_file_source import Sink, write_clip
from tests.viewer import Viewer

# --- VIDIOC_QUERYCAP ---------------------------------------------------------------------------


def capability_struct(driver: str, card: str, bus: str, capabilities: int, device_caps: int) -> bytes:
    """A struct v4l2_capability as the kernel fills it in (104 bytes)."""
    return struct.pack(
        "<16s32s32sIII3I", driver.encode(), card.encode(), bus.encode(),
        (6 << 16) | (1 << 8), capabilities, device_caps, 0, 0, 0,
    )


UVC_CAPS = CAP_VIDEO_CAPTURE | CAP_META_CAPTURE | CAP_STREAMING | CAP_DEVICE_CAPS
UVC_VIDEO = capability_struct(
    "uvcvideo", "HD Pro Webcam C920", "usb-0000:01:00.0-1.2", UVC_CAPS, CAP_VIDEO_CAPTURE | CAP_STREAMING
)
UVC_META = capability_struct(
    "uvcvideo", "HD Pro Webcam C920", "usb-0000:01:00.0-1.2", UVC_CAPS, CAP_META_CAPTURE | CAP_STREAMING
)
PI_CODEC = capability_struct(
    "bcm2835-codec", "bcm2835-codec-decode", "platform:bcm2835-codec",
    CAP_VIDEO_M2M_MPLANE | CAP_STREAMING | CAP_DEVICE_CAPS, CAP_VIDEO_M2M_MPLANE | CAP_STREAMING,
)
PI_ISP_CAPTURE = capability_struct(
    "bcm2835-isp", "bcm2835-isp-capture0", "platform:bcm2835-isp",
    CAP_VIDEO_CAPTURE | CAP_VIDEO_OUTPUT | CAP_META_CAPTURE | CAP_STREAMING | CAP_DEVICE_CAPS,
    CAP_VIDEO_CAPTURE | CAP_STREAMING,
)
OLD_M2M = capability_struct(  # an older codec driver: capture + output instead of the M2M flag
    "s5p-mfc", "s5p-mfc-dec", "platform:11000000.codec",
    CAP_VIDEO_CAPTURE | CAP_VIDEO_OUTPUT | CAP_STREAMING | CAP_DEVICE_CAPS,
    CAP_VIDEO_CAPTURE | CAP_VIDEO_OUTPUT | CAP_STREAMING,
)
MPLANE_CAMERA = capability_struct(
    "rkisp1", "rkisp1", "platform:rkisp1",
    CAP_VIDEO_CAPTURE_MPLANE | CAP_STREAMING | CAP_DEVICE_CAPS, CAP_VIDEO_CAPTURE_MPLANE | CAP_STREAMING,
)
NO_DEVICE_CAPS = capability_struct("bttv", "BT878 video", "PCI:0000:05:00.0", CAP_VIDEO_CAPTURE | CAP_STREAMING, 0)


def test_capability_struct_is_104_bytes_and_parses() -> None:
    assert len(UVC_VIDEO) == 104
    cap = parse_capability(UVC_VIDEO)
    assert (cap.driver, cap.card, cap.bus_info) == ("uvcvideo", "HD Pro Webcam C920", "usb-0000:01:00.0-1.2")
    assert cap.capabilities == UVC_CAPS and cap.device_caps == CAP_VIDEO_CAPTURE | CAP_STREAMING
    assert v4l2.VIDIOC_QUERYCAP == 0x80685600  # _IOR('V', 0, struct v4l2_capability)


@pytest.mark.parametrize(
    "raw, kind",
    [
        (UVC_VIDEO, "capture"),
        (UVC_META, "metadata"),  # the device can capture video, this node cannot: device_caps decides
        (PI_CODEC, "m2m"),
        (OLD_M2M, "m2m"),
        (PI_ISP_CAPTURE, "isp"),
        (MPLANE_CAMERA, "capture-mplane"),
        (NO_DEVICE_CAPS, "capture"),  # an old driver without device_caps: capabilities decides
        (capability_struct("vivid", "vivid", "platform:vivid", CAP_VIDEO_OUTPUT | CAP_DEVICE_CAPS, CAP_VIDEO_OUTPUT), "output"),
    ],
)
def test_classify(raw: bytes, kind: str) -> None:
    assert classify(parse_capability(raw)) == kind


# --- finding cameras -------------------------------------------------------------------------------


class FakeModes:
    """CameraModes from a table: {fourcc: (description, {size: rates})}."""

    def __init__(self, table: dict[str, tuple[str, dict[Any, Any]]]) -> None:
        self.table = table

    def formats(self) -> list[tuple[str, str]] | None:
        return [(fourcc, desc) for fourcc, (desc, _) in self.table.items()] or None

    def sizes(self, fourcc: str) -> list[Any] | None:
        return list(self.table[fourcc][1]) or None

    def rates(self, fourcc: str, width: int, height: int) -> list[Any] | None:
        for size, rates in self.table[fourcc][1].items():
            if size == (width, height) or (isinstance(size, SizeRange) and size.contains(width, height)):
                return rates
        return None


WEBCAM = {  # a typical USB 2 webcam: raw YUYV is slow above 640x480, MJPEG is not
    "YUYV": ("YUYV 4:2:2", {(640, 480): [30.0, 15.0], (1280, 720): [10.0, 5.0]}),
    "MJPG": ("Motion-JPEG", {(640, 480): [30.0], (1280, 720): [30.0, 15.0], (1920, 1080): [30.0]}),
}


def test_no_camera_here() -> None:
    # this machine has no /dev/video*: quick, None, no exception
    started = time.monotonic()
    assert v4l2.first_capture_device() is None
    assert v4l2.list_capture_devices() == []
    assert time.monotonic() - started < 1.0


def test_scan_never_raises_on_odd_nodes(tmp_path: Path) -> None:
    (tmp_path / "video0").write_text("not a device")
    (tmp_path / "video1").mkdir()
    pattern = str(tmp_path / "video*")
    assert v4l2.first_capture_device(pattern) is None
    assert v4l2.list_capture_devices(pattern) == []
    nodes = v4l2.scan_video_nodes(pattern)
    assert [n["kind"] for n in nodes] == ["error", "error"]


def test_probe_node_reads_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    # /dev/null is a character device anyone may open; the driver's answers are faked
    monkeypatch.setattr(v4l2, "query_capability", lambda fd: parse_capability(UVC_VIDEO))
    monkeypatch.setattr(v4l2, "DeviceModes", lambda fd: FakeModes(WEBCAM))
    assert v4l2.list_capture_devices("/dev/nul[l]") == [{
        "path": "/dev/null", "card": "HD Pro Webcam C920", "driver": "uvcvideo",
        "bus_info": "usb-0000:01:00.0-1.2", "kind": "capture", "formats": ["yuyv422", "mjpeg"],
    }]
    assert v4l2.first_capture_device("/dev/nul[l]") == "/dev/null"

    def broken(fd: int) -> Capability:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(v4l2, "query_capability", broken)
    assert v4l2.first_capture_device("/dev/nul[l]") is None


def test_first_capture_device_skips_codecs_isp_and_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kinds = {
        "video0": {"kind": "error", "error": "permission denied"},
        "video1": {"kind": "metadata"},
        "video2": {"kind": "capture", "formats": []},  # a raw Bayer sensor node FFmpeg cannot read
        "video10": {"kind": "capture", "formats": ["mjpeg"], "card": "USB Camera"},
        "video3": {"kind": "m2m"},
        "video11": {"kind": "capture", "formats": ["yuyv422"]},
        "video13": {"kind": "isp"},
    }
    for name in kinds:
        (tmp_path / name).write_text("")
    monkeypatch.setattr(
        v4l2, "probe_node", lambda path: {"path": path, "card": "", **kinds[os.path.basename(path)]}
    )
    pattern = str(tmp_path / "video*")
    assert [Path(n["path"]).name for n in v4l2.list_capture_devices(pattern)] == ["video2", "video10", "video11"]
    assert v4l2.first_capture_device(pattern) == str(tmp_path / "video10")


# --- formats, sizes and rates --------------------------------------------------------------------


def choose(input_format: str, width: int, height: int, fps: float, table: Any = WEBCAM) -> str | None:
    return choose_input_format("/dev/video0", FakeModes(table), input_format, width, height, fps)


def choose_error(*args: Any, **kwargs: Any) -> str:
    with pytest.raises(SourceError) as caught:
        choose(*args, **kwargs)
    return str(caught.value)


def test_auto_format_prefers_raw_then_mjpeg() -> None:
    assert choose("", 640, 480, 30) == "yuyv422"
    assert choose("", 1280, 720, 30) == "mjpeg"  # YUYV offers only 10 fps at 720p
    assert choose("", 1280, 720, 10) == "yuyv422"
    assert choose("", 640, 480, 29.97) == "yuyv422"  # NTSC rates match


def test_configured_format_by_any_name() -> None:
    for name in ("mjpeg", "MJPG", "mjpg", "jpeg"):
        assert choose(name, 640, 480, 30) == "mjpeg"
    for name in ("yuyv422", "YUYV", "yuy2"):
        assert choose(name, 640, 480, 30) == "yuyv422"


def test_size_not_offered() -> None:
    assert choose_error("", 4000, 3000, 30) == (
        "video.width/video.height: 4000x3000 not offered by /dev/video0 "
        "(it offers: 640x480, 1280x720, 1920x1080)"
    )
    assert choose_error("yuyv422", 1920, 1080, 30) == (
        "video.width/video.height: 1920x1080 not offered by /dev/video0 in yuyv422 "
        "(it offers: 640x480, 1280x720)"
    )


def test_rate_not_offered() -> None:
    assert choose_error("", 640, 480, 60) == (
        "video.fps: 60 not offered by /dev/video0 at 640x480 (it offers: 30, 15 fps)"
    )
    assert choose_error("yuyv422", 1280, 720, 30) == (
        "video.fps: 30 not offered by /dev/video0 at 1280x720 in yuyv422 (it offers: 10, 5 fps); "
        "video.input_format: mjpeg offers 30 fps"
    )


def test_format_not_offered_or_unknown() -> None:
    assert choose_error("h264", 640, 480, 30) == (
        "video.input_format: h264 not offered by /dev/video0 (it offers: yuyv422, mjpeg)"
    )
    message = choose_error("bogus", 640, 480, 30)
    assert message.startswith("video.input_format: 'bogus' is not a format robotcam can read")
    assert message.endswith("/dev/video0 offers: yuyv422, mjpeg")


def test_stepwise_sizes_and_rate_ranges() -> None:
    table = {"NV12": ("Y/CbCr 4:2:0", {SizeRange(32, 1920, 2, 32, 1080, 2): [RateRange(1.0, 60.0)]})}
    assert choose("", 1024, 576, 50, table) == "nv12"
    assert choose_error("", 1025, 576, 30, table).startswith(
        "video.width/video.height: 1025x576 not offered by /dev/video0 (it offers: 32x32 to 1920x1080 in steps of 2x2)"
    )
    assert choose_error("", 640, 480, 90, table) == (
        "video.fps: 90 not offered by /dev/video0 at 640x480 (it offers: 1-60 fps)"
    )


def test_unreadable_formats_and_drivers_that_do_not_enumerate() -> None:
    bayer = {"pRAA": ("10-bit Bayer RGRG/GBGB Packed", {(1640, 1232): [30.0]})}
    message = choose_error("", 1640, 1232, 30, bayer)
    assert message.startswith("video.device: /dev/video0 offers no picture format robotcam can read")
    assert "video.source: picamera" in message
    assert choose("", 640, 480, 30, {}) is None  # nothing enumerable: FFmpeg decides
    assert choose("yuyv", 640, 480, 30, {}) == "yuyv422"
    no_rates = {"MJPG": ("Motion-JPEG", {(640, 480): None})}
    assert choose("", 640, 480, 24, no_rates) == "mjpeg"  # rates not enumerable: not checked


# --- opening: the error messages -----------------------------------------------------------------


def camera(**values: Any) -> VideoConfig:
    return VideoConfig(**{"source": "v4l2", "device": "/dev/video0", "width": 320, "height": 240, "fps": 30, **values})


def open_error(source: V4L2Source) -> str:
    with pytest.raises(SourceError) as caught:
        source.open()
    assert source._container is None  # nothing left open
    return str(caught.value)


def test_real_open_errors_on_this_machine(tmp_path: Path) -> None:
    assert open_error(V4L2Source(camera(device=""))) == (
        "video.source: v4l2 found no camera (no V4L2 capture device in /dev)"
    )
    assert open_error(V4L2Source(camera(device="/dev/video0"))) == "video.device: /dev/video0 does not exist"
    assert open_error(V4L2Source(camera(device="/dev/null"))) == (
        "video.device: /dev/null is not a video capture device (it is not a V4L2 device)"
    )
    plain = tmp_path / "video0"
    plain.write_text("")
    assert open_error(V4L2Source(camera(device=str(plain)))) == (
        f"video.device: {plain} is not a video capture device (it is not a device node)"
    )


AVERROR_EXIT = -struct.unpack("<i", b"EXIT")[0]


@pytest.mark.parametrize(
    "error, message",
    [
        (av.error.OSError(errno.EBUSY, "Device or resource busy", "/dev/video0"),
         "video.device: /dev/video0 is busy: another program is using the camera"),
        (av.error.PermissionError(errno.EACCES, "Permission denied", "/dev/video0"),
         "video.device: /dev/video0: permission denied: add the user to the 'video' group"),
        (PermissionError(errno.EACCES, "Permission denied"),  # from os.open() while probing
         "video.device: /dev/video0: permission denied: add the user to the 'video' group"),
        (av.error.FileNotFoundError(errno.ENOENT, "No such file or directory", "/dev/video0"),
         "video.device: /dev/video0 does not exist"),
        (av.error.OSError(errno.ENODEV, "No such device", "/dev/video0"),
         "video.device: /dev/video0 is not connected (unplugged?)"),
        (av.error.OSError(errno.ENOSPC, "No space left on device", "/dev/video0"),
         "video.device: /dev/video0 cannot stream mjpeg 320x240: not enough USB bandwidth (another "
         "camera on the same bus?); try video.input_format: mjpeg or a smaller video.width/video.height"),
        (av.error.OSError(errno.EINVAL, "Invalid argument", "/dev/video0"),
         "video.input_format/video.width/video.height: /dev/video0 cannot deliver mjpeg at 320x240 "
         "(Invalid argument)"),
        (av.error.OSError(errno.ENOTTY, "Inappropriate ioctl for device", "/dev/video0"),
         "video.device: /dev/video0 is not a video capture device (it is not a V4L2 device)"),
        (av.error.ExitError(AVERROR_EXIT, "Immediate exit requested", "/dev/video0"),
         "video.device: /dev/video0 delivered no frame within 10 s of starting"),
        (av.error.OSError(errno.EIO, "Input/output error", "/dev/video0"),
         "video.device: cannot open /dev/video0: Input/output error"),
    ],
)
def test_open_errors_name_the_key(monkeypatch: pytest.MonkeyPatch, error: BaseException, message: str) -> None:
    def failing_open(self: V4L2Source) -> Any:
        self.device = "/dev/video0"
        self._requested_format = "mjpeg"
        raise error

    monkeypatch.setattr(V4L2Source, "_open_container", failing_open)
    assert open_error(V4L2Source(camera(input_format="mjpeg"))) == message


@pytest.mark.parametrize(
    "raw, expected",
    [
        (PI_CODEC, "video.device: /dev/null is not a video capture device (it is a memory-to-memory "
                   "codec/converter, driver bcm2835-codec)"),
        (UVC_META, "video.device: /dev/null is not a video capture device (it is a metadata node; a "
                   "webcam's picture is on its other /dev/video node)"),
        (PI_ISP_CAPTURE, "video.device: /dev/null is not a video capture device (it is the Raspberry "
                         "Pi's image signal processor, driver bcm2835-isp)"),
        (MPLANE_CAMERA, "video.device: /dev/null is a multi-planar capture device (rkisp1, driver "
                        "rkisp1), which FFmpeg's v4l2 input cannot read"),
    ],
)
def test_probe_rejects_nodes_that_are_not_cameras(monkeypatch: pytest.MonkeyPatch, raw: bytes, expected: str) -> None:
    monkeypatch.setattr(v4l2, "query_capability", lambda fd: parse_capability(raw))
    assert open_error(V4L2Source(camera(device="/dev/null"))) == expected


def test_probe_checks_modes_then_opens_with_the_chosen_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(v4l2, "query_capability", lambda fd: parse_capability(UVC_VIDEO))
    monkeypatch.setattr(v4l2, "DeviceModes", lambda fd: FakeModes(WEBCAM))
    assert open_error(V4L2Source(camera(device="/dev/null", width=4000, height=3000))) == (
        "video.width/video.height: 4000x3000 not offered by /dev/null (it offers: 640x480, 1280x720, 1920x1080)"
    )
    calls: list[tuple[Any, ...]] = []

    def busy(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        raise av.error.OSError(errno.EBUSY, "Device or resource busy", args[0])

    monkeypatch.setattr(v4l2.av, "open", busy)
    source = V4L2Source(camera(device="/dev/null", width=1280, height=720, fps=30))
    assert open_error(source) == "video.device: /dev/null is busy: another program is using the camera"
    (args, kwargs), = calls
    assert args == ("/dev/null",) and kwargs["format"] == "v4l2"
    options = kwargs["options"]
    assert options["input_format"] == "mjpeg"  # YUYV cannot do 720p at 30 fps
    assert options["video_size"] == "1280x720" and options["framerate"] == "30"
    assert options["fflags"] == "nobuffer"
    assert source.describe()["card"] == "HD Pro Webcam C920"


def test_open_that_never_gets_a_frame_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    # FFmpeg waits for the first frame in an ioctl no timeout reaches: the watchdog stops the
    # stream (VIDIOC_STREAMOFF on FFmpeg's descriptor), the ioctl fails, and so does open()
    monkeypatch.setattr(v4l2, "query_capability", lambda fd: parse_capability(UVC_VIDEO))
    monkeypatch.setattr(v4l2, "DeviceModes", lambda fd: FakeModes(WEBCAM))
    monkeypatch.setattr(v4l2, "OPEN_TIMEOUT", 0.3)
    streamoff = threading.Event()
    aborted: list[set[int]] = []

    def stuck_open(device: str, **kwargs: Any) -> Any:
        fd = os.open(device, os.O_RDWR)  # FFmpeg's descriptor
        try:
            assert streamoff.wait(5), "the watchdog never stopped the stream"
            raise av.error.OSError(errno.EINVAL, "Invalid argument", device)  # DQBUF after STREAMOFF
        finally:
            os.close(fd)

    def abort(self: V4L2Source, fds: set[int], opened: threading.Event) -> None:
        aborted.append(fds)
        streamoff.set()

    monkeypatch.setattr(v4l2.av, "open", stuck_open)
    monkeypatch.setattr(V4L2Source, "_abort_open", abort)
    started = time.monotonic()
    message = open_error(V4L2Source(camera(device="/dev/null", width=640, height=480)))
    assert message == "video.device: /dev/null delivered no frame within 0.3 s of starting"
    assert time.monotonic() - started < 3
    assert len(aborted) == 1 and len(aborted[0]) == 1  # it found the descriptor FFmpeg opened


def test_finds_and_unblocks_ffmpegs_descriptor(tmp_path: Path) -> None:
    fd = os.open("/dev/null", os.O_RDWR)
    try:
        assert fd in v4l2.fds_for("/dev/null")
        v4l2.set_nonblocking(fd)
        assert not os.get_blocking(fd)
    finally:
        os.close(fd)
    assert fd not in v4l2.fds_for("/dev/null")
    assert v4l2.fds_for(str(tmp_path / "missing")) == set()


# --- the decode loop, fed from files (blocking reads) ----------------------------------------------


class FileV4L2(V4L2Source):
    """A V4L2Source whose opening step opens a generated file instead of a device."""

    def __init__(self, video: VideoConfig, path: Path, checked: bool = True) -> None:
        super().__init__(video)
        self.path = path
        self.checked = checked

    def _open_container(self) -> Any:
        self.device = str(self.path)
        self._sizes_checked = self.checked
        return av.open(str(self.path))


def run_to_end(source: V4L2Source, timeout: float = 10.0) -> Sink:
    source.open()
    sink = Sink()
    source.start(sink)
    deadline = time.monotonic() + timeout
    while source.running and time.monotonic() < deadline:
        time.sleep(0.02)
    source.stop()
    assert not source.running
    return sink


@pytest.mark.parametrize(
    "name, codec, pix_fmt, delivered",
    [("mjpeg.avi", "mjpeg", "yuvj420p", "mjpeg"), ("yuyv.nut", "rawvideo", "yuyv422", "yuyv422")],
)
def test_decodes_every_frame_of_a_stream(tmp_path: Path, name: str, codec: str, pix_fmt: str, delivered: str) -> None:
    clip = write_clip(tmp_path / name, frames=12, codec=codec, pix_fmt=pix_fmt, options={})
    source = FileV4L2(camera(), clip)
    sink = run_to_end(source)
    assert source.error is None  # the end of a stream ends the source; the pipeline restarts it
    assert sink.numbers == list(range(12))
    info = source.describe()
    assert (info["input_format"], info["width"], info["height"]) == (delivered, 320, 240)
    assert info["frames_captured"] == 12 and info["device"] == str(clip)
    source.close()  # idempotent


def test_unchecked_size_the_driver_changed(tmp_path: Path) -> None:
    # a driver that does not enumerate sizes silently delivers another one: refuse, naming the key
    clip = write_clip(tmp_path / "small.avi", frames=2, codec="mjpeg", pix_fmt="yuvj420p", options={})
    source = FileV4L2(camera(width=640, height=480), clip, checked=False)
    assert open_error(source) == (
        f"video.width/video.height: 640x480 not offered by {clip} (the driver delivers 320x240 instead)"
    )


def test_corrupt_frames_are_skipped_then_fatal(tmp_path: Path) -> None:
    clip = tmp_path / "corrupt.avi"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("mjpeg", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuvj420p"
        out.start_encoding()
        for i in range(v4l2.MAX_BAD_FRAMES + 5):
            packet = av.Packet(b"\xff\xd8garbage, not a jpeg" * 10)
            packet.stream, packet.pts, packet.dts = stream, i, i
            out.mux(packet)
    source = FileV4L2(camera(), clip, checked=True)
    source._setup_stream = lambda container: setattr(source, "_stream", container.streams.video[0])  # type: ignore[method-assign]
    sink = run_to_end(source)
    assert sink.numbers == []
    assert isinstance(source.error, RuntimeError)
    assert "frames in a row could not be decoded" in str(source.error)


# --- a live camera: non-blocking reads, poll, newest frame only ----------------------------------


class FakeCamera:
    """Stands in for FFmpeg's v4l2 container: 'captures' the packets of a generated MJPEG clip at
    `fps` into a queue (the driver's buffers), signals them on a pipe (poll() on the device), and
    raises BlockingIOError when nothing is ready, as PyAV does for EAGAIN on a non-blocking read."""

    def __init__(self, clip: Path, fps: float, fail_after: int | None = None, readable_but_empty: bool = False) -> None:
        self.inner = av.open(str(clip))
        self.streams = self.inner.streams
        self.packets = [p for p in self.inner.demux(self.streams.video[0]) if p.size]
        self.queue: collections.deque[av.Packet] = collections.deque()
        self.lock = threading.Lock()
        self.fd, self._wfd = os.pipe()
        os.set_blocking(self.fd, False)
        self.produced = 0
        self.fail_after = fail_after
        self.closed = False
        self._stop = threading.Event()
        if readable_but_empty:
            os.write(self._wfd, b"!")  # poll says ready (like POLLERR) yet there is never a frame
        self._thread = threading.Thread(target=self._run, args=(fps,), daemon=True) if fps else None
        if self._thread:
            self._thread.start()

    def _run(self, fps: float) -> None:
        while not self._stop.wait(1 / fps):
            with self.lock:
                self.queue.append(self.packets[self.produced % len(self.packets)])
                self.produced += 1
            os.write(self._wfd, b"x")

    def latest(self) -> int:
        with self.lock:
            return (self.produced - 1) % len(self.packets)

    def demux(self, *streams: Any) -> Any:
        while True:
            with self.lock:
                if self.fail_after is not None and self.produced > self.fail_after:
                    raise av.error.OSError(errno.ENODEV, "No such device", "/dev/video0")
                if not self.queue:
                    raise av.error.BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
                packet = self.queue.popleft()
            try:
                os.read(self.fd, 1)
            except BlockingIOError:
                pass
            yield packet

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        if not self.closed:
            self.closed = True
            os.close(self.fd)
            os.close(self._wfd)
            self.inner.close()


class LiveV4L2(V4L2Source):
    """A V4L2Source whose opening step 'opens' a FakeCamera."""

    def __init__(self, video: VideoConfig, make_camera: Any) -> None:
        super().__init__(video)
        self.make_camera = make_camera
        self.camera: FakeCamera | None = None

    def _open_container(self) -> Any:
        self.device = self.video.device
        self.camera = self.make_camera()
        self._fd = self.camera.fd  # what the real step finds in /proc/self/fd
        self._sizes_checked = True
        return self.camera


@pytest.fixture
def mjpeg_clip(tmp_path: Path) -> Path:
    return write_clip(tmp_path / "camera.avi", frames=100, fps=30, codec="mjpeg", pix_fmt="yuvj420p", options={})


def test_live_camera_frames_flow(mjpeg_clip: Path) -> None:
    source = LiveV4L2(camera(), lambda: FakeCamera(mjpeg_clip, fps=30))
    source.open()
    sink = Sink()
    source.start(sink)
    try:
        numbers = sink.wait(10)
    finally:
        source.stop()
    assert source.error is None
    assert numbers[:10] == sorted(numbers[:10]) and None not in numbers
    assert source.camera is not None and source.camera.closed  # close() released the "device"
    assert source.describe()["input_format"] == "mjpeg"


def test_slow_consumer_gets_the_newest_frame_not_a_queue(mjpeg_clip: Path) -> None:
    # the camera makes 50 fps; the consumer takes 0.1 s a frame; frames must not pile up
    source = LiveV4L2(camera(), lambda: FakeCamera(mjpeg_clip, fps=50))
    source.open()
    lags: list[int] = []
    sink = Sink(delay=0.1)
    original = sink.on_frame

    def measure(frame: av.VideoFrame) -> None:
        assert source.camera is not None
        latest = source.camera.latest()
        original(frame)
        lags.append(latest - (sink.numbers[-1] or 0))

    sink.on_frame = measure  # type: ignore[method-assign]
    source.start(sink)
    try:
        numbers = sink.wait(10, timeout=10)
    finally:
        source.stop()
    assert source.error is None
    assert numbers == sorted(numbers)
    assert numbers[-1] - numbers[0] > len(numbers)  # frames were skipped...
    assert source.frames_dropped > 0
    assert max(lags[1:]) <= 3, lags  # ...and what is emitted is the newest (a queue would lag ~40)


def test_idle_camera_stops_promptly(mjpeg_clip: Path) -> None:
    source = LiveV4L2(camera(), lambda: FakeCamera(mjpeg_clip, fps=0))  # never delivers
    source.open()
    source.start(Sink())
    time.sleep(0.3)
    started = time.monotonic()
    source.stop()
    assert time.monotonic() - started < 1.0
    assert not source.running and source.error is None


def test_unplugged_camera_ends_with_an_error(mjpeg_clip: Path) -> None:
    source = LiveV4L2(camera(), lambda: FakeCamera(mjpeg_clip, fps=30, fail_after=5))
    source.open()
    sink = Sink()
    source.start(sink)
    deadline = time.monotonic() + 5
    while source.running and time.monotonic() < deadline:
        time.sleep(0.02)
    source.stop()
    assert not source.running
    assert isinstance(source.error, RuntimeError)
    assert str(source.error) == "video.device: /dev/video0 disappeared (unplugged?): No such device"
    assert 1 <= len(sink.numbers) <= 6


def test_ready_without_frames_does_not_spin(mjpeg_clip: Path) -> None:
    source = LiveV4L2(camera(), lambda: FakeCamera(mjpeg_clip, fps=0, readable_but_empty=True))
    source.open()
    source.start(Sink())
    deadline = time.monotonic() + 5
    while source.running and time.monotonic() < deadline:
        time.sleep(0.02)
    source.stop()
    assert str(source.error) == "video.device: /dev/video0 reports errors but delivers no frames"


# --- end to end --------------------------------------------------------------------------------------


async def test_viewer_receives_the_cameras_frames(robot_factory: Any, mjpeg_clip: Path) -> None:
    config = make_config(video={"source": "v4l2", "device": "/dev/video0", "width": 320, "height": 240, "fps": 30})
    robot = await robot_factory(
        config,
        source_factory=lambda video: (LiveV4L2(video, lambda: FakeCamera(mjpeg_clip, fps=30)), "test"),
    )
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        numbers = await viewer.wait_frames(30, timeout=30)
    finally:
        await viewer.close()
    decoded = [n for n in numbers if n is not None]
    assert len(decoded) >= 20
    assert set(decoded) <= set(range(100))  # every picture is one of the clip's
    assert len(set(decoded)) >= 15
    assert viewer.sizes == {(320, 240)}
    status, health = await robot.health()
    assert status == 200
