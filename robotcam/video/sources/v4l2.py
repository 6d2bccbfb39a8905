"""USB cameras, and any other V4L2 capture device, through PyAV (FFmpeg's v4l2 input).

Before FFmpeg opens the device, robotcam asks the driver itself (VIDIOC_QUERYCAP, ENUM_FMT,
ENUM_FRAMESIZES, ENUM_FRAMEINTERVALS: plain ioctls, no extra dependency) whether it is a camera at
all and whether it offers the configured size and rate. FFmpeg would otherwise quietly take the
nearest size, fall back to another pixel format or accept a slower rate; robotcam refuses with a
message naming the config key instead. With `video.input_format` left empty robotcam picks the
format itself: the first that offers the size at the rate, raw YUV before MJPEG (FFmpeg's own
choice is the first raw format in its table, YUYV for most webcams, which USB 2 carries at 10 fps
or less above 640x480).

Latency: PyAV does not expose the descriptor FFmpeg opens, so robotcam finds it in /proc/self/fd
and makes it non-blocking. The capture thread waits with poll() on it (waking every 0.1 s to see
whether it should stop), then takes every frame the driver has ready and decodes only the newest
(MJPEG and raw formats; an H.264 camera's frames are all decoded and only the newest emitted), so
a slow machine drops frames instead of building a queue in the kernel's buffers. FFmpeg waits for
the first frame while opening, in an ioctl no timeout reaches: a watchdog stops the stream after
OPEN_TIMEOUT so a camera that never delivers fails open() instead of hanging it.
"""

from __future__ import annotations

import errno
import fcntl
import glob
import logging
import os
import re
import select
import stat
import struct
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Protocol

import av
import av.error

from robotcam.config import VideoConfig
from robotcam.video.sources.base import SourceError
from robotcam.video.sources.container import ContainerSource

log = logging.getLogger(__name__)

# --- V4L2 ioctls ---------------------------------------------------------------------------------

CAP_VIDEO_CAPTURE = 0x00000001
CAP_VIDEO_OUTPUT = 0x00000002
CAP_VIDEO_OVERLAY = 0x00000004
CAP_VBI_CAPTURE = 0x00000010
CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
CAP_VIDEO_OUTPUT_MPLANE = 0x00002000
CAP_VIDEO_M2M_MPLANE = 0x00004000
CAP_VIDEO_M2M = 0x00008000
CAP_TUNER = 0x00010000
CAP_RADIO = 0x00040000
CAP_SDR_CAPTURE = 0x00100000
CAP_META_CAPTURE = 0x00800000
CAP_STREAMING = 0x04000000
CAP_META_OUTPUT = 0x08000000
CAP_TOUCH = 0x10000000
CAP_DEVICE_CAPS = 0x80000000

BUF_TYPE_VIDEO_CAPTURE = 1
FRMSIZE_DISCRETE, FRMSIZE_CONTINUOUS, FRMSIZE_STEPWISE = 1, 2, 3
FRMIVAL_DISCRETE, FRMIVAL_CONTINUOUS, FRMIVAL_STEPWISE = 1, 2, 3

_CAPABILITY = struct.Struct("<16s32s32sIII3I")  # struct v4l2_capability, 104 bytes
_FMTDESC = struct.Struct("<III32sII3I")  # struct v4l2_fmtdesc, 64 bytes
_FRMSIZE = struct.Struct("<III6I2I")  # struct v4l2_frmsizeenum, 44 bytes
_FRMIVAL = struct.Struct("<IIIII6I2I")  # struct v4l2_frmivalenum, 52 bytes


def _ioc(direction: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord("V") << 8) | nr


VIDIOC_QUERYCAP = _ioc(2, 0, _CAPABILITY.size)  # _IOR
VIDIOC_ENUM_FMT = _ioc(3, 2, _FMTDESC.size)  # _IOWR
VIDIOC_ENUM_FRAMESIZES = _ioc(3, 74, _FRMSIZE.size)
VIDIOC_ENUM_FRAMEINTERVALS = _ioc(3, 75, _FRMIVAL.size)
VIDIOC_STREAMOFF = _ioc(1, 19, 4)  # _IOW('V', 19, int)

# Drivers of Raspberry Pi (and similar SoC) blocks that expose plain capture nodes without being
# cameras: the ISP's and the PiSP back end's output queues, the codec blocks.
NOT_CAMERA_DRIVERS = {
    "bcm2835-isp": "the Raspberry Pi's image signal processor",
    "pispbe": "the Raspberry Pi 5's image signal processor (PiSP back end)",
    "bcm2835-codec": "the Raspberry Pi's video codec",
    "rpivid": "the Raspberry Pi's HEVC decoder",
    "rpi-hevc-dec": "the Raspberry Pi's HEVC decoder",
}

