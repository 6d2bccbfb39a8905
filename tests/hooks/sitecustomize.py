"""Loaded by `robotcam run` subprocesses in tests (PYTHONPATH=tests/hooks): a wedged camera.

While the file named by ROBOTCAM_TEST_STALL_FILE exists, the test pattern's capture thread
delivers no frames, as a camera whose driver hangs. This is the hardware boundary; everything
above it (pipeline, health, watchdog) is the real daemon.
"""

import os

_flag = os.environ.get("ROBOTCAM_TEST_STALL_FILE")
if _flag:
    from robotcam.video.sources import testpattern

    _emit = testpattern.TestPatternSource.emit

    def _emit_unless_stalled(self, frame):  # type: ignore[no-untyped-def]
        if not os.path.exists(_flag):
            _emit(self, frame)

    testpattern.TestPatternSource.emit = _emit_unless_stalled
