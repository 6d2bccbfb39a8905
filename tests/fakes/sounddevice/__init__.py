"""A fake `sounddevice` (the part of sounddevice 0.5's API robotcam uses), at the hardware
boundary: streams run their callbacks from their own threads at the pace of a real sound card
(blocksize / samplerate apart), with the same signatures, flags and exceptions.

Tests steer it through `fake` (a fresh module per test, see tests/audio_support.py):
  fake.set_devices(inputs=1, outputs=1)   what query_devices() lists
  fake.input_frequency = 660.0            the sine an input stream records
  fake.input_mode = "ok"                  "flagged": every callback carries input_overflow
                                          "dead": the stream aborts itself (device unplugged)
                                          "silent": the callbacks stop coming (a hung driver)
  fake.refuse_open = True                 opening a stream raises PortAudioError
  fake.played                             what output streams played (int16 arrays)
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable

import numpy as np

__version__ = "0.5.0-fake"


class PortAudioError(Exception):
    pass


class CallbackStop(Exception):
    pass


class CallbackAbort(Exception):
    pass


class CallbackFlags:
    _NAMES = {1: "input underflow", 2: "input overflow", 4: "output underflow", 8: "output overflow"}

    def __init__(self, flags: int = 0) -> None:
        self._flags = flags

    def __bool__(self) -> bool:
        return bool(self._flags)

    def __str__(self) -> str:
        return ", ".join(name for bit, name in self._NAMES.items() if self._flags & bit)

    @property
    def input_overflow(self) -> bool:
        return bool(self._flags & 2)


class _Default:
    def __init__(self) -> None:
        self.device = [-1, -1]


default = _Default()


class _Controller:
    def __init__(self) -> None:
        self.devices: list[dict[str, Any]] = []
        self.input_frequency = 440.0
        self.input_mode = "ok"
        self.refuse_open = False
        self.output_rate = 44100.0
        self.played: list[np.ndarray] = []
        self.streams: list[_Stream] = []
        self.lock = threading.Lock()

    def set_devices(self, inputs: int = 1, outputs: int = 1) -> None:
        self.devices = []
        for number in range(inputs):
            self.devices.append(_device(f"Fake USB Microphone {number}", inputs=1, outputs=0, rate=48000.0))
        for number in range(outputs):
            self.devices.append(_device(f"Fake Speaker {number}", inputs=0, outputs=2, rate=self.output_rate))
        default.device = [0 if inputs else -1, inputs if outputs else -1]

    def played_samples(self) -> np.ndarray:
        with self.lock:
            chunks = list(self.played)
        return np.concatenate(chunks) if chunks else np.zeros((0, 2), dtype=np.int16)


def _device(name: str, inputs: int, outputs: int, rate: float) -> dict[str, Any]:
    return {
        "name": name, "index": 0, "hostapi": 0, "max_input_channels": inputs,
        "max_output_channels": outputs, "default_samplerate": rate,
        "default_low_input_latency": 0.01, "default_low_output_latency": 0.01,
        "default_high_input_latency": 0.1, "default_high_output_latency": 0.1,
    }


fake = _Controller()


def query_devices(device: Any = None, kind: Any = None) -> Any:
    devices = [dict(d, index=i) for i, d in enumerate(fake.devices)]
    return devices if device is None else devices[device]


def _check(device: Any, channels: int, key: str) -> None:
    devices = fake.devices
    if not isinstance(device, int) or not 0 <= device < len(devices):
        raise PortAudioError(f"Error querying device {device}")
    if channels > devices[device][key]:
        raise PortAudioError("Invalid number of channels [PaErrorCode -9998]")


def check_input_settings(device: Any = None, channels: int = 1, dtype: Any = None,
                         extra_settings: Any = None, samplerate: Any = None) -> None:
    _check(device, channels, "max_input_channels")


def check_output_settings(device: Any = None, channels: int = 1, dtype: Any = None,
                          extra_settings: Any = None, samplerate: Any = None) -> None:
    _check(device, channels, "max_output_channels")


class _Stream:
    _key = ""

    def __init__(self, samplerate: float | None = None, blocksize: int | None = None,
                 device: Any = None, channels: int | None = None, dtype: Any = None,
                 callback: Callable[..., None] | None = None,
                 finished_callback: Callable[[], None] | None = None, **_: Any) -> None:
        if fake.refuse_open:
            raise PortAudioError("Error opening stream: Device unavailable [PaErrorCode -9985]")
        _check(device, channels or 1, self._key)
        self.samplerate = float(samplerate or fake.devices[device]["default_samplerate"])
        self.blocksize = int(blocksize or self.samplerate // 100)
        self.channels = channels or 1
        self.device = device
        self.dtype = dtype
        self._callback = callback
        self._finished = finished_callback
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.closed = False
        fake.streams.append(self)

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.closed:
            raise PortAudioError("Stream is closed")
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"fake-{self._key}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = self.blocksize / self.samplerate
        started, blocks = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                self._one_block(blocks)
                blocks += 1
                delay = started + blocks * period - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
        except (CallbackStop, CallbackAbort):
            pass
        except Exception:  # noqa: BLE001 - sounddevice prints it and aborts the stream
            import traceback

            traceback.print_exc()
        finally:
            if self._finished is not None:
                self._finished()

    def _one_block(self, number: int) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    abort = stop

    def close(self) -> None:
        self.stop()
        self.closed = True


class InputStream(_Stream):
    _key = "max_input_channels"

    def _one_block(self, number: int) -> None:
        mode = fake.input_mode
        if mode == "silent":
            return
        if mode == "dead":
            raise CallbackAbort  # as PortAudio ends a stream whose device went away
        start = number * self.blocksize
        t = (start + np.arange(self.blocksize)) / self.samplerate
        mono = (np.sin(2 * math.pi * fake.input_frequency * t) * 8000).astype(np.int16)
        block = np.repeat(mono[:, None], self.channels, axis=1)
        status = CallbackFlags(2 if mode == "flagged" else 0)
        assert self._callback is not None
        self._callback(block, self.blocksize, None, status)


class OutputStream(_Stream):
    _key = "max_output_channels"

    def _one_block(self, number: int) -> None:
        out = np.zeros((self.blocksize, self.channels), dtype=np.int16)
        assert self._callback is not None
        self._callback(out, self.blocksize, None, CallbackFlags(0))
        with fake.lock:
            fake.played.append(out.copy())
