"""Shared test helpers for sound: a viewer that hears and talks, tones, the fake sounddevice,
server-sent events, and real ALSA devices that need no sound card.

Real ALSA, no hardware: ALSA's `file` plugin over its `null` plugin, with FIFOs this process
feeds and drains at the pace of a sound card. `robotcam_mic` records what the test writes into
one FIFO; `robotcam_spk` plays into another that the test reads. PortAudio reads the ALSA
configuration once, when it initializes, so a daemon using these devices runs as a subprocess
with ALSA_CONFIG_PATH pointing at the file written here. The FIFOs are opened read-write by
the test, so neither side ever blocks on open or sees end-of-file while the test runs.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import os
import select
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any, Awaitable, Callable

import av
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack

from robotcam.video.sources.testpattern import decode_frame_number
from tests.conftest import Robot
from tests.daemon_process import DaemonProcess
from tests.viewer import TrackReaders

FAKES = Path(__file__).resolve().parent / "fakes"
RATE = 48000


# --- signal analysis ---------------------------------------------------------------------------


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    """The strongest frequency in `samples` (mono), Hz, to within rate / len(samples)."""
    data = samples.astype(np.float64)
    data = data - data.mean()
    spectrum = np.abs(np.fft.rfft(data * np.hanning(len(data))))
    return float(np.argmax(spectrum) * rate / len(data))


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2))) if len(samples) else 0.0


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(interval)


# --- tracks and viewers -----------------------------------------------------------------------


class SineTrack(AudioStreamTrack):
    """A microphone that hums: 20 ms frames of a sine, paced like a real one (AudioStreamTrack
    sleeps to keep its timestamps on the wall clock)."""

    def __init__(self, frequency: float) -> None:
        super().__init__()
        self.frequency = frequency
        self._phase = 0

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()  # silence, paced and stamped
        samples = frame.samples
        t = (self._phase + np.arange(samples)) / frame.sample_rate
        self._phase += samples
        data = (np.sin(2 * math.pi * self.frequency * t) * 12000).astype(np.int16)
        out = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate, out.pts, out.time_base = frame.sample_rate, frame.pts, frame.time_base
        return out


class SoundViewer:
    """An aiortc viewer like a browser page: video recvonly, audio sendrecv (with a SineTrack
    when it talks, none otherwise), decoding both."""

    def __init__(self, talk_frequency: float | None = None, audio: str | None = "sendrecv") -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.pc.addTransceiver("video", direction="recvonly")
        self.sine = SineTrack(talk_frequency) if talk_frequency else None
        if audio:
            self.pc.addTransceiver(self.sine or "audio", direction=audio)
        self.audio_chunks: list[tuple[float, np.ndarray]] = []  # (arrival, mono int16)
        self.frame_numbers: list[int | None] = []
        self.session: str | None = None
        self.answer: dict[str, Any] | None = None
        self.readers = TrackReaders(self.pc, self._on_frame)

    def _on_frame(self, track: Any, frame: Any) -> None:
        if track.kind == "audio":
            data = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
            self.audio_chunks.append((time.monotonic(), data.copy()))
        else:
            self.frame_numbers.append(decode_frame_number(frame))

    async def connect(self, post: Callable[[dict[str, Any]], Awaitable[tuple[int, dict[str, Any], dict[str, str]]]]) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        status, body, headers = await post(
            {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}
        )
        assert status == 200, body
        assert set(body) == {"sdp", "type"}, body  # the body stays exactly {sdp, type}
        self.answer = body
        self.session = headers.get("X-Robotcam-Session")
        await self.pc.setRemoteDescription(RTCSessionDescription(**body))

    def audio_direction(self) -> str | None:
        """The direction the daemon's answer gives its audio section."""
        section = None
        for line in (self.answer or {}).get("sdp", "").splitlines():
            if line.startswith("m="):
                section = line.split()[0][2:]
            elif section == "audio" and line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"):
                return line[2:]
        return None

    def audio_since(self, since: float) -> np.ndarray:
        chunks = [c for t, c in self.audio_chunks if t >= since]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def heard_seconds(self, since: float = 0.0, loud: float = 500.0) -> float:
        """Seconds of audible (not silent) sound that arrived after `since`."""
        chunks = [c for t, c in self.audio_chunks if t >= since and rms(c) > loud]
        return sum(len(c) for c in chunks) / RATE

    async def close(self) -> None:
        await self.pc.close()
        await self.readers.close()


# --- the fake sounddevice --------------------------------------------------------------------


def install_fake_sounddevice(monkeypatch: pytest.MonkeyPatch, inputs: int = 1, outputs: int = 1) -> Any:
    """A fresh fake `sounddevice` module for this test; returns its controller (`fake`)."""
    spec = importlib.util.spec_from_file_location("sounddevice", FAKES / "sounddevice" / "__init__.py")
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "sounddevice", module)
    module.fake.set_devices(inputs=inputs, outputs=outputs)
    return module.fake


# --- server-sent events ----------------------------------------------------------------------


