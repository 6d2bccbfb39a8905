"""Fake `picamera2.platform`: the real one asks the V4L2 devices at import whether the ISP is
the Pi 4's (bcm2835-isp: VC4, hardware H.264) or the Pi 5's (pispbe: PISP, no H.264 block).
The fake reads FAKE_PICAMERA2_PLATFORM (vc4 | pisp, default vc4) at import instead."""

import os
from enum import Enum


class Platform(Enum):
    VC4 = 0
    PISP = 1


_platform = Platform.PISP if os.environ.get("FAKE_PICAMERA2_PLATFORM", "vc4").lower() == "pisp" else Platform.VC4


def get_platform():
    return _platform
