"""The contract between a sound source and the audio component.

A source delivers blocks of int16 samples, shape (frames, channels), from its own thread (the
PortAudio callback thread, or the tone generator's). It never touches the event loop itself:
`deliver` is thread-safe and hands the block over with `loop.call_soon_threadsafe`, where it is
stamped and fanned out. A failure is recorded in `error` for the supervisor to act on.

Life of a source (a new instance for every restart):
  source.open()            blocking (off the loop): open the device; AudioUnavailable says why
  source.start(deliver)    blocks begin to arrive
  source.stop()            blocking: stop and release the device
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

import numpy as np

Deliver = Callable[[np.ndarray], None]


class AudioSource(Protocol):
    name: str
    sample_rate: int
    channels: int
    #: why the source stopped delivering (set by its thread), or None while it is fine
    error: str | None

    def open(self) -> None: ...
    def start(self, deliver: Deliver) -> None: ...
    def stop(self) -> None: ...
    def describe(self) -> dict[str, Any]: ...
