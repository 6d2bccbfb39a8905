"""Fake `picamera2.outputs.output`: the same Output base class as picamera2 0.3.x."""


class Output:
    """Handles output functionality of encoders"""

    def __init__(self, pts=None):
        self.recording = False
        self.ptsoutput = pts
        self.needs_pacing = False
        self.needs_add_stream = False

    def start(self):
        self.recording = True

    def stop(self):
        self.recording = False

    def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
        """Called by the encoder for each encoded frame (bytes), keyframe flag, timestamp in us."""

    def outputtimestamp(self, timestamp):
        if self.ptsoutput is not None and timestamp is not None:
            print(f"{timestamp // 1000}.{timestamp % 1000:03}", file=self.ptsoutput, flush=True)

    def _add_stream(self, encoder_stream, *args, **kwargs):
        pass
