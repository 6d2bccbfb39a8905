"""PortAudio through sounddevice: loading it, and finding the device a config key names.

sounddevice is imported lazily, from a worker thread: importing it initializes PortAudio, which
probes every ALSA device (slow on some boards, and it must not block the event loop), and a
machine without libportaudio2 must still stream video. Tests swap in a fake `sounddevice`
module with the same API at this boundary.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

Direction = Literal["input", "output"]


class AudioUnavailable(Exception):
    """No usable PortAudio or device; the message says why and names the key to change."""


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    channels: int  # the most this direction offers
    default_rate: float


def load_portaudio() -> ModuleType:
    """The sounddevice module, or AudioUnavailable saying what is missing (blocking)."""
    try:
        return importlib.import_module("sounddevice")
    except OSError as exc:  # sounddevice raises OSError when libportaudio is missing
        raise AudioUnavailable(
            f"PortAudio is not available ({exc}): install libportaudio2"
        ) from None
    except ImportError as exc:
        raise AudioUnavailable(f"the sounddevice module is not installed ({exc})") from None


def _devices(sd: ModuleType) -> list[dict[str, Any]]:
    try:
        return [dict(d) for d in sd.query_devices()]
    except Exception as exc:  # noqa: BLE001 - PortAudioError and friends
        raise AudioUnavailable(f"PortAudio cannot list sound devices: {exc}") from None


def _channels_key(direction: Direction) -> str:
    return "max_input_channels" if direction == "input" else "max_output_channels"


def _describe(index: int, info: dict[str, Any], direction: Direction) -> Device:
    return Device(
        index=index,
        name=str(info.get("name", f"device {index}")),
        channels=int(info.get(_channels_key(direction), 0)),
        default_rate=float(info.get("default_samplerate") or 48000),
    )


def find_device(sd: ModuleType, spec: str, direction: Direction, key: str) -> Device:
    """The device `spec` names: empty = the system default (else the first one that can do
    `direction`), digits = a PortAudio index, anything else = part of a device name
    (case-insensitive; an exact name wins). `key` is the config key, for messages."""
    devices = _devices(sd)
    usable = [(i, d) for i, d in enumerate(devices) if int(d.get(_channels_key(direction), 0)) > 0]
    what = "input device (microphone)" if direction == "input" else "output device (speaker)"
    names = ", ".join(f"{i}: {d.get('name')}" for i, d in usable) or "none"
    if not usable:
        raise AudioUnavailable(f"no {what} found")
    spec = spec.strip()
    if not spec:
        default = _default_index(sd, direction)
        for index, info in usable:
            if index == default:
                return _describe(index, info, direction)
        index, info = usable[0]
        return _describe(index, info, direction)
    if spec.isdigit():
        index = int(spec)
        for i, info in usable:
            if i == index:
                return _describe(i, info, direction)
        raise AudioUnavailable(f"{key}: there is no {what} with index {index} (there are: {names})")
    wanted = spec.lower()
    exact = [(i, d) for i, d in usable if str(d.get("name", "")).lower() == wanted]
    partial = [(i, d) for i, d in usable if wanted in str(d.get("name", "")).lower()]
    for index, info in exact or partial:
        return _describe(index, info, direction)
    raise AudioUnavailable(f"{key}: no {what} matches {spec!r} (there are: {names})")


def _default_index(sd: ModuleType, direction: Direction) -> int:
    try:
        pair = sd.default.device
        value = pair[0] if direction == "input" else pair[1]
        return int(value) if value is not None else -1
    except Exception:  # noqa: BLE001 - no default: the first usable device is taken
        return -1
