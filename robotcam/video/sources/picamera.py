"""The Raspberry Pi camera through picamera2 (libcamera), encoded to H.264 on the Pi itself.

The camera's ISP scales and flips; picamera2's H264Encoder encodes: the hardware V4L2 encoder
on a Pi 4 and earlier, libx264 in software on a Pi 5, which has no H.264 block (picamera2's
`picamera2.encoders` makes H264Encoder an alias of LibavH264Encoder there). Each encoded frame
reaches an Output subclass here, from picamera2's encoder thread (V4L2) or camera thread
(libav), and goes to the pipeline as one av.Packet: Annex B as the encoder wrote it, the
keyframe flag, and the frame's sensor timestamp in microseconds. Nothing is decoded or
re-encoded on the way.

Lower rungs (video.adaptive): the camera is configured with a second, "lores" stream, YUV420
at the size of the largest lower rung, scaled by the ISP from the same sensor frame. While a
viewer is on a lower rung, picamera2's post_callback copies each request's lores picture out
(request.make_array("lores")) and hands it to the pipeline, which encodes each lower rung once
with the encoders it uses for frame sources (h264_v4l2m2m, the Pi 4's hardware block, when
it works; libx264 otherwise, as on a Pi 5, which has no H.264 block). While nobody is on a
lower rung it costs the ISP writing the small picture and nothing else: no copy, no encoder.
The lores frame gets the pts its main-stream packet gets, so a viewer moving between rungs
stays on one timeline.

Why not a second picamera2 H264Encoder on "lores" (start_encoder(..., name="lores")): it
would serve one rung only (one bitrate and rate per encoder; the second lower rung would need
a third), stamp its frames from its own first one, be stopped with the main one by
stop_encoder() (how keyframes are forced on old picamera2 or new PyAV), and on a Pi 5 be
libx264 in the camera's thread anyway. The pipeline's encoders already have per-rung bitrate
and rate, keyframes on request, and start and stop with their viewers.

picamera2 comes from Raspberry Pi OS (apt: python3-picamera2), not PyPI, so it is imported only
inside open() and probe(): the rest of robotcam runs anywhere.

API facts this relies on (picamera2 0.3.x):
- Picamera2.global_camera_info() lists cameras (dicts with Model, Id, ...) without opening any;
  Picamera2(n) opens the n-th of that list. When libcamera cannot acquire the camera, the
  constructor raises RuntimeError("Camera __init__ sequence did not complete.") whose cause is
  libcamera's RuntimeError("Failed to acquire camera: Device or resource busy").
- libcamera adjusts a configuration it cannot deliver (size, transform) instead of refusing it;
  camera_configuration() afterwards says what was granted.
- H264Encoder(bitrate, repeat, iperiod, framerate, ..., profile) (profile= since 0.3.17:
  "baseline", "constrained baseline", "main", "high"); force_key_frame() since 0.3.32.
- Output.outputframe(frame, keyframe=True, timestamp=None, packet=None, audio=False), the
  timestamp in microseconds since the encoder started: the request's SensorTimestamp (ns) / 1000
  less the encoder's `firsttimestamp` (Encoder._timestamp; libav passes it through as the
  packet's pts).
- create_video_configuration(main, lores={"size", "format"}): lores defaults to YUV420; its
  size may not exceed main's (RuntimeError), and on a Pi 4 (VC4) it must be YUV. After
  configure(), camera_configuration()["lores"] holds the granted size and stride.
- Picamera2.post_callback(request) runs in the camera thread for every completed request,
  under picamera2's lock, before the encoders see it; request.make_array("lores") copies the
  lores picture out as (height * 3 / 2, stride) bytes, and request.get_metadata() has its
  "SensorTimestamp".
- capture_array(name="main", wait=None, signal_function=None) with wait=False returns a job
  that wait(job, timeout) completes with the next frame of the running camera; a YUV420
  stream comes as a 2-D array of (height * 3 / 2) rows of `stride` bytes: the Y plane, then
  U and V planes of half the rows and half the stride each.
- LibavH264Encoder forces a keyframe with `frame.pict_type = "I"`, which PyAV >= 14 refuses
  (TypeError in the camera thread, which ends). Where that would happen, and before 0.3.32,
  a keyframe request restarts the encoder instead (stop_encoder/start_encoder while the camera
  runs; an encoder's first frame is an IDR).
"""