# FFmpeg's v4l2 input can read these (libavdevice/v4l2-common.c), by the name its input_format
# option takes: a pixel format for raw video, a codec for compressed formats.
FOURCC_TO_FFMPEG = {
    "YU12": "yuv420p", "YV12": "yuv420p", "422P": "yuv422p", "YUYV": "yuyv422",
    "UYVY": "uyvy422", "411P": "yuv411p", "YUV9": "yuv410p", "YVU9": "yuv410p",
    "RGBO": "rgb555le", "RGBQ": "rgb555be", "RGBP": "rgb565le", "RGBR": "rgb565be",
    "BGR3": "bgr24", "RGB3": "rgb24", "BGR4": "bgr0", "RGB4": "0rgb",
    "GREY": "gray", "Y16 ": "gray16le", "NV12": "nv12",
    "MJPG": "mjpeg", "JPEG": "mjpeg", "H264": "h264", "CPIA": "cpia",
    "BA81": "bayer_bggr8", "GBRG": "bayer_gbrg8", "GRBG": "bayer_grbg8", "RGGB": "bayer_rggb8",
}
FORMAT_ALIASES = {
    "mjpg": "mjpeg", "jpeg": "mjpeg", "motion-jpeg": "mjpeg", "yuyv": "yuyv422", "yuy2": "yuyv422",
    "uyvy": "uyvy422", "yu12": "yuv420p", "i420": "yuv420p", "grey": "gray", "y8": "gray",
    "h.264": "h264", "avc": "h264",
}
# When video.input_format is empty: raw YUV (no decoding), then MJPEG, then the rest.
_PREFERENCE = [
    "YUYV", "NV12", "YU12", "YV12", "UYVY", "422P", "411P", "YUV9", "YVU9", "MJPG", "JPEG",
    "RGB3", "BGR3", "RGB4", "BGR4", "RGBP", "RGBR", "RGBO", "RGBQ", "H264",
    "GREY", "Y16 ", "BA81", "GBRG", "GRBG", "RGGB", "CPIA",
]


def fourcc_str(value: int) -> str:
    return struct.pack("<I", value & 0x7FFFFFFF).decode("ascii", "replace")


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace").strip()


@dataclass(frozen=True)
class Capability:
    """struct v4l2_capability, decoded."""

    driver: str
    card: str
    bus_info: str
    version: int
    capabilities: int
    device_caps: int

    @property
    def caps(self) -> int:
        """What this node does (device_caps), not the whole device (capabilities)."""
        return self.device_caps if self.capabilities & CAP_DEVICE_CAPS else self.capabilities


def parse_capability(buffer: bytes | bytearray) -> Capability:
    driver, card, bus, version, capabilities, device_caps, *_ = _CAPABILITY.unpack(
        bytes(buffer[: _CAPABILITY.size])
    )
    return Capability(_cstr(driver), _cstr(card), _cstr(bus), version, capabilities, device_caps)


def classify(cap: Capability) -> str:
    """What a node is: "capture" (a camera FFmpeg reads), "capture-mplane" (a multi-planar camera
    node, which FFmpeg's v4l2 input cannot read), "m2m", "isp", "metadata", "output" or "other"."""
    caps = cap.caps
    if caps & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE):
        return "m2m"
    capture = caps & (CAP_VIDEO_CAPTURE | CAP_VIDEO_CAPTURE_MPLANE)
    if capture and caps & (CAP_VIDEO_OUTPUT | CAP_VIDEO_OUTPUT_MPLANE):
        return "m2m"  # older codec drivers set capture + output instead of the M2M flags
    if capture and cap.driver in NOT_CAMERA_DRIVERS:
        return "isp"
    if caps & CAP_VIDEO_CAPTURE:
        return "capture"
    if caps & CAP_VIDEO_CAPTURE_MPLANE:
        return "capture-mplane"
    if caps & (CAP_META_CAPTURE | CAP_META_OUTPUT):
        return "metadata"
    if caps & (CAP_VIDEO_OUTPUT | CAP_VIDEO_OUTPUT_MPLANE):
        return "output"
    return "other"


def describe_kind(kind: str, cap: Capability) -> str:
    """'it is ...' for an error message."""
    driver = f"driver {cap.driver}" if cap.driver else "unknown driver"
    return {
        "m2m": f"a memory-to-memory codec/converter, {driver}",
        "isp": f"{NOT_CAMERA_DRIVERS.get(cap.driver, 'an image processor')}, {driver}",
        "metadata": "a metadata node; a webcam's picture is on its other /dev/video node",
        "output": f"a video output device, {driver}",
        "capture-mplane": f"a multi-planar capture device, {driver}",
    }.get(kind, f"{cap.card or 'a device'} ({driver}) without video capture")


