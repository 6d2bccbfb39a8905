"""Fake `picamera2.encoders.libav_h264_encoder`: the software encoder picamera2 uses for
H264Encoder on a Pi 5. Like the real one it encodes inline, in the camera's event-loop thread,
and passes libav's packet pts (us) to outputframe."""

from __future__ import annotations

import av

from picamera2.encoders.encoder import Encoder, FakeEncoderFailure, FakeX264


class LibavH264Encoder(Encoder):
    """Encoder class that uses libx264 for h.264 encoding."""

    def __init__(self, bitrate=None, repeat=True, iperiod=30, framerate=30, qp=None, profile=None):
        super().__init__()
        self._codec = "h264"
        self.repeat = repeat
        self.bitrate = bitrate
        self.iperiod = iperiod
        self.framerate = framerate
        self.qp = qp
        self.profile = profile
        self.preset = None
        self.drop_final_frames = False
        self.threads = 0
        self._use_hw = False
        self._key_frames_requested = 0
        self._key_frames_generated = 0
        self._x264 = None

    @property
    def use_hw(self):
        return self._use_hw

    def _start(self):
        preset = "ultrafast"
        if self.profile is not None:
            if not isinstance(self.profile, str):
                raise RuntimeError("Profile should be a string value")
            probe = av.open("/dev/null", "w", format="null")
            try:
                profiles = probe.add_stream("libx264", rate=30).profiles
            finally:
                probe.close()
            if not any(p.lower() == self.profile.lower() for p in profiles):
                raise RuntimeError("Profile " + self.profile + " not recognised")
            if "baseline" not in self.profile.lower():
                preset = "superfast"
        if self.preset:
            preset = self.preset
        self._x264 = FakeX264(self.width, self.height, self.framerate, self.bitrate,
                              self.iperiod, self.repeat, self.profile, preset)

    def _stop(self):
        x264, self._x264 = self._x264, None
        if x264 is not None:
            x264.close()

    def _encode(self, stream, request):
        limit = Encoder.fake_fail_after
        if limit is not None and self._x264.encoded >= limit:
            raise FakeEncoderFailure(5, "fake libav encoder failure (Picamera2.fake_fail_after)")
        timestamp_us = self._timestamp(request)
        frame = request.fake_frame(stream)
        if self._key_frames_requested > self._key_frames_generated:
            self._key_frames_generated += 1
            # exactly what picamera2 0.3.32+ does: PyAV >= 14 raises TypeError here, in the
            # camera thread (pict_type became an IntEnum)
            frame.pict_type = "I"
            self.fake_idrs_forced += 1
        for packet in self._x264.encode(frame, timestamp_us, False):
            self.outputframe(bytes(packet), packet.is_keyframe, timestamp=packet.pts, packet=packet)

    def force_key_frame(self):
        """Force a key frame to be encoded in the video stream as soon as possible."""
        self._key_frames_requested += 1
        self.fake_keyframes_forced += 1