from __future__ import annotations

import errno
import inspect
import logging
import math
import threading
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np

from robotcam.config import VideoConfig
from robotcam.video.rungs import ladder
from robotcam.video.sources.base import SourceError, SourceSink, VideoSource

log = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 1_000_000)  # picamera2's timestamps are microseconds
PROFILE = "constrained baseline"  # what the SDP's profile-level-id=42e01f promises
KEYFRAME_MIN_INTERVAL = 0.3  # forced IDRs closer than this merge into one (as robotcam.video.encoder)
STILL_TIMEOUT = 1.0  # longest wait for the running camera's next frame for a still
RESTART_MIN_INTERVAL = 1.0  # the same, when forcing means restarting the encoder (old picamera2)
# The Pi's hardware H.264 encoder (bcm2835 codec) handles up to 1080p: level 4.2 at most.
HW_MAX_SIDE, HW_MAX_MACROBLOCKS = 1920, (1920 // 16) * (1088 // 16)
HARDWARE, SOFTWARE = "hardware H.264 (V4L2)", "software H.264 (libav)"

NEEDS_PICAMERA2 = (
    "video.source: picamera needs picamera2: on Raspberry Pi OS, sudo apt install "
    "python3-picamera2 (the venv needs --system-site-packages)"
)
NO_CAMERA = (
    "video.source: picamera found no camera (check the ribbon cable; rpicam-hello --list-cameras)"
)
BUSY = "video.source: the Pi camera is busy: another program (rpicam-vid, motion, ...) holds it"

# config value -> libcamera enum member, and the config key each control comes from
_AF_MODES = {"manual": "Manual", "auto": "Auto", "continuous": "Continuous"}
_EXPOSURE_MODES = {"normal": "Normal", "short": "Short", "long": "Long"}
_AWB_MODES = {
    "auto": "Auto", "incandescent": "Incandescent", "tungsten": "Tungsten",
    "fluorescent": "Fluorescent", "indoor": "Indoor", "daylight": "Daylight", "cloudy": "Cloudy",
}


def probe() -> tuple[bool, str]:
    """Whether the picamera source can run here, and why (for `video.source: auto`).

    Never raises and never opens a camera: global_camera_info() only lists them."""
    try:
        from picamera2 import Picamera2
    except ImportError:
        return False, "picamera2 is not installed (on Raspberry Pi OS: sudo apt install python3-picamera2)"
    except Exception as exc:  # noqa: BLE001 - e.g. libcamera present but broken
        return False, f"picamera2 failed to import: {exc}"
    try:
        cameras = list(Picamera2.global_camera_info())
    except Exception as exc:  # noqa: BLE001
        return False, f"picamera2 could not list cameras: {exc}"
    pi_cameras = [c for c in cameras if not _is_usb(c)]
    if not pi_cameras:
        if cameras:
            return False, "picamera2 lists only USB cameras (use video.source: v4l2 for those)"
        return False, "picamera2 found no camera (check the ribbon cable; rpicam-hello --list-cameras)"
    models = ", ".join(str(c.get("Model", "?")) for c in pi_cameras)
    return True, f"picamera2 found {len(pi_cameras)} Pi camera(s): {models}"


def lores_size(video: VideoConfig) -> tuple[int, int] | None:
    """The lores stream's size: the largest lower rung's (the others are scaled down from it,
    never up), or None when there is no lower rung (video.adaptive off)."""
    lower = ladder(video)[1:]
    if not lower:
        return None
    largest = max(lower, key=lambda rung: rung.width * rung.height)
    return largest.width, largest.height


def _is_usb(info: dict[str, Any]) -> bool:
    # picamera2 itself tells USB cameras apart by the "/usb" in their libcamera id
    return "/usb" in str(info.get("Id", ""))


def _exception_chain(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _is_busy(exc: BaseException) -> bool:
    for link in _exception_chain(exc):
        if getattr(link, "errno", None) == errno.EBUSY:
            return True
        text = str(link).lower()
        if "busy" in text or "failed to acquire camera" in text:
            return True
    return False


def _describe_error(exc: BaseException) -> str:
    return ": ".join(str(link) or type(link).__name__ for link in _exception_chain(exc))


def _nal_types(data: bytes) -> set[int]:
    """NAL unit types in an Annex B buffer (start codes cannot occur inside a NAL unit)."""
    types, pos = set(), data.find(b"\x00\x00\x01")
    while pos != -1 and pos + 3 < len(data):
        types.add(data[pos + 3] & 0x1F)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return types


def _libav_force_works(encoder_cls: type) -> bool:
    """picamera2's LibavH264Encoder marks a forced keyframe with `frame.pict_type = "I"`;
    PyAV 14 made pict_type an IntEnum and raises TypeError for a letter, in picamera2's camera
    thread, which then ends. Use force_key_frame() only where that cannot happen."""
    try:
        av.VideoFrame(16, 16, "yuv420p").pict_type = "I"  # type: ignore[assignment]
        return True
    except (TypeError, ValueError):
        pass
    try:
        source = inspect.getsource(encoder_cls._encode)  # type: ignore[attr-defined]
    except (OSError, TypeError, AttributeError):
        return False
    return 'pict_type = "I"' not in source and "pict_type = 'I'" not in source


def _transform_name(hflip: bool, vflip: bool) -> str:
    return "+".join(n for n, on in (("hflip", hflip), ("vflip", vflip)) if on) or "none"


def _output_class(base: type) -> type:
    """A picamera2 Output that hands every encoded frame to the source (made lazily: the base
    class comes from picamera2, imported only in open())."""

    class SinkOutput(base):  # type: ignore[misc, valid-type]
        def __init__(self, source: PicameraSource) -> None:
            super().__init__()
            self._source = source

        def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):  # noqa: ANN001
            if not audio:
                self._source._on_encoded(frame, keyframe, timestamp)

    return SinkOutput


class PicameraSource(VideoSource):
    """A Raspberry Pi camera (CSI) through picamera2, delivering H.264 packets."""

    name = "picamera"
    output = "h264"
    handles_transform = True

    def claim(self) -> str | None:
        return f"Pi camera {self.camera_index}"

    def __init__(self, video: VideoConfig) -> None:
        self.video = video
        self.error: BaseException | None = None
        self._lock = threading.RLock()  # open/start/stop/encoder restarts
        self._picam2: Any = None
        self._encoder: Any = None
        self._output: Any = None
        self._output_cls: type | None = None
        self._af_trigger: Any = None
        self._sink: SourceSink | None = None
        self._state = "new"  # new -> open -> starting -> running -> stopped
        self._stopping = threading.Event()
        self._starter: threading.Thread | None = None
        self._restarter: threading.Thread | None = None
        self._restarting = False
        # what was opened, for describe()
        self.camera_index = video.picamera.camera
        self.model: str | None = None
        self.encoder_kind: str | None = None
        self.size: tuple[int, int] | None = None
        self.controls_applied: dict[str, str] = {}
        self.controls_skipped: list[str] = []
        # the lores stream, for lower rungs: asked for, granted, and whether it is fed now
        self._lores_wanted = lores_size(video)
        self.lores_size: tuple[int, int] | None = None
        self._lores_stride = 0
        self._lores_on = False  # set by the pipeline (event loop), read in the camera thread
        self._last_lores_pts: int | None = None
        self.lores_frames = 0
        self.lores_errors = 0
        # packets out
        self.packets = 0
        self._pending_headers = b""
        self._pts_offset = 0
        self._last_pts: int | None = None
        self._frame_us = max(1, round(1_000_000 / video.fps))
        # keyframe requests
        self._kf_lock = threading.Lock()
        self._keyframe_wanted = False
        self._last_forced = -math.inf
        self._can_force = True
        self.keyframes_requested = 0
        self.keyframes_forced = 0

    # --- open -------------------------------------------------------------------------------

    def open(self) -> None:
        try:
            from libcamera import Transform, controls
            from picamera2 import Picamera2
            from picamera2 import encoders as picamera2_encoders
            from picamera2.outputs import Output
        except ImportError as exc:
            missing = getattr(exc, "name", None)
            detail = "" if missing in ("picamera2", "libcamera") else f" (importing it failed: {exc})"
            raise SourceError(NEEDS_PICAMERA2 + detail) from exc
        except Exception as exc:  # noqa: BLE001 - a broken install is as unusable as none
            raise SourceError(f"{NEEDS_PICAMERA2} (importing it failed: {exc})") from exc

        try:
            cameras = list(Picamera2.global_camera_info())
        except Exception as exc:  # noqa: BLE001
            raise SourceError(f"video.source: picamera could not list cameras: {_describe_error(exc)}") from exc
        if not cameras:
            raise SourceError(NO_CAMERA)
        index = self.video.picamera.camera
        if index >= len(cameras):
            listed = ", ".join(f"{i}: {c.get('Model', '?')}" for i, c in enumerate(cameras))
            raise SourceError(
                f"video.picamera.camera: there is no camera {index}: picamera2 lists "
                f"{len(cameras)} camera{'s' if len(cameras) != 1 else ''} ({listed})"
            )
        info = cameras[index]
        if _is_usb(info):
            raise SourceError(
                f"video.picamera.camera: camera {index} ({info.get('Model', '?')}) is a USB camera; "
                "use video.source: v4l2 for it"
            )
        encoder_cls, self.encoder_kind = self._choose_encoder(picamera2_encoders)
        self._check_encoder_size()

        try:
            picam2 = Picamera2(index)
        except Exception as exc:  # noqa: BLE001 - picamera2 raises RuntimeError, libcamera others
            if _is_busy(exc):
                raise SourceError(BUSY) from exc
            raise SourceError(
                f"video.source: the Pi camera {index} could not be opened: {_describe_error(exc)}"
            ) from exc
        with self._lock:
            self._picam2 = picam2
        try:
            self.model = str(picam2.camera_properties.get("Model") or info.get("Model") or "unknown")
            self._configure(picam2, Transform)
            self._set_controls(picam2, controls)
            self._encoder = self._make_encoder(encoder_cls)
            self._output_cls = _output_class(Output)
            if self.video.picamera.autofocus == "auto" and "AfTrigger" in picam2.camera_controls:
                self._af_trigger = controls.AfTriggerEnum.Start
        except BaseException:
            self._release()
            raise
        self._state = "open"
        log.info(
            "picamera: camera %d (%s) %dx%d@%g, %s, %d kbit/s, keyframe every %d frames, %s, %s",
            index, self.model, self.video.width, self.video.height, self.video.fps,
            self.encoder_kind, self.video.bitrate // 1000, self._iperiod,
            _transform_name(*self.video.flips),
            "lores %dx%d for the lower rungs" % self.lores_size if self.lores_size else "no lores stream",
        )

    def _choose_encoder(self, encoders: Any) -> tuple[type, str]:
        """picamera2's H264Encoder is the hardware one on VC4 and libav's on a Pi 5;
        video.encoder can ask for libx264 (software) or insist on the hardware encoder."""
        platform_encoder = encoders.H264Encoder
        libav = getattr(encoders, "LibavH264Encoder", None)
        platform_is_software = libav is not None and issubclass(platform_encoder, libav)
        choice = self.video.encoder
        if choice == "libx264":
            if libav is None:
                raise SourceError(
                    "video.encoder: libx264 needs picamera2 with LibavH264Encoder (0.3.13 or "
                    "later); set video.encoder: auto"
                )
            return libav, SOFTWARE
        if choice == "h264_v4l2m2m" and platform_is_software:
            raise SourceError(
                "video.encoder: h264_v4l2m2m: this Raspberry Pi has no hardware H.264 encoder "
                "(a Pi 5 encodes in software); set video.encoder: auto or libx264"
            )
        return platform_encoder, SOFTWARE if platform_is_software else HARDWARE

    def _check_encoder_size(self) -> None:
        width, height = self.video.width, self.video.height
        macroblocks = ((width + 15) // 16) * ((height + 15) // 16)
        if self.encoder_kind == HARDWARE and (
            max(width, height) > HW_MAX_SIDE or macroblocks > HW_MAX_MACROBLOCKS
        ):
            raise SourceError(
                f"video.width/video.height: {width}x{height} is larger than the Pi's hardware "
                "H.264 encoder handles (1920x1080); lower the size, or set video.encoder: "
                "libx264 to encode in software"
            )

    def _configure(self, picam2: Any, transform_cls: Any) -> None:
        video = self.video
        width, height = video.width, video.height
        hflip, vflip = video.flips
        config_controls: dict[str, Any] = {}
        if "FrameDurationLimits" in picam2.camera_controls:
            period = max(1, round(1_000_000 / video.fps))
            config_controls["FrameDurationLimits"] = (period, period)

        def configure(lores: tuple[int, int] | None) -> None:
            config = picam2.create_video_configuration(
                main={"size": (width, height), "format": "YUV420"},
                lores={"size": lores, "format": "YUV420"} if lores else None,
                transform=transform_cls(hflip=hflip, vflip=vflip),
                controls=config_controls,
            )
            picam2.configure(config)

        lores = self._lores_wanted
        try:
            try:
                configure(lores)
            except Exception as exc:  # noqa: BLE001 - the picture matters more than lower rungs
                if lores is None:
                    raise
                log.warning(
                    "picamera: camera %s refused a %dx%d lores stream (%s): no lower rungs, "
                    "viewers on weak links stay on the full stream", self.model, *lores,
                    _describe_error(exc),
                )
                lores = None
                configure(None)
        except Exception as exc:  # noqa: BLE001 - RuntimeError/ValueError from picamera2
            raise SourceError(
                f"video.width/video.height: camera {self.model} rejected {width}x{height} at "
                f"{video.fps:g} fps: {_describe_error(exc)}"
            ) from exc
        granted = picam2.camera_configuration()
        if lores is not None and granted.get("lores"):
            self.lores_size = tuple(granted["lores"]["size"])  # type: ignore[assignment]
            self._lores_stride = granted["lores"].get("stride") or self.lores_size[0]
        size = tuple(granted["main"]["size"])
        if size != (width, height):
            sensor = getattr(picam2, "sensor_resolution", None)
            largest = f"; its sensor is {sensor[0]}x{sensor[1]}" if sensor else ""
            raise SourceError(
                f"video.width/video.height: camera {self.model} cannot deliver {width}x{height} "
                f"(libcamera offered {size[0]}x{size[1]}){largest}"
            )
        self.size = (width, height)
        transform = granted.get("transform")
        if transform is not None and (bool(transform.hflip), bool(transform.vflip)) != (hflip, vflip):
            raise SourceError(
                f"video.hflip/video.vflip/video.rotation: camera {self.model} cannot apply "
                f"{_transform_name(hflip, vflip)} (libcamera granted "
                f"{_transform_name(bool(transform.hflip), bool(transform.vflip))})"
            )

    def _set_controls(self, picam2: Any, controls: Any) -> None:
        """Named settings and raw controls; only those this camera advertises (a camera
        without autofocus has no AfMode, a USB one no AeExposureMode...)."""
        settings = self.video.picamera
        wanted: list[tuple[str, Any, str]] = []  # (control, value, config key)
        if settings.autofocus != "default":
            wanted.append(("AfMode", getattr(controls.AfModeEnum, _AF_MODES[settings.autofocus]),
                           f"video.picamera.autofocus: {settings.autofocus}"))
        wanted.append(("AeExposureMode",
                       getattr(controls.AeExposureModeEnum, _EXPOSURE_MODES[settings.exposure]),
                       f"video.picamera.exposure: {settings.exposure}"))
        wanted.append(("AwbMode", getattr(controls.AwbModeEnum, _AWB_MODES[settings.awb]),
                       f"video.picamera.awb: {settings.awb}"))
        for name, value in settings.controls.items():
            value = tuple(value) if isinstance(value, list) else value
            wanted.append((name, value, f"video.picamera.controls.{name}"))

        available = picam2.camera_controls
        apply: dict[str, Any] = {}
        for name, value, key in wanted:
            known = name in available or (name == "FrameRate" and "FrameDurationLimits" in available)
            if not known:
                log.info("picamera: camera %s has no %s control; ignoring %s", self.model, name, key)
                self.controls_skipped.append(name)
                continue
            apply[name] = value  # a raw control given later wins over a named setting
        if apply:
            try:
                picam2.set_controls(apply)
            except Exception as exc:  # noqa: BLE001
                raise SourceError(
                    f"video.picamera.controls: camera {self.model} refused {apply}: "
                    f"{_describe_error(exc)}"
                ) from exc
        self.controls_applied = {
            name: getattr(value, "name", None) or str(value) for name, value in apply.items()
        }

    @property
    def _iperiod(self) -> int:
        return max(1, round(self.video.fps * self.video.keyframe_interval))

    def _make_encoder(self, encoder_cls: type) -> Any:
        video = self.video
        wanted = {
            "bitrate": video.bitrate,
            "repeat": True,  # SPS/PPS before every IDR: a viewer can start at any keyframe
            "iperiod": self._iperiod,
            "framerate": video.fps,
            "profile": PROFILE,
        }
        try:
            accepted = inspect.signature(encoder_cls).parameters
        except (TypeError, ValueError):
            accepted = wanted  # type: ignore[assignment]
        dropped = [k for k in wanted if k not in accepted]
        if dropped:
            log.warning(
                "picamera: this picamera2's %s does not take %s; the stream may not be "
                "constrained baseline (upgrade python3-picamera2)", encoder_cls.__name__,
                ", ".join(dropped),
            )
        encoder = encoder_cls(**{k: v for k, v in wanted.items() if k in accepted})
        if self.encoder_kind == SOFTWARE and hasattr(encoder, "preset"):
            encoder.preset = video.encoder_preset  # libx264; picamera2 adds tune=zerolatency
        self._can_force = callable(getattr(encoder, "force_key_frame", None))
        if not self._can_force:
            log.warning(
                "picamera: this picamera2 has no force_key_frame() (added in 0.3.32); "
                "keyframe requests restart the encoder instead"
            )
        elif self.encoder_kind == SOFTWARE and not _libav_force_works(type(encoder)):
            self._can_force = False
            log.warning(
                "picamera: picamera2's LibavH264Encoder forces keyframes with "
                "frame.pict_type = \"I\", which PyAV %s refuses (it would stop the camera); "
                "keyframe requests restart the encoder instead", av.__version__,
            )
        return encoder

    # --- start / stop -----------------------------------------------------------------------

    def start(self, sink: SourceSink) -> None:
        """Start camera and encoder in a helper thread: libcamera's start can take a while
        and this is called on the event loop. A failure lands in self.error."""
        with self._lock:
            if self._state != "open":
                raise RuntimeError(f"picamera source cannot start from state {self._state!r}")
            self._sink = sink
            self.error = None
            self._state = "starting"
            self._starter = threading.Thread(
                target=self._start_recording, name="robotcam-picamera-start", daemon=True
            )
            self._starter.start()

    def _start_recording(self) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            picam2 = self._picam2
            try:
                self._output = self._output_cls(self)  # type: ignore[misc]
                if self.lores_size is not None:
                    # installed once: it returns at once unless a lower rung is in use
                    picam2.post_callback = self._on_request
                picam2.start_recording(self._encoder, self._output)
                if self._af_trigger is not None:
                    picam2.set_controls({"AfTrigger": self._af_trigger})  # one focus scan
            except Exception as exc:  # noqa: BLE001 - reported to the supervisor
                log.error("picamera: could not start the camera: %s", _describe_error(exc))
                self.error = exc
                return
            with self._kf_lock:
                # the encoder's first frame is an IDR: that answers anyone who asked already
                self._keyframe_wanted = False
                self._state = "running"

    def stop(self, timeout: float = 2.0) -> None:
        with self._kf_lock:
            self._stopping.set()
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopped"
        self._sink = None
        done = threading.Thread(target=self._release, name="robotcam-picamera-stop", daemon=True)
        done.start()
        done.join(timeout)
        if done.is_alive():
            log.warning("picamera: the camera did not close within %.1f s", timeout)

    def _release(self) -> None:
        """Stop recording and close the camera, whatever state open/start left them in."""
        for helper in (self._starter, self._restarter):
            if helper is not None and helper is not threading.current_thread():
                helper.join()
        with self._lock:
            picam2, self._picam2 = self._picam2, None
            if picam2 is None:
                return
            try:
                picam2.stop_recording()  # camera stop, then every running encoder
            except Exception as exc:  # noqa: BLE001 - closing must go on
                log.warning("picamera: stopping the recording failed: %s", _describe_error(exc))
            try:
                picam2.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("picamera: closing the camera failed: %s", _describe_error(exc))

    @property
    def running(self) -> bool:
        if self.error is not None or self._state not in ("starting", "running"):
            return False
        if self._state == "starting" or self._restarting:
            return True
        # picamera2's threads print their exception and end; frames then just stop
        encoder_thread = getattr(self._encoder, "thread", None)  # V4L2Encoder's poll thread
        camera = getattr(self._picam2, "_preview", None)  # the camera's event loop (NullPreview)
        camera_thread = getattr(camera, "thread", None)
        for thread, what in ((encoder_thread, "H.264 encoder"), (camera_thread, "camera")):
            if isinstance(thread, threading.Thread) and thread.ident is not None and not thread.is_alive():
                if self._state == "running" and not self._restarting:
                    self.error = RuntimeError(f"picamera2's {what} thread ended unexpectedly")
                    log.error("picamera: %s", self.error)
                    return False
        return True

    # --- packets (picamera2's encoder or camera thread) -------------------------------------

    def _on_encoded(self, frame: Any, keyframe: bool, timestamp: int | None) -> None:
        sink = self._sink
        if sink is None or self._stopping.is_set() or self.error is not None:
            return
        data = bytes(frame) if frame is not None else b""
        if not data:
            return
        types = _nal_types(data)
        if not types & {1, 5}:
            # parameter sets without a picture (older picamera2 passed those on): keep them
            # for the next picture so every packet is one whole access unit
            self._pending_headers = (self._pending_headers + data)[-4096:]
            return
        if self._pending_headers:
            data, self._pending_headers = self._pending_headers + data, b""
        keyframe = bool(keyframe) or 5 in types
        packet = av.Packet(data)
        packet.is_keyframe = keyframe
        packet.pts = self._monotonic_pts(timestamp)
        packet.time_base = TIME_BASE
        if keyframe:
            with self._kf_lock:
                self._keyframe_wanted = False  # whoever asked can start here
        self.packets += 1
        try:
            sink.on_packet(packet)
        except Exception as exc:  # noqa: BLE001 - never raise into picamera2's thread
            log.exception("picamera: the pipeline refused a packet")
            self.error = exc
            return
        self._maybe_force_keyframe()

    def _monotonic_pts(self, timestamp: int | None) -> int:
        """The encoder's timestamp, kept increasing across encoder restarts (picamera2 counts
        from 0 again at every encoder start)."""
        ts = int(timestamp) if timestamp is not None else time.monotonic_ns() // 1000
        pts = ts + self._pts_offset
        if self._last_pts is not None and pts <= self._last_pts:
            self._pts_offset = self._last_pts + self._frame_us - ts
            pts = self._last_pts + self._frame_us
        self._last_pts = pts
        return pts

    # --- the lores stream (picamera2's camera thread) ---------------------------------------

    def feed_lores(self, on: bool) -> None:
        if on != self._lores_on and self.lores_size is not None:
            log.debug("picamera: lores stream %s", "fed to the lower rungs" if on else "idle")
        self._lores_on = on and self.lores_size is not None

    def needs_reopen(self, video: VideoConfig) -> bool:
        return lores_size(video) != self._lores_wanted

    def _on_request(self, request: Any) -> None:
        """picamera2's post_callback: while a lower rung is in use, the request's lores picture
        goes to the pipeline; otherwise nothing is touched. Never raises into the camera thread
        (it would end, and the main stream with it)."""
        if not self._lores_on:
            return
        sink, size = self._sink, self.lores_size
        if sink is None or size is None or self._stopping.is_set() or self.error is not None:
            return
        try:
            pts = self._lores_pts(request)
            if pts is None:
                return
            frame = yuv420_frame(request.make_array("lores"), size[0], size[1], self._lores_stride)
            frame.pts, frame.time_base = pts, TIME_BASE
            self.lores_frames += 1
            sink.on_lores_frame(frame)
        except Exception:  # noqa: BLE001 - lower rungs miss a frame; the camera goes on
            self.lores_errors += 1
            if self.lores_errors <= 3 or self.lores_errors % 100 == 0:
                log.exception("picamera: a lores frame could not be passed on (%d so far)", self.lores_errors)

    def _lores_pts(self, request: Any) -> int | None:
        """The pts (us) the main stream's packet of this request gets: picamera2 stamps encoded
        frames with SensorTimestamp / 1000 less the encoder's firsttimestamp, and
        _monotonic_pts adds its offset. None before the encoder's first frame, during an
        encoder restart, and for a frame that would not come after the last one (just after a
        restart, before its first packet has moved the offset): that frame is skipped."""
        first = getattr(self._encoder, "firsttimestamp", None)
        if first is None or self._restarting:
            return None
        pts = int(request.get_metadata()["SensorTimestamp"] / 1000) - first + self._pts_offset
        if self._last_lores_pts is not None and pts <= self._last_lores_pts:
            return None
        self._last_lores_pts = pts
        return pts

    # --- keyframes --------------------------------------------------------------------------

    def request_keyframe(self) -> None:
        """Thread-safe and non-blocking: an IDR at the next frame, merged with requests less
        than KEYFRAME_MIN_INTERVAL after the last forced one (those wait, never get lost)."""
        with self._kf_lock:
            self.keyframes_requested += 1
            self._keyframe_wanted = True
        self._maybe_force_keyframe()

    def _maybe_force_keyframe(self) -> None:
        with self._kf_lock:
            if not self._keyframe_wanted or self._state != "running" or self._stopping.is_set():
                return
            now = time.monotonic()
            interval = KEYFRAME_MIN_INTERVAL if self._can_force else RESTART_MIN_INTERVAL
            if now - self._last_forced < interval:
                return
            self._keyframe_wanted, self._last_forced = False, now
            self.keyframes_forced += 1
            encoder = self._encoder
        if self._can_force:
            encoder.force_key_frame()
        else:
            self._restart_encoder_soon()

    def _restart_encoder_soon(self) -> None:
        """Before picamera2 0.3.32 the only way to an IDR on demand: stop and start the encoder
        (start_encoder/stop_encoder while the camera runs); its first frame is an IDR."""
        with self._kf_lock:
            if self._restarter is not None and self._restarter.is_alive():
                return
            self._restarter = threading.Thread(
                target=self._restart_encoder, name="robotcam-picamera-idr", daemon=True
            )
            self._restarter.start()

    def _restart_encoder(self) -> None:
        with self._lock:
            if self._state != "running" or self._stopping.is_set():
                return
            self._restarting = True
            try:
                self._picam2.stop_encoder()
                self._picam2.start_encoder(self._encoder, self._output)
            except Exception as exc:  # noqa: BLE001
                log.error("picamera: restarting the encoder for a keyframe failed: %s", exc)
                self.error = exc
            finally:
                self._restarting = False

    # --- stills ------------------------------------------------------------------------------

    def capture_picture(self) -> av.VideoFrame | None:
        """The running camera's next frame, from its YUV420 main stream (what the encoder
        sees): no decode, no waiting for a keyframe. None when the camera is not running."""
        picam2 = self._picam2
        if picam2 is None or self._state != "running" or self._stopping.is_set():
            return None
        try:
            job = picam2.capture_array("main", wait=False)
            array = picam2.wait(job, timeout=STILL_TIMEOUT)
            stream = picam2.camera_configuration()["main"]
            width, height = stream["size"]
            return yuv420_frame(np.asarray(array), width, height, stream.get("stride") or width)
        except Exception as exc:  # noqa: BLE001 - the pipeline falls back to decoding packets
            log.debug("picamera: still capture failed: %s", _describe_error(exc))
            return None

    # --- health -----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        video = self.video
        info: dict[str, Any] = {
            "camera": self.model,
            "camera_index": self.camera_index,
            "encoder": self.encoder_kind,
            "size": f"{video.width}x{video.height}",
            "fps": video.fps,
            "transform": _transform_name(*video.flips),
            "profile": PROFILE,
            "bitrate": video.bitrate,
            "keyframe_every": self._iperiod,
            "keyframes": "force_key_frame" if self._can_force else "encoder restart",
            "lores": f"{self.lores_size[0]}x{self.lores_size[1]}" if self.lores_size else None,
            "lores_fed": self._lores_on,
            "lores_frames": self.lores_frames,
        }
        if self.controls_applied:
            info["controls"] = dict(self.controls_applied)
        if self.controls_skipped:
            info["controls_skipped"] = list(self.controls_skipped)
        return info


def yuv420_frame(array: np.ndarray, width: int, height: int, stride: int) -> av.VideoFrame:
    """A yuv420p frame from picamera2's YUV420 array (planes padded to `stride`), written
    straight into the frame's planes: one copy (from_ndarray after joining the planes took
    seven times as long, which matters once per frame for the lores stream)."""
    flat = array.reshape(-1)
    luma = height * stride
    chroma_stride, chroma_rows = stride // 2, height // 2
    chroma = chroma_rows * chroma_stride
    sources = (
        flat[:luma].reshape(height, stride)[:, :width],
        flat[luma:luma + chroma].reshape(chroma_rows, chroma_stride)[:, : width // 2],
        flat[luma + chroma:luma + 2 * chroma].reshape(chroma_rows, chroma_stride)[:, : width // 2],
    )
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, source in zip(frame.planes, sources):
        target = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
        target[: source.shape[0], : source.shape[1]] = source
    return frame
