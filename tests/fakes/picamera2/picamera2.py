"""Fake `picamera2.picamera2.Picamera2` (0.3.x API) for robotcam's tests.

The "sensor" renders robotcam's test pattern (so the frame number drawn in the picture can be
decoded downstream) at the configured frame duration, in an event-loop thread like picamera2's
NullPreview, and handles each frame as process_requests() does: pre_callback, waiting capture
jobs, post_callback, then every running encoder whose stream exists, all under `lock`. A
second, "lores" stream (YUV420, no larger than main) is the same picture scaled, as the ISP's
second output is; configure() checks it as check_camera_config() does.

Knobs (class attributes; Picamera2.fake_reset() restores them all):
  fake_cameras          what global_camera_info() lists (dicts with Model, Location, Rotation, Id)
  fake_camera_controls  name -> (min, max, default): what camera_controls advertises
  fake_sensor_resolution  largest output size; bigger requests are adjusted down, as libcamera does
  fake_can_flip         False: libcamera adjusts any hflip/vflip transform away
  fake_busy             the camera is held by another process: __init__ fails as the real one does
  Encoder.fake_fail_after  the encoder fails after N frames (see picamera2.encoders.encoder)
Recorded: Picamera2.instances (every instance), and per instance fake_configure_calls,
fake_set_controls_calls, fake_transform, fake_frames, fake_captures, and fake_arrays (per
stream name, how many arrays make_array() copied out of requests).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from concurrent.futures import Future
from enum import Enum
from typing import Any

import numpy as np

import libcamera

import picamera2.platform as Platform
from picamera2.encoders.encoder import Encoder

_log = logging.getLogger(__name__)

_IMX708 = {
    "Model": "imx708", "Location": 2, "Rotation": 180,
    "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a",
}

_CAMERA_MODULE_3_CONTROLS: dict[str, tuple[Any, Any, Any]] = {
    "AeEnable": (False, True, None),
    "AeExposureMode": (0, 3, 0),
    "AeMeteringMode": (0, 3, 0),
    "AeConstraintMode": (0, 3, 0),
    "AfMode": (0, 2, 0),
    "AfTrigger": (0, 1, 0),
    "AfRange": (0, 2, 0),
    "AfSpeed": (0, 1, 0),
    "AnalogueGain": (1.12, 16.0, None),
    "AwbEnable": (False, True, None),
    "AwbMode": (0, 7, 0),
    "Brightness": (-1.0, 1.0, 0.0),
    "ColourGains": (0.0, 32.0, None),
    "Contrast": (0.0, 32.0, 1.0),
    "ExposureTime": (26, 220417486, None),
    "ExposureValue": (-8.0, 8.0, 0.0),
    "FrameDurationLimits": (33333, 120000, None),
    "LensPosition": (0.0, 15.0, 1.0),
    "NoiseReductionMode": (0, 4, 0),
    "Saturation": (0.0, 32.0, 1.0),
    "ScalerCrop": ((0, 0, 64, 64), (0, 0, 4608, 2592), (576, 0, 3456, 2592)),
    "Sharpness": (0.0, 16.0, 1.0),
}


class Preview(Enum):
    NULL = 0


YUV_FORMATS = {"NV21", "NV12", "YUV420", "YVU420", "YVYU", "YUYV", "UYVY", "VYUY"}  # picamera2.formats
RGB_FORMATS = {"BGR888", "RGB888", "XBGR8888", "XRGB8888", "RGB161616", "BGR161616"}


class CompletedRequest:
    """What picamera2.request.CompletedRequest offers callbacks and encoders: the request's
    streams (make_array, make_buffer), its metadata, reference counting. The pixels are the
    sensor's picture, scaled per stream; fake_frame() is the fake encoders' way in."""

    def __init__(self, picam2: Picamera2, frame: Any, sensor_timestamp_ns: int) -> None:
        self.picam2 = picam2
        self.ref_count = 1
        self.config = picam2.camera_config.copy()
        self.stream_map = dict(picam2.stream_map)
        self.sensor_timestamp_ns = sensor_timestamp_ns
        self._frames = {"main": frame}

    def acquire(self) -> None:
        if self.ref_count == 0:
            raise RuntimeError("CompletedRequest: acquiring lock with ref_count 0")
        self.ref_count += 1

    def release(self) -> None:
        self.ref_count -= 1
        if self.ref_count < 0:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        if self.ref_count == 0:  # back to the camera: its buffers are no longer ours
            self.config = {}
            self.stream_map = {}

    def fake_frame(self, name: str) -> Any:
        """The named stream's picture as a yuv420p av.VideoFrame (lores: main, scaled)."""
        frame = self._frames.get(name)
        if frame is None:
            width, height = self.config[name]["size"]
            frame = self._frames[name] = self._frames["main"].reformat(width=width, height=height)
        return frame

    def make_buffer(self, name: str) -> np.ndarray:
        """Make a 1D numpy array from the named stream's buffer."""
        if self.stream_map.get(name) is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        return self.make_array(name).reshape(-1)

    def get_metadata(self) -> dict[str, Any]:
        """Fetch the metadata corresponding to this completed request."""
        return {
            "SensorTimestamp": self.sensor_timestamp_ns,
            "FrameDuration": self.picam2._fake_frame_duration_us,
        }

    def make_array(self, name: str) -> np.ndarray:
        """Make a 2d numpy array from the named stream's buffer (a copy)."""
        config = self.config.get(name, None)
        if config is None:
            raise RuntimeError(f"Stream {name!r} is not defined")
        if config["format"] not in ("YUV420", "YVU420"):
            raise NotImplementedError("the fake makes arrays of YUV420 streams only")
        self.picam2.fake_arrays[name] = self.picam2.fake_arrays.get(name, 0) + 1
        return _make_array(self.fake_frame(name), config)


