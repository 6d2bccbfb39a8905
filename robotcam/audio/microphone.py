"""The robot's microphone: a sounddevice InputStream whose callback hands blocks over.

The callback runs on PortAudio's thread and does the least it can: copy the block and call
`deliver` (thread-safe). Failures are only recorded here; the audio component's supervisor
decides to restart, so one policy (capped backoff, one log line per failure and per recovery)
covers a device that reports errors, one that stops, and one that goes silent.
"""

from __future__ import annotations

import logging
import threading
from types import ModuleType
from typing import Any

import numpy as np

from robotcam.audio.base import Deliver
from robotcam.audio.devices import AudioUnavailable, Device
from robotcam.config import AudioConfig

log = logging.getLogger(__name__)

#: Consecutive callbacks flagged by PortAudio (overflow, underflow) before the stream counts as
#: failed: a single overflow under load is a glitch, half a second of them is a broken device.
MAX_FLAGGED_CALLBACKS = 25


class MicrophoneSource:
    name = "microphone"

    def __init__(self, sd: ModuleType, device: Device, audio: AudioConfig) -> None:
        self._sd = sd
        self.device = device
        self.sample_rate = audio.sample_rate
        self.channels = audio.channels
        self.block_size = audio.block_size
        self.error: str | None = None
        self.glitches = 0  # callbacks PortAudio flagged
        self.last_status = ""
        self._flagged_in_a_row = 0
        self._deliver: Deliver | None = None
        self._stream: Any = None
        self._stopping = threading.Event()

    def open(self) -> None:
        sd = self._sd
        try:
            sd.check_input_settings(
                device=self.device.index, channels=self.channels, dtype="int16",
                samplerate=self.sample_rate,
            )
        except Exception as exc:  # noqa: BLE001 - PortAudioError, ValueError
            raise AudioUnavailable(
                f"audio: {self.device.name} cannot record {self.channels} channel(s) at "
                f"{self.sample_rate} Hz ({exc}): change audio.sample_rate or audio.channels"
            ) from None
        try:
            self._stream = sd.InputStream(
                device=self.device.index, samplerate=self.sample_rate, channels=self.channels,
                dtype="int16", blocksize=self.block_size, callback=self._callback,
                finished_callback=self._finished,
            )
        except Exception as exc:  # noqa: BLE001
            raise AudioUnavailable(f"audio.device: cannot open {self.device.name}: {exc}") from None

    def start(self, deliver: Deliver) -> None:
        self._deliver = deliver
        try:
            self._stream.start()
        except Exception as exc:  # noqa: BLE001
            self.error = f"cannot start recording from {self.device.name}: {exc}"

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        """PortAudio's thread: copy the block out (PortAudio reuses the buffer) and hand it on."""
        if status:
            self.glitches += 1
            self._flagged_in_a_row += 1
            self.last_status = str(status)
            if self._flagged_in_a_row >= MAX_FLAGGED_CALLBACKS:
                self.error = f"{self.device.name} keeps reporting errors ({status})"
                raise self._sd.CallbackAbort
        else:
            self._flagged_in_a_row = 0
        deliver = self._deliver
        if deliver is not None:
            try:
                deliver(indata.copy())
            except Exception as exc:  # noqa: BLE001 - never let PortAudio swallow it silently
                self.error = f"delivering microphone blocks failed: {exc!r}"
                raise self._sd.CallbackAbort from None

    def _finished(self) -> None:
        """The stream ended: by our stop(), or by itself (device unplugged, callback abort)."""
        if not self._stopping.is_set() and self.error is None:
            self.error = f"{self.device.name} stopped recording (unplugged?)"

    def stop(self) -> None:
        self._stopping.set()
        self._deliver = None
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            stream.abort()
        except Exception as exc:  # noqa: BLE001 - a dead device may refuse; close anyway
            log.debug("aborting the input stream: %s", exc)
        try:
            stream.close()
        except Exception as exc:  # noqa: BLE001
            log.debug("closing the input stream: %s", exc)

    def describe(self) -> dict[str, Any]:
        return {
            "device": self.device.name,
            "device_index": self.device.index,
            "glitches": self.glitches,
            **({"last_status": self.last_status} if self.last_status else {}),
        }
