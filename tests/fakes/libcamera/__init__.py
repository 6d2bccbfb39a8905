"""Fake `libcamera` Python bindings: only what robotcam and the fake picamera2 use.

Mirrors libcamera's pybind11 module (src/py/libcamera): `Transform(rotation=0, hflip=False,
vflip=False, transpose=False)` with hflip/vflip/transpose properties, and the `controls` class
whose enums are named `<Control>Enum` with the common prefix of the values stripped
(gen-py-controls.py), values as in control_ids_core.yaml / control_ids_draft.yaml.
"""

from __future__ import annotations

from enum import IntEnum


class Transform:
    def __init__(self, rotation: int = 0, hflip: bool = False, vflip: bool = False,
                 transpose: bool = False) -> None:
        if rotation not in (0, 180):  # 90/270 need transpose; not modelled by the fake
            raise ValueError("Invalid rotation")
        half = rotation == 180
        self.hflip = bool(hflip) != half
        self.vflip = bool(vflip) != half
        self.transpose = bool(transpose)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Transform):
            return NotImplemented
        return (self.hflip, self.vflip, self.transpose) == (other.hflip, other.vflip, other.transpose)

    def __hash__(self) -> int:
        return hash((self.hflip, self.vflip, self.transpose))

    def __str__(self) -> str:
        names = [n for n in ("hflip", "vflip", "transpose") if getattr(self, n)]
        return f"<libcamera.Transform '{'|'.join(names) or 'identity'}'>"

    __repr__ = __str__


class controls:  # noqa: N801 - a class in the real bindings too (py::class_ "controls")
    SensorTimestamp = "SensorTimestamp"

    class AfModeEnum(IntEnum):
        Manual = 0
        Auto = 1
        Continuous = 2

    class AfTriggerEnum(IntEnum):
        Start = 0
        Cancel = 1

    class AeExposureModeEnum(IntEnum):
        Normal = 0
        Short = 1
        Long = 2
        Custom = 3

    class AwbModeEnum(IntEnum):
        Auto = 0
        Incandescent = 1
        Tungsten = 2
        Fluorescent = 3
        Indoor = 4
        Daylight = 5
        Cloudy = 6
        Custom = 7

    class draft:  # noqa: N801
        class NoiseReductionModeEnum(IntEnum):
            Off = 0
            Fast = 1
            HighQuality = 2
            Minimal = 3
            ZSL = 4