class Job:
    """What a capture returns with wait=False (picamera2.job.Job): its result is set in the
    camera's thread when the next frame completes."""

    def __init__(self, function: Any) -> None:
        self._function = function
        self._future: Future[Any] = Future()

    def execute(self, request: CompletedRequest) -> None:
        try:
            self._future.set_result(self._function(request))
        except Exception as exc:  # noqa: BLE001 - delivered to get_result()
            self._future.set_exception(exc)

    def get_result(self, timeout=None):
        return self._future.result(timeout=timeout)


def _make_array(frame: Any, stream: dict[str, Any]) -> np.ndarray:
    """As picamera2's helpers do for YUV420: (height * 3 / 2, stride) bytes, planes padded."""
    width, height = stream["size"]
    stride = stream["stride"]
    data = frame.to_ndarray()  # yuv420p: Y rows, then U and V at half width, 2 rows per row
    y = data[:height]
    u = data[height:height + height // 4].reshape(height // 2, width // 2)
    v = data[height + height // 4:].reshape(height // 2, width // 2)
    out = np.zeros(height * 3 // 2 * stride, np.uint8)
    out[: height * stride].reshape(height, stride)[:, :width] = y
    half = height // 2 * stride // 2
    out[height * stride:height * stride + half].reshape(height // 2, stride // 2)[:, : width // 2] = u
    out[height * stride + half:height * stride + 2 * half].reshape(height // 2, stride // 2)[:, : width // 2] = v
    return out.reshape(height * 3 // 2, stride)


class _NullPreview:
    """The camera's event loop, as picamera2's NullPreview runs it when nothing else does."""

    def __init__(self) -> None:
        self._abort = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, picam2: Picamera2) -> None:
        self.thread = threading.Thread(
            target=self.thread_func, args=(picam2,), name="fake-picamera2-loop", daemon=True
        )
        self.thread.start()

    def thread_func(self, picam2: Picamera2) -> None:
        deadline = time.monotonic()
        while not self._abort.is_set():
            if not picam2.started:
                self._abort.wait(0.01)
                deadline = time.monotonic()
                continue
            delay = deadline - time.monotonic()
            if delay > 0 and self._abort.wait(delay):
                break
            period = picam2._fake_frame_duration_us / 1e6
            deadline += period
            if deadline < time.monotonic() - period:  # fell behind: never burst
                deadline = time.monotonic()
            try:
                picam2._fake_process_frame()
            except Exception:
                _log.exception("Exception during process_requests()")
                raise

    def stop(self) -> None:
        self._abort.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(5)


class Picamera2:
    """Welcome to the (fake) PiCamera2 class."""

    # --- knobs and records -----------------------------------------------------------------
    fake_cameras: list[dict[str, Any]] = [dict(_IMX708)]
    fake_camera_controls: dict[str, tuple[Any, Any, Any]] = dict(_CAMERA_MODULE_3_CONTROLS)
    fake_sensor_resolution: tuple[int, int] = (4608, 2592)
    fake_can_flip = True
    fake_busy = False
    instances: list[Picamera2] = []
    platform = Platform.get_platform()

    @classmethod
    def fake_reset(cls) -> None:
        cls.fake_cameras = [dict(_IMX708)]
        cls.fake_camera_controls = dict(_CAMERA_MODULE_3_CONTROLS)
        cls.fake_sensor_resolution = (4608, 2592)
        cls.fake_can_flip = True
        cls.fake_busy = False
        cls.instances = []
        Encoder.instances = []
        Encoder.fake_fail_after = None

    # --- the picamera2 API ------------------------------------------------------------------

    @staticmethod
    def global_camera_info() -> list[dict[str, Any]]:
        cameras = []
        for num, cam in enumerate(Picamera2.fake_cameras):
            info = {k: v for k, v in cam.items() if k in ("Model", "Location", "Rotation")}
            info["Id"] = cam["Id"]
            info["Num"] = num
            cameras.append(info)
        return sorted(cameras, key=lambda cam: ("/usb" not in cam["Id"], cam["Id"]), reverse=True)

    def __init__(self, camera_num=0, verbose_console=None, tuning=None, allocator=None):
        Picamera2.instances.append(self)
        self._preview: _NullPreview | None = None
        self.is_open = False
        self.camera = None
        self.started = False
        self.camera_config: dict[str, Any] | None = None
        self.stream_map: dict[str, Any] = {}
        self._encoders: set[Encoder] = set()
        self.pre_callback = None
        self.post_callback = None
        self.lock = threading.Lock()  # protects the job list; held while requests are handled
        self.fake_configure_calls: list[dict[str, Any]] = []
        self.fake_set_controls_calls: list[dict[str, Any]] = []
        self.fake_transform: Any = None
        self.fake_frames = 0
        self._fake_controls: dict[str, Any] = {}
        self._fake_frame_duration_us = 33333
        self._fake_pattern: Any = None
        self._fake_jobs: list[Job] = []
        self.fake_captures = 0
        self.fake_arrays: dict[str, int] = {}
        info = self.global_camera_info()[camera_num]  # IndexError, as the real one
        camera_num = info["Num"]
        self.camera_idx = camera_num
        try:
            if Picamera2.fake_busy:
                raise RuntimeError("Failed to acquire camera: Device or resource busy")
        except Exception as e:
            _log.error("Camera __init__ sequence did not complete.")
            raise RuntimeError("Camera __init__ sequence did not complete.") from e
        raw = Picamera2.fake_cameras[camera_num]
        self.camera = raw["Id"]
        self.sensor_resolution = tuple(Picamera2.fake_sensor_resolution)
        self.camera_properties_ = {
            "Model": raw["Model"], "Location": raw.get("Location", 2),
            "Rotation": raw.get("Rotation", 0), "PixelArraySize": self.sensor_resolution,
        }
        if "/usb" not in raw["Id"]:
            self.camera_properties_["ColorFilterArrangement"] = 0
        self._camera_controls = dict(Picamera2.fake_camera_controls)
        self.is_open = True

    @property
    def camera_properties(self) -> dict[str, Any]:
        return {} if self.camera is None else self.camera_properties_

    @property
    def camera_controls(self) -> dict[str, tuple[Any, Any, Any]]:
        return dict(self._camera_controls) if self.camera is not None else {}

    def create_video_configuration(
        self,
        main={},
        lores=None,
        raw={},
        transform=libcamera.Transform(),
        colour_space=None,
        buffer_count=6,
        controls={},
        display="main",
        encode="main",
        queue=True,
        sensor={},
        use_case="video",
    ) -> dict[str, Any]:
        if self.camera is None:
            raise RuntimeError("Camera not opened")
        stream = self._make_initial_stream_config({"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True}, main)
        self.align_stream(stream, optimal=False)
        lores = self._make_initial_stream_config({"format": "YUV420", "size": stream["size"], "preserve_ar": False}, lores)
        if lores is not None:
            self.align_stream(lores, optimal=False)
        if "NoiseReductionMode" in self.camera_controls and "FrameDurationLimits" in self.camera_controls:
            controls = {
                "NoiseReductionMode": libcamera.controls.draft.NoiseReductionModeEnum.Fast,
                "FrameDurationLimits": (33333, 33333),
            } | controls
        return {
            "use_case": use_case, "transform": transform, "colour_space": colour_space,
            "buffer_count": buffer_count, "queue": queue, "main": stream, "lores": lores,
            "raw": raw, "controls": controls, "sensor": sensor, "display": display, "encode": encode,
        }

    @staticmethod
    def _make_initial_stream_config(stream_config, updates, ignore_list=[]):
        """Take an initial stream_config and add any user updates."""
        if updates is None:
            return updates
        valid = ("format", "size", "stride", "preserve_ar")
        for key, value in updates.items():
            if key in valid:
                stream_config[key] = value
            elif key in ignore_list:
                pass
            else:
                raise ValueError(f"Bad key {key!r}: valid stream configuration keys are {valid}")
        return stream_config

    @staticmethod
    def align_stream(stream_config, optimal=True) -> None:
        if optimal:
            align = 32 if Picamera2.platform == Platform.Platform.VC4 else 64
            if stream_config["format"] in ("YUV420", "YVU420"):
                align *= 2
            elif stream_config["format"] in ("XBGR8888", "XRGB8888", "RGB161616", "BGR161616"):
                align //= 2
        else:
            align = 2
        size = stream_config["size"]
        stream_config["size"] = (size[0] - size[0] % align, size[1] - size[1] % 2)

    def check_stream_config(self, stream_config, name) -> None:
        """Check the configuration of the passed in config (picamera2's checks, raw aside)."""
        if type(stream_config) is not dict:
            raise RuntimeError(name + " stream should be a dictionary")
        if "format" not in stream_config:
            raise RuntimeError("format not found in " + name + " stream")
        if "size" not in stream_config:
            raise RuntimeError("size not found in " + name + " stream")
        format = stream_config["format"]
        if type(format) is not str:
            raise RuntimeError("format in " + name + " stream should be a string")
        if format not in YUV_FORMATS and format not in RGB_FORMATS and format != "MJPEG":
            raise RuntimeError("Bad format " + format + " in stream " + name)
        size = stream_config["size"]
        if type(size) is not tuple or len(size) != 2:
            raise RuntimeError("size in " + name + " stream should be (width, height)")
        if size[0] % 2 or size[1] % 2:
            raise RuntimeError("width and height should be even")

    def check_camera_config(self, camera_config) -> None:
        for name in ["colour_space", "transform", "main", "lores", "raw"]:
            if name not in camera_config:
                raise RuntimeError(f"{name!r} key expected in camera configuration")
        if not isinstance(camera_config["transform"], libcamera.Transform):
            raise RuntimeError("Transform has incorrect type")
        self.check_stream_config(camera_config["main"], "main")
        if camera_config["lores"] is not None:
            self.check_stream_config(camera_config["lores"], "lores")
            main_w, main_h = camera_config["main"]["size"]
            lores_w, lores_h = camera_config["lores"]["size"]
            if lores_w > main_w or lores_h > main_h:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if Picamera2.platform == Platform.Platform.VC4 and camera_config["lores"]["format"] not in YUV_FORMATS:
                raise RuntimeError("lores stream must be YUV")

    def configure(self, camera_config=None) -> None:
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if not isinstance(camera_config, dict):
            raise TypeError("Invalid type for `camera_config` given")
        self.fake_configure_calls.append(copy.deepcopy(camera_config))
        config = copy.deepcopy(camera_config)
        self.camera_config = {}
        self.stream_map = {}
        self.check_camera_config(config)
        # libcamera's validate(): sizes beyond the sensor are adjusted down, not refused
        max_w, max_h = Picamera2.fake_sensor_resolution
        main, lores = config["main"], config["lores"]
        width, height = main["size"]
        if width > max_w or height > max_h:
            _log.info("Camera configuration has been adjusted!")
        width, height = min(width, max_w), min(height, max_h)
        if not Picamera2.fake_can_flip:
            config["transform"] = libcamera.Transform()
        self._fake_granted(main, width, height)
        if lores is not None:
            self._fake_granted(lores, min(lores["size"][0], width), min(lores["size"][1], height))
        self.camera_config = config
        self.stream_map = {"main": "main", "lores": "lores" if lores is not None else None, "raw": None}
        self.fake_transform = config["transform"]
        self._fake_controls = {}
        self._fake_set(config.get("controls") or {})
        from robotcam.video.sources.testpattern import TestPatternSource

        self._fake_pattern = TestPatternSource(width, height, 1e6 / self._fake_frame_duration_us)

    @staticmethod
    def _fake_granted(stream: dict[str, Any], width: int, height: int) -> None:
        """What libcamera writes back into a stream's configuration: size, stride, framesize."""
        align = 64
        stride = (width + align - 1) // align * align
        stream.update(size=(width, height), stride=stride, framesize=stride * height * 3 // 2)

    def camera_configuration(self) -> dict[str, Any]:
        return self.camera_config

    def stream_configuration(self, name="main") -> dict[str, Any]:
        return self.camera_config[name]

    def set_controls(self, controls) -> None:
        self.fake_set_controls_calls.append(dict(controls))
        self._fake_set(controls)

    def _fake_set(self, controls: dict[str, Any]) -> None:
        for name, value in controls.items():
            if name == "FrameRate":  # picamera2's virtual control
                name, value = "FrameDurationLimits", (int(1e6 / value), int(1e6 / value))
            if name not in self._camera_controls:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
            self._fake_controls[name] = value
            if name == "FrameDurationLimits":
                self._fake_frame_duration_us = max(int(value[0]), self._camera_controls[name][0])

    def start(self, config=None, show_preview=False) -> None:
        if config is not None:
            self.configure(config)
        if not self.camera_config:
            raise RuntimeError("Camera has not been configured")
        if self._preview is None and show_preview is not None:
            self._preview = _NullPreview()
            self._preview.start(self)
        self.started = True

    def stop(self) -> None:
        self.started = False

    def start_encoder(self, encoder=None, output=None, pts=None, quality=None, name=None) -> None:
        _encoder = encoder
        if _encoder is None:
            if len(self._encoders) > 1:
                raise RuntimeError("Multiple possible encoders, need to pass encoder")
            _encoder = next(iter(self._encoders), None)
        if _encoder is None:
            raise RuntimeError("No encoder specified")
        if output is not None:
            _encoder.output = output
        streams = self.camera_configuration()
        if not streams:
            raise RuntimeError("Camera has not been configured")
        if name is None:
            name = streams["encode"]
        if streams.get(name, None) is None:
            raise RuntimeError(f"Encode stream {name} was not defined")
        stream = streams[name]
        _encoder.name = name
        _encoder.width, _encoder.height = stream["size"]
        _encoder.format = stream["format"]
        _encoder.stride = stream["stride"]
        min_frame_duration = max(self._camera_controls["FrameDurationLimits"][0], 33333)
        try:
            if _encoder.framerate is None:
                _encoder.framerate = 1000000 / min_frame_duration
        except AttributeError:
            pass
        _encoder.start(quality=quality)
        with self.lock:
            self._encoders.add(_encoder)

    def stop_encoder(self, encoders=None) -> None:
        if encoders is None:
            remove = list(self._encoders)
        elif isinstance(encoders, Encoder):
            remove = [encoders]
        else:
            remove = list(encoders)
        for encoder in remove:
            encoder.stop()
        with self.lock:
            for encoder in remove:
                self._encoders.discard(encoder)

    def capture_array(self, name="main", wait=None, signal_function=None):
        """Make a 2d image from the next frame in the named stream."""
        if wait is None:
            wait = signal_function is None
        job = Job(lambda request: request.make_array(name))
        with self.lock:
            self._fake_jobs.append(job)
        self.fake_captures += 1
        return job.get_result() if wait else job

    def wait(self, job, timeout=None):
        """Wait for the given job to finish (if necessary) and return its result."""
        return job.get_result(timeout=timeout)

    @property
    def encoders(self) -> set[Encoder]:
        return self._encoders

    def start_recording(self, encoder, output, pts=None, config=None, quality=None, name=None) -> None:
        if config is not None:
            self.configure(config)
        self.start_encoder(encoder, output, pts=pts, quality=quality, name=name)
        self.start()

    def stop_recording(self) -> None:
        self.stop()
        self.stop_encoder()

    def close(self) -> None:
        if self._preview is not None:
            self._preview.stop()
            self._preview = None
        if not self.is_open:
            return
        self.stop()
        self.is_open = False
        self.camera = None
        self.camera_config = {}

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_traceback):
        self.close()

    # --- the fake sensor --------------------------------------------------------------------

    def _fake_process_frame(self) -> None:
        """process_requests() for one completed request, in its order, under self.lock."""
        frame = self._fake_pattern.render(self.fake_frames, time.time())
        request = CompletedRequest(self, frame, time.monotonic_ns())
        self.fake_frames += 1
        with self.lock:
            if self.pre_callback:
                self.pre_callback(request)
            jobs, self._fake_jobs = self._fake_jobs, []
            for job in jobs:
                job.execute(request)
            if self.post_callback:
                self.post_callback(request)
            for encoder in self._encoders:
                if self.stream_map.get(encoder.name) is not None:
                    encoder.encode(encoder.name, request)
            request.release()