def query_capability(fd: int) -> Capability:
    buffer = bytearray(_CAPABILITY.size)
    fcntl.ioctl(fd, VIDIOC_QUERYCAP, buffer, True)
    return parse_capability(buffer)


# --- formats, sizes and rates a device offers --------------------------------------------------


@dataclass(frozen=True)
class SizeRange:
    """A stepwise or continuous range of frame sizes."""

    min_width: int
    max_width: int
    step_width: int
    min_height: int
    max_height: int
    step_height: int

    def contains(self, width: int, height: int) -> bool:
        def fits(value: int, low: int, high: int, step: int) -> bool:
            return low <= value <= high and (value - low) % max(1, step) == 0
        return fits(width, self.min_width, self.max_width, self.step_width) and fits(
            height, self.min_height, self.max_height, self.step_height
        )

    def __str__(self) -> str:
        steps = ""
        if self.step_width > 1 or self.step_height > 1:
            steps = f" in steps of {self.step_width}x{self.step_height}"
        return f"{self.min_width}x{self.min_height} to {self.max_width}x{self.max_height}{steps}"


@dataclass(frozen=True)
class RateRange:
    """A stepwise or continuous range of frame rates (fps)."""

    min_fps: float
    max_fps: float

    def __str__(self) -> str:
        return f"{_fps(self.min_fps)}-{_fps(self.max_fps)}"


Size = tuple[int, int] | SizeRange
Rate = float | RateRange


class CameraModes(Protocol):
    """What a device offers; each method returns None when the driver cannot enumerate it."""

    def formats(self) -> list[tuple[str, str]] | None:
        """(fourcc, description) of each capture format."""

    def sizes(self, fourcc: str) -> list[Size] | None: ...

    def rates(self, fourcc: str, width: int, height: int) -> list[Rate] | None: ...


