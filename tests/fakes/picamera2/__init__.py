"""A fake picamera2 (0.3.x API) for tests: the hardware boundary of robotcam's picamera source.

Same module paths, class and method names and signatures as the real package for everything
robotcam uses; the "camera" draws robotcam's test pattern and the "encoders" produce real
H.264 with libx264. Knobs and recorded calls are class attributes of Picamera2 (see
Picamera2.fake_reset) and of the encoder classes.
"""

from .picamera2 import Picamera2, Preview
from .platform import Platform, get_platform

__all__ = ["Picamera2", "Platform", "Preview", "get_platform"]
