"""Fake `picamera2.encoders.h264_encoder`: the Pi 4's hardware (V4L2 /dev/video11) H.264
encoder. Like the real V4L2Encoder, frames are queued to the codec from the camera thread and a
separate poll thread (`self.thread`) hands each encoded buffer to outputframe(bytes, keyframe,
timestamp_us). The codec here is libx264, configured from the same attributes."""

from __future__ import annotations

import queue
import threading

from picamera2.encoders.encoder import Encoder, FakeEncoderFailure, FakeX264

MAX_WIDTH, MAX_MACROBLOCKS = 1920, (1920 // 16) * (1088 // 16)


class H264Encoder(Encoder):
    """Uses functionality from V4L2Encoder"""

    PROFILES = ("baseline", "constrained baseline", "main", "high")

    def __init__(
        self, bitrate=None, repeat=True, iperiod=None, framerate=None, enable_sps_framerate=False, qp=None, profile=None
    ):
        super().__init__()
        self.bitrate = bitrate
        self.iperiod = iperiod
        self.repeat = repeat
        self.qp = qp
        self.profile = profile
        self.framerate = framerate
        self._enable_framerate = enable_sps_framerate
        self._key_frames_requested = 0
        self._key_frames_generated = 0
        self.thread = None
        self._queue = None
        self._x264 = None

    def _start(self):
        if self.profile:
            if not isinstance(self.profile, str):
                raise RuntimeError("Profile should be a string value")
            if self.profile.lower() not in self.PROFILES:
                raise RuntimeError("Profile " + self.profile + " not recognised")
        macroblocks = ((self._width + 15) // 16) * ((self._height + 15) // 16)
        if max(self._width, self._height) > MAX_WIDTH or macroblocks > MAX_MACROBLOCKS:
            raise OSError(22, "Invalid argument")  # VIDIOC_S_FMT on /dev/video11
        self._x264 = FakeX264(self._width, self._height, self.framerate or 30, self.bitrate,
                              self.iperiod, self.repeat, self.profile)
        self._queue = queue.Queue()
        self.thread = threading.Thread(target=self.thread_poll, name="fake-v4l2-h264-poll", daemon=True)
        self.thread.start()

    def _stop(self):
        thread = self.thread
        if thread is not None:
            thread.join(5)
        if self._x264 is not None:
            self._x264.close()
            self._x264 = None

    def thread_poll(self):
        """Outputs encoded frames (dies, like the real one, if the codec fails)."""
        while self._running or not self._queue.empty():
            try:
                frame, timestamp_us, force = self._queue.get(timeout=0.4)
            except queue.Empty:
                if not self._running:
                    break
                continue
            limit = Encoder.fake_fail_after
            if limit is not None and self._x264.encoded >= limit:
                raise FakeEncoderFailure(5, "fake V4L2 encoder failure (Picamera2.fake_fail_after)")
            for packet in self._x264.encode(frame, timestamp_us, force):
                self.outputframe(bytes(packet), packet.is_keyframe, timestamp_us)

    def _encode(self, stream, request):
        if self._queue is None:
            return
        force = self._key_frames_requested > self._key_frames_generated
        if force:
            self._key_frames_generated += 1
            self.fake_idrs_forced += 1
        self._queue.put((request.fake_frame(stream), self._timestamp(request), force))

    def force_key_frame(self):
        """Force a key frame to be encoded in the video stream as soon as possible."""
        self._key_frames_requested += 1
        self.fake_keyframes_forced += 1