class DeviceModes:
    """CameraModes of an open V4L2 file descriptor, by ENUM_FMT/FRAMESIZES/FRAMEINTERVALS."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._cache: dict[tuple[int, tuple[int, ...]], list[tuple[Any, ...]]] = {}

    def _enum(
        self, request: int, layout: struct.Struct, head: Iterable[int], limit: int
    ) -> list[tuple[Any, ...]]:
        """Every entry of one VIDIOC_ENUM_* list; [] if the driver does not enumerate it."""
        key = (request, tuple(head))
        if key in self._cache:
            return self._cache[key]
        items: list[tuple[Any, ...]] = []
        for index in range(limit):
            buffer = bytearray(layout.size)
            struct.pack_into(f"<{1 + len(key[1])}I", buffer, 0, index, *key[1])
            try:
                fcntl.ioctl(self.fd, request, buffer, True)
            except OSError as exc:
                if exc.errno in (errno.EINVAL, errno.ENOTTY, errno.ENOTSUP, errno.ENODATA):
                    break  # the end of the list (EINVAL), or no such list
                raise
            items.append(layout.unpack(buffer))
        self._cache[key] = items
        return items

    def formats(self) -> list[tuple[str, str]] | None:
        items = self._enum(VIDIOC_ENUM_FMT, _FMTDESC, [BUF_TYPE_VIDEO_CAPTURE], 64)
        return [(fourcc_str(item[4]), _cstr(item[3])) for item in items] or None

    def sizes(self, fourcc: str) -> list[Size] | None:
        code = struct.unpack("<I", fourcc.encode("ascii"))[0]
        sizes: list[Size] = []
        for item in self._enum(VIDIOC_ENUM_FRAMESIZES, _FRMSIZE, [code], 256):
            kind, values = item[2], item[3:9]
            if kind == FRMSIZE_DISCRETE:
                sizes.append((values[0], values[1]))
            else:
                step_w, step_h = (values[2], values[5]) if kind == FRMSIZE_STEPWISE else (1, 1)
                sizes.append(SizeRange(values[0], values[1], step_w, values[3], values[4], step_h))
                break
        return sizes or None

    def rates(self, fourcc: str, width: int, height: int) -> list[Rate] | None:
        code = struct.unpack("<I", fourcc.encode("ascii"))[0]
        rates: list[Rate] = []
        for item in self._enum(VIDIOC_ENUM_FRAMEINTERVALS, _FRMIVAL, [code, width, height], 64):
            kind, values = item[4], item[5:11]
            if kind == FRMIVAL_DISCRETE:
                if values[0] and values[1]:
                    rates.append(values[1] / values[0])  # interval num/den seconds
            else:
                fastest = values[1] / values[0] if values[0] else 0.0  # min interval
                slowest = values[3] / values[2] if values[2] else 0.0  # max interval
                rates.append(RateRange(min(fastest, slowest), max(fastest, slowest)))
                break
        return rates or None


def _fps(value: float) -> str:
    return f"{round(value, 2):g}"


def _rate_matches(offered: Rate, fps: float) -> bool:
    tolerance = max(0.015 * fps, 0.01)
    if isinstance(offered, RateRange):
        return offered.min_fps - tolerance <= fps <= offered.max_fps + tolerance
    return abs(offered - fps) <= tolerance


def _size_matches(offered: Size, width: int, height: int) -> bool:
    if isinstance(offered, SizeRange):
        return offered.contains(width, height)
    return offered == (width, height)


def _list_sizes(sizes: Iterable[Size]) -> str:
    discrete = sorted({s for s in sizes if isinstance(s, tuple)}, key=lambda s: (s[0] * s[1], s))
    ranges = [str(s) for s in dict.fromkeys(s for s in sizes if isinstance(s, SizeRange))]
    return ", ".join([f"{w}x{h}" for w, h in discrete] + ranges)


def _list_rates(rates: Iterable[Rate]) -> str:
    values = sorted({round(r, 2) for r in rates if not isinstance(r, RateRange)}, reverse=True)
    ranges = [str(r) for r in dict.fromkeys(r for r in rates if isinstance(r, RateRange))]
    return ", ".join([_fps(v) for v in values] + ranges) + " fps"


def normalize_input_format(name: str) -> str | None:
    """The FFmpeg input_format for a video.input_format value, or None if robotcam cannot read it."""
    key = name.strip().lower()
    key = FORMAT_ALIASES.get(key, key)
    if key in FOURCC_TO_FFMPEG.values():
        return key
    upper = name.strip().upper().ljust(4)
    return FOURCC_TO_FFMPEG.get(upper)  # a V4L2 fourcc such as MJPG or YUYV


def choose_input_format(
    device: str, modes: CameraModes, input_format: str, width: int, height: int, fps: float
) -> str | None:
    """The FFmpeg input_format to open `device` with (None: FFmpeg's default), checked against what
    the device offers. Raises SourceError naming the key when it does not offer what is asked."""
    wanted = normalize_input_format(input_format) if input_format else None
    formats = modes.formats()
    if input_format and wanted is None:
        offered = ""
        if formats:
            offered = f"; {device} offers: " + ", ".join(
                FOURCC_TO_FFMPEG.get(f, f"{f.strip()} ({d}, not readable)") for f, d in formats
            )
        raise SourceError(
            f"video.input_format: {input_format!r} is not a format robotcam can read from a V4L2 "
            f"camera (use e.g. mjpeg, yuyv422, nv12, yuv420p, h264, or leave it empty){offered}"
        )
    if not formats:
        return wanted  # the driver does not enumerate: FFmpeg and the size check after opening decide

    readable = [(f, d) for f, d in formats if f in FOURCC_TO_FFMPEG]
    if not readable:
        listed = ", ".join(f"{f.strip()} ({d})" for f, d in formats)
        raise SourceError(
            f"video.device: {device} offers no picture format robotcam can read (it offers: "
            f"{listed}); a Raspberry Pi camera module needs video.source: picamera"
        )
    if wanted is not None:
        candidates = [f for f, _ in readable if FOURCC_TO_FFMPEG[f] == wanted]
        if not candidates:
            names = ", ".join(dict.fromkeys(FOURCC_TO_FFMPEG[f] for f, _ in readable))
            raise SourceError(
                f"video.input_format: {wanted} not offered by {device} (it offers: {names})"
            )
    else:
        candidates = sorted((f for f, _ in readable), key=_PREFERENCE.index)

    # size: which candidate formats offer it
    all_sizes: list[Size] = []
    at_size: list[str] = []
    unknown_sizes = False
    for fourcc in candidates:
        sizes = modes.sizes(fourcc)
        if sizes is None:
            unknown_sizes = True
            at_size.append(fourcc)
            continue
        all_sizes += sizes
        if any(_size_matches(s, width, height) for s in sizes):
            at_size.append(fourcc)
    if not at_size:
        scope = f" in {wanted}" if wanted else ""
        raise SourceError(
            f"video.width/video.height: {width}x{height} not offered by {device}{scope} "
            f"(it offers: {_list_sizes(all_sizes)})"
        )
    if unknown_sizes and len(at_size) == len(candidates) and not all_sizes:
        return wanted  # nothing enumerable: leave the choice to FFmpeg

    # rate: which of those offer it
    all_rates: list[Rate] = []
    for fourcc in at_size:
        rates = modes.rates(fourcc, width, height)
        if rates is None or any(_rate_matches(r, fps) for r in rates):
            return FOURCC_TO_FFMPEG[fourcc]
        all_rates += rates
    scope = f" in {wanted}" if wanted else ""
    hint = ""
    if wanted:  # would another format give the rate?
        others = [f for f, _ in readable if FOURCC_TO_FFMPEG[f] != wanted]
        for fourcc in others:
            sizes = modes.sizes(fourcc) or []
            rates = modes.rates(fourcc, width, height) if any(
                _size_matches(s, width, height) for s in sizes) else None
            if rates and any(_rate_matches(r, fps) for r in rates):
                hint = f"; video.input_format: {FOURCC_TO_FFMPEG[fourcc]} offers {_fps(fps)} fps"
                break
    raise SourceError(
        f"video.fps: {_fps(fps)} not offered by {device} at {width}x{height}{scope} "
        f"(it offers: {_list_rates(all_rates)}){hint}"
    )


# --- finding cameras -----------------------------------------------------------------------------


def _node_number(path: str) -> int:
    match = re.search(r"(\d+)$", path)
    return int(match.group(1)) if match else 1 << 30


def _sysfs_name(path: str) -> str:
    try:
        with open(f"/sys/class/video4linux/{os.path.basename(path)}/name", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def _open_node(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)


def probe_node(path: str) -> dict[str, Any]:
    """One /dev/video* node: path, card, driver, bus_info, kind (see classify) and, for capture
    nodes, the formats FFmpeg can read; or kind "error" with the reason it could not be asked."""
    info: dict[str, Any] = {"path": path, "card": _sysfs_name(path), "driver": "", "bus_info": ""}
    try:
        if not stat.S_ISCHR(os.stat(path).st_mode):
            return {**info, "kind": "error", "error": "not a character device"}
        fd = _open_node(path)
    except OSError as exc:
        reason = "permission denied" if exc.errno in (errno.EACCES, errno.EPERM) else exc.strerror
        return {**info, "kind": "error", "error": reason}
    try:
        cap = query_capability(fd)
        kind = classify(cap)
        info.update(card=cap.card or info["card"], driver=cap.driver, bus_info=cap.bus_info, kind=kind)
        if kind == "capture":
            try:
                formats = DeviceModes(fd).formats()
            except OSError:
                formats = None
            info["formats"] = (
                None if formats is None
                else list(dict.fromkeys(FOURCC_TO_FFMPEG[f] for f, _ in formats if f in FOURCC_TO_FFMPEG))
            )
        return info
    except OSError as exc:
        return {**info, "kind": "error", "error": exc.strerror or str(exc)}
    finally:
        os.close(fd)


def scan_video_nodes(pattern: str = "/dev/video*") -> list[dict[str, Any]]:
    """probe_node() for every node, in number order. Never raises."""
    try:
        paths = sorted(glob.glob(pattern), key=lambda p: (_node_number(p), p))
    except Exception:  # noqa: BLE001
        return []
    nodes = []
    for path in paths:
        try:
            nodes.append(probe_node(path))
        except Exception as exc:  # noqa: BLE001 - a scan never raises
            nodes.append({"path": path, "card": "", "kind": "error", "error": str(exc)})
    return nodes


def list_capture_devices(pattern: str = "/dev/video*") -> list[dict[str, Any]]:
    """The V4L2 capture devices (cameras): [{"path", "card", "driver", "bus_info", "kind",
    "formats"}], without codec/ISP (memory-to-memory) and metadata nodes. "kind" is "capture" or
    "capture-mplane" (a multi-planar node FFmpeg cannot read); "formats" lists those robotcam can
    read ([] if none, None if the driver does not say). Never raises."""
    return [n for n in scan_video_nodes(pattern) if n.get("kind") in ("capture", "capture-mplane")]


def first_capture_device(pattern: str = "/dev/video*", exclude: frozenset[str] = frozenset()) -> str | None:
    """The first camera robotcam can read (single-planar capture node with a readable format)
    that is not in `exclude` (held by another camera), or None. Quick (a few ioctls per node)
    and never raises: the daemon's `auto` choice calls it."""
    try:
        for node in list_capture_devices(pattern):
            if node["path"] in exclude:
                continue
            if node["kind"] == "capture" and node.get("formats") != []:
                return node["path"]
    except Exception:  # noqa: BLE001
        log.debug("camera scan failed", exc_info=True)
    return None


def fds_for(path: str) -> set[int]:
    """This process's file descriptors open on the device node `path` (PyAV does not expose the
    one FFmpeg opens; robotcam finds it to poll it, make it non-blocking, or stop a stuck open)."""
    try:
        target = os.stat(path)
        names = os.listdir("/proc/self/fd")
    except OSError:
        return set()
    found = set()
    for name in names:
        try:
            st = os.fstat(int(name))
        except (OSError, ValueError):
            continue
        if stat.S_ISCHR(target.st_mode):
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == target.st_rdev:
                found.add(int(name))
        elif (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            found.add(int(name))
    return found


def set_nonblocking(fd: int) -> None:
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


# --- the source ------------------------------------------------------------------------------------

OPEN_TIMEOUT = 10.0  # s until the camera's first frame, while FFmpeg probes the stream
POLL_INTERVAL = 0.1  # s; how often the capture thread looks at `stop` while no frame comes
SPURIOUS_PAUSE = 0.005  # s after a wakeup that brought no frame
MAX_BATCH = 64  # frames taken from the driver in one go
MAX_BAD_FRAMES = 30  # consecutive undecodable frames before the source gives up
MAX_SPURIOUS = 50  # consecutive "ready" wakeups without a frame (POLLERR) before giving up


class V4L2Source(ContainerSource):
    """A V4L2 capture device (USB webcam, HDMI grabber, ...) decoded by PyAV."""

    name = "v4l2"
    output = "frames"

    def claim(self) -> str | None:
        return self.device or None

    def __init__(self, video: VideoConfig, taken: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.video = video
        self.device = video.device
        self._taken = taken  # devices other cameras hold: `auto` passes them over
        # set by _open_container: the container's non-blocking, pollable descriptor, if any
        self._fd: int | None = None
        self._open_timed_out = False
        self._sizes_checked = False  # the size was checked against the driver's own list
        self._capability: Capability | None = None
        self._requested_format: str | None = None
        self._delivered: dict[str, Any] = {}
        self.frames_captured = 0
        self.frames_dropped = 0
        self.decode_errors = 0

    # --- opening ------------------------------------------------------------------------------

    def open(self) -> None:
        try:
            container = self._open_container()
        except SourceError:
            raise
        except (OSError, av.error.FFmpegError) as exc:
            raise self._explain(exc) from None
        try:
            self._container = container
            self._setup_stream(container)
        except BaseException:
            self._release()
            raise

    def _open_container(self) -> Any:
        """Find, check and open the device: the one step that needs a real camera. Returns the
        PyAV input container, and sets self._fd to its descriptor, made non-blocking (or None:
        the reader then blocks in FFmpeg)."""
        device = self.video.device or first_capture_device(exclude=self._taken)
        if not device:
            raise SourceError(self._no_camera_message())
        self.device = device
        self._requested_format = self._probe(device)
        options = {
            "video_size": f"{self.video.width}x{self.video.height}",
            "framerate": _fps(self.video.fps),
            "fflags": "nobuffer",  # frames read while probing are stale: drop them
            "probesize": "32",  # probe one frame at most (MJPEG: to learn its pixel format)
            "fpsprobesize": "0",  # the driver says the rate
        }
        if self._requested_format:
            options["input_format"] = self._requested_format
        before = fds_for(device)
        opened = threading.Event()
        watchdog = threading.Thread(
            target=self._open_watchdog, args=(device, before, opened),
            name="robotcam-v4l2-open", daemon=True,
        )
        watchdog.start()
        try:
            container = av.open(device, format="v4l2", options=options)
        finally:
            opened.set()
            watchdog.join()
        try:
            if self._open_timed_out:  # opened just as the watchdog stopped the stream
                raise av.error.ExitError(-0x54495845, "Immediate exit requested", device)
            new = fds_for(device) - before
            if len(new) == 1:
                self._fd = new.pop()
                set_nonblocking(self._fd)
            else:
                self._fd = None
                log.warning("%s: cannot find FFmpeg's descriptor; reading it blocking", device)
        except BaseException:
            self._fd = None
            container.close()
            raise
        return container

    def _open_watchdog(self, device: str, before: set[int], opened: threading.Event) -> None:
        """FFmpeg waits for the first frame in a blocking ioctl no timeout reaches; a camera that
        starts streaming but never delivers would hang open() forever. Stopping the stream from
        here makes that ioctl fail, and open() with it."""
        if opened.wait(OPEN_TIMEOUT):
            return
        self._open_timed_out = True
        self._abort_open(fds_for(device) - before, opened)

    def _abort_open(self, fds: set[int], opened: threading.Event) -> None:
        for fd in fds:
            if opened.is_set():
                return
            try:
                fcntl.ioctl(fd, VIDIOC_STREAMOFF, struct.pack("<i", BUF_TYPE_VIDEO_CAPTURE))
            except OSError:
                pass

    def _probe(self, device: str) -> str | None:
        """Check the node is a camera offering the configured size/rate; the input_format to use."""
        st = os.stat(device)  # FileNotFoundError / PermissionError: see _explain
        if stat.S_ISDIR(st.st_mode):
            raise SourceError(f"video.device: {device} is a directory, not a camera device")
        if not stat.S_ISCHR(st.st_mode):
            raise SourceError(
                f"video.device: {device} is not a video capture device (it is not a device node)"
            )
        fd = _open_node(device)
        try:
            try:
                cap = query_capability(fd)
            except OSError as exc:
                if exc.errno in (errno.ENOTTY, errno.EINVAL):
                    raise SourceError(
                        f"video.device: {device} is not a video capture device (it is not a V4L2 device)"
                    ) from None
                raise
            self._capability = cap
            kind = classify(cap)
            if kind == "capture-mplane":
                raise SourceError(
                    f"video.device: {device} is a multi-planar capture device ({cap.card}, driver "
                    f"{cap.driver}), which FFmpeg's v4l2 input cannot read"
                    + self._cameras_hint(device)
                )
            if kind != "capture":
                raise SourceError(
                    f"video.device: {device} is not a video capture device (it is "
                    f"{describe_kind(kind, cap)})" + self._cameras_hint(device)
                )
            modes = DeviceModes(fd)
            chosen = choose_input_format(
                device, modes, self.video.input_format,
                self.video.width, self.video.height, self.video.fps,
            )
            formats = modes.formats() or []
            self._sizes_checked = any(modes.sizes(f) for f, _ in formats if f in FOURCC_TO_FFMPEG)
            return chosen
        finally:
            os.close(fd)

    def _setup_stream(self, container: Any) -> None:
        if not container.streams.video:
            raise SourceError(f"video.device: {self.device} delivers no video stream")
        stream = container.streams.video[0]
        # slice threads only: frame threading would hold frames back (latency of one per thread)
        try:
            stream.thread_type = "SLICE"
        except Exception:  # noqa: BLE001 - a decoder without threading
            pass
        self._stream = stream
        ctx = stream.codec_context
        codec_name = ctx.name
        pix = ctx.pix_fmt
        rate = stream.average_rate or stream.guessed_rate
        self._delivered = {
            "input_format": pix if codec_name == "rawvideo" else codec_name,
            "width": ctx.width,
            "height": ctx.height,
            "fps": round(float(rate), 2) if rate else None,
        }
        size = (ctx.width, ctx.height)
        wanted = (self.video.width, self.video.height)
        if size != wanted and ctx.width and ctx.height:
            if not self._sizes_checked:
                raise SourceError(
                    f"video.width/video.height: {wanted[0]}x{wanted[1]} not offered by {self.device} "
                    f"(the driver delivers {size[0]}x{size[1]} instead)"
                )
            log.warning("%s delivers %dx%d, not %dx%d: the pipeline scales it",
                        self.device, size[0], size[1], wanted[0], wanted[1])
        delivered_fps = self._delivered["fps"]
        if delivered_fps and not _rate_matches(delivered_fps, self.video.fps):
            log.warning("%s delivers %s fps, not the %s configured", self.device,
                        _fps(delivered_fps), _fps(self.video.fps))

    def _no_camera_message(self) -> str:
        nodes = scan_video_nodes()
        denied = [n["path"] for n in nodes if n.get("error") == "permission denied"]
        if denied:
            return (
                f"video.source: v4l2 found no camera it may open: {', '.join(denied)}: permission "
                "denied: add the user to the 'video' group"
            )
        return "video.source: v4l2 found no camera (no V4L2 capture device in /dev)"

    def _cameras_hint(self, device: str) -> str:
        cameras = [n for n in list_capture_devices() if n["kind"] == "capture" and n["path"] != device]
        if not cameras:
            return ""
        listed = ", ".join(f"{n['path']} ({n['card']})" for n in cameras)
        return f"; cameras here: {listed}"

    def _explain(self, exc: BaseException) -> SourceError:
        """A SourceError naming the key for an error from opening the device."""
        device = self.device or self.video.device or "the camera"
        code = getattr(exc, "errno", None)
        reason = getattr(exc, "strerror", None) or str(exc)
        fmt = self._requested_format or self.video.input_format or "its default format"
        size = f"{self.video.width}x{self.video.height}"
        if self._open_timed_out or isinstance(exc, av.error.ExitError) or code == errno.ETIMEDOUT:
            return SourceError(
                f"video.device: {device} delivered no frame within {OPEN_TIMEOUT:g} s of starting"
            )
        messages = {
            errno.ENOENT: f"video.device: {device} does not exist" + self._cameras_hint(device),
            errno.EACCES: f"video.device: {device}: permission denied: add the user to the 'video' group",
            errno.EBUSY: f"video.device: {device} is busy: another program is using the camera",
            errno.ENODEV: f"video.device: {device} is not connected (unplugged?)",
            errno.ENXIO: f"video.device: {device} is not connected (unplugged?)",
            errno.ENOSPC: (
                f"video.device: {device} cannot stream {fmt} {size}: not enough USB bandwidth (another "
                "camera on the same bus?); try video.input_format: mjpeg or a smaller "
                "video.width/video.height"
            ),
            errno.ENOTTY: f"video.device: {device} is not a video capture device (it is not a V4L2 device)",
            errno.EISDIR: f"video.device: {device} is a directory, not a camera device",
            errno.ENOSYS: f"video.device: {device} does not support streaming I/O, which FFmpeg needs",
            errno.EINVAL: (
                f"video.input_format/video.width/video.height: {device} cannot deliver {fmt} at "
                f"{size} ({reason})"
            ),
        }
        messages[errno.EPERM] = messages[errno.EACCES]
        if code in messages:
            return SourceError(messages[code])
        if isinstance(exc, (av.error.DemuxerNotFoundError, av.error.OptionNotFoundError)):
            return SourceError(f"video.source: this PyAV/FFmpeg build cannot read V4L2 devices ({reason})")
        return SourceError(f"video.device: cannot open {device}: {reason}")

    # --- capturing ------------------------------------------------------------------------------

    @property
    def label(self) -> str:
        return self.device or "the V4L2 camera"

    def read(self, stop: threading.Event) -> None:
        self._capture(self._container, self._stream, stop)

    def _capture(self, container: Any, stream: Any, stop: threading.Event) -> None:
        codec = stream.codec_context
        try:
            intra_only = bool(codec.codec.intra_only)
        except Exception:  # noqa: BLE001
            intra_only = codec.name in ("mjpeg", "rawvideo")
        reader = self._reader(container, stream, stop)
        bad = 0
        while not stop.is_set():
            packets, ended = next(reader)
            if intra_only and len(packets) > 1:
                self.frames_dropped += len(packets) - 1  # every frame stands alone: keep the newest
                packets = packets[-1:]
            newest = None
            decoded = 0
            for packet in packets + ([None] if ended else []):
                try:
                    frames = codec.decode(packet)
                except av.error.FFmpegError as exc:
                    # a corrupt frame (a USB hiccup): skip it, give up if nothing decodes any more
                    self.decode_errors += 1
                    bad += 1
                    if bad >= MAX_BAD_FRAMES:
                        raise RuntimeError(
                            f"video.device: {self.device}: {bad} frames in a row could not be "
                            f"decoded ({exc})"
                        ) from exc
                    continue
                if frames:
                    bad = 0
                    decoded += len(frames)
                    newest = frames[-1]
            if decoded > 1:
                self.frames_dropped += decoded - 1
            del packets
            if newest is not None:
                self.frames_captured += 1
                self.emit(newest)
            if ended:
                log.info("%s: end of stream", self.device)
                return

    def _reader(self, container: Any, stream: Any, stop: threading.Event) -> Any:
        """Yields (packets, ended): every frame the device has ready (possibly none, after a
        bounded wait), and whether the stream ended. Raises when the device fails."""
        if self._fd is None:
            # a blocking container: one packet at a time (FFmpeg waits for each frame)
            try:
                for packet in container.demux(stream):
                    if packet.size == 0:
                        break
                    yield [packet], False
            except (OSError, av.error.FFmpegError) as exc:
                raise RuntimeError(self._lost_message(exc)) from exc
            while True:
                yield [], True

        poller = select.poll()
        poller.register(self._fd, select.POLLIN | select.POLLPRI)
        spurious = 0
        while True:
            if not poller.poll(POLL_INTERVAL * 1000):
                yield [], False  # nothing yet: the caller looks at `stop`
                continue
            batch: list[Any] = []
            ended = False
            try:
                for packet in container.demux(stream):
                    if packet.size == 0:
                        ended = True
                        break
                    batch.append(packet)
                    if len(batch) >= MAX_BATCH:
                        break
            except BlockingIOError:
                pass  # EAGAIN: nothing more ready
            except (OSError, av.error.FFmpegError) as exc:
                raise RuntimeError(self._lost_message(exc)) from exc
            if batch or ended:
                spurious = 0
            else:
                spurious += 1  # poll said ready (POLLERR?) but there was no frame
                if spurious >= MAX_SPURIOUS:
                    raise RuntimeError(
                        f"video.device: {self.device} reports errors but delivers no frames"
                    )
                stop.wait(SPURIOUS_PAUSE)
            yield batch, ended

    def _lost_message(self, exc: BaseException) -> str:
        code = getattr(exc, "errno", None)
        reason = getattr(exc, "strerror", None) or str(exc)
        if code in (errno.ENODEV, errno.ENXIO):
            return f"video.device: {self.device} disappeared (unplugged?): {reason}"
        return f"video.device: {self.device} stopped delivering frames: {reason}"

    def _forget(self) -> None:
        self._fd = None

    def describe(self) -> dict[str, Any]:
        cap = self._capability
        info: dict[str, Any] = {
            "device": self.device or "auto",
            "card": cap.card if cap else None,
            "driver": cap.driver if cap else None,
            "bus_info": cap.bus_info if cap else None,
            "input_format_configured": self.video.input_format or "auto",
            "requested": f"{self.video.width}x{self.video.height}@{_fps(self.video.fps)}",
        }
        info.update(self._delivered)
        info.update(
            frames_captured=self.frames_captured,
            frames_dropped=self.frames_dropped,
            decode_errors=self.decode_errors,
        )
        return info