class EventReader:
    """Reads GET /api/events in the background, keeping every event as (name, data)."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.events: list[tuple[str, Any]] = []
        self.ended = asyncio.Event()
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        name, data = "message", []
        try:
            async for raw in self.response.content:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        self.events.append((name, json.loads("\n".join(data))))
                    name, data = "message", []
                elif line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
        except Exception:  # noqa: BLE001 - the stream ended under us: that is what `ended` says
            pass
        finally:
            self.ended.set()

    def last(self, name: str) -> Any:
        found = [data for event, data in self.events if event == name]
        return found[-1] if found else None

    async def wait_for(self, name: str, predicate: Callable[[Any], bool], timeout: float = 10.0) -> Any:
        await wait_until(
            lambda: (d := self.last(name)) is not None and predicate(d), timeout,
            f"event {name!r} matching the condition (got {self.last(name)!r})",
        )
        return self.last(name)

    async def close(self) -> None:
        self.response.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


# --- real ALSA devices without a sound card ---------------------------------------------------

ALSA_CONF = """\
</usr/share/alsa/alsa.conf>
pcm.robotcam_mic {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{capture}"
    format "raw"
}}
pcm.robotcam_spk {{
    type file
    slave.pcm "null"
    file "{playback}"
    format "raw"
}}
"""


class AlsaFifoDevices:
    """`robotcam_mic` records a sine this object writes; `robotcam_spk` plays into a FIFO this
    object reads. Both paced at `rate` (mono s16 in; out at `out_bytes_per_second`)."""

    def __init__(self, workdir: Path, mic_frequency: float = 660.0, rate: int = RATE,
                 out_bytes_per_second: int = RATE * 2 * 2) -> None:
        self.capture = workdir / "mic.fifo"
        self.playback = workdir / "spk.fifo"
        self.config = workdir / "asound.conf"
        for fifo in (self.capture, self.playback):
            if not fifo.exists():
                os.mkfifo(fifo)
        self.config.write_text(ALSA_CONF.format(capture=self.capture, playback=self.playback))
        self.mic_frequency = mic_frequency
        self.rate = rate
        self.out_rate = out_bytes_per_second
        self.mic_paused = threading.Event()  # set: the microphone delivers nothing (a hung device)
        self.played = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @staticmethod
    def available() -> bool:
        return Path("/usr/share/alsa/alsa.conf").exists()

    def env(self) -> dict[str, str]:
        return {"ALSA_CONFIG_PATH": str(self.config)}

    def __enter__(self) -> AlsaFifoDevices:
        # O_RDWR on a FIFO never blocks and keeps the other side from seeing end-of-file.
        self._mic_fd = os.open(self.capture, os.O_RDWR | os.O_NONBLOCK)
        self._spk_fd = os.open(self.playback, os.O_RDWR | os.O_NONBLOCK)
        for target in (self._write_mic, self._read_speaker):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        os.close(self._mic_fd)
        os.close(self._spk_fd)

    def _write_mic(self) -> None:
        block = self.rate // 50
        sent = 0
        started = time.monotonic()
        pending = b""
        while not self._stop.is_set():
            if self.mic_paused.is_set():
                started, sent = time.monotonic(), 0
                self._stop.wait(0.02)
                continue
            if not pending:
                t = (sent + np.arange(block)) / self.rate
                pending = (np.sin(2 * math.pi * self.mic_frequency * t) * 12000).astype("<i2").tobytes()
            _, writable, _ = select.select([], [self._mic_fd], [], 0.1)
            if not writable:
                continue
            try:
                written = os.write(self._mic_fd, pending)
            except BlockingIOError:
                continue
            pending = pending[written:]
            if not pending:
                sent += block
                # keep at most 100 ms ahead of real time, as a sound card would
                delay = started + sent / self.rate - 0.1 - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)

    def _read_speaker(self) -> None:
        started = time.monotonic()
        taken = 0
        while not self._stop.is_set():
            readable, _, _ = select.select([self._spk_fd], [], [], 0.1)
            if not readable:
                started, taken = time.monotonic(), 0
                continue
            try:
                data = os.read(self._spk_fd, 4096)
            except BlockingIOError:
                continue
            with self._lock:
                self.played.extend(data)
            taken += len(data)
            delay = started + taken / self.out_rate - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)

    def played_since(self, offset: int) -> bytes:
        with self._lock:
            return bytes(self.played[offset:])

    def played_bytes(self) -> int:
        with self._lock:
            return len(self.played)


# --- daemons to talk to ------------------------------------------------------------------------


def poster(robot: Robot) -> Callable[[dict[str, Any]], Any]:
    async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        response = await robot.http.post("/offer", json=body)
        return response.status, await response.json(), dict(response.headers)
    return post


class DaemonWithAlsa(DaemonProcess):
    """`python -m robotcam run` with ALSA_CONFIG_PATH pointing at the FIFO devices."""

    def __init__(self, workdir: Path, devices: AlsaFifoDevices, extra: str) -> None:
        super().__init__(workdir, extra_config=extra, env=devices.env())
        self.launch()

    async def health(self, http: Any) -> dict[str, Any]:
        async with http.get(self.url + "/health") as response:
            return await response.json()

    async def wait_healthy(self, http: Any, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, f"the daemon exited:\n{self.output()}"
            try:
                return await self.health(http)
            except OSError:
                await asyncio.sleep(0.2)
        raise AssertionError(f"no /health within {timeout} s:\n{self.output()}")


def alsa_poster(url: str, http: Any) -> Callable[[dict[str, Any]], Any]:
    async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        async with http.post(url + "/offer", json=body) as response:
            return response.status, await response.json(), dict(response.headers)
    return post


async def wait_until_async(fetch: Callable[[], Any], predicate: Callable[[Any], bool], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await fetch()
        if predicate(last):
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"not within {timeout} s; last: {last}")
