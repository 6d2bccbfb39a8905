"""The robot's sound to viewers: sources, Opus encoded once, fan-out, recovery, real ALSA.

Viewers are real aiortc clients on loopback that decode the Opus they receive; assertions are
about what they hear (the strongest frequency, numpy FFT) and about video going on regardless.
The microphone is exercised twice: through a fake `sounddevice` at the hardware boundary
(in-process, to break it on purpose), and through the real sounddevice/PortAudio/ALSA stack on
ALSA devices that need no sound card (a daemon subprocess).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robotcam.audio.clock import AudioClock
from robotcam.audio.component import AudioComponent
from robotcam.audio.fanout import AudioHub, PeerAudioTrack
from tests.audio_support import (
    RATE,
    AlsaFifoDevices,
    DaemonWithAlsa,
    SoundViewer,
    alsa_poster,
    dominant_frequency,
    install_fake_sounddevice,
    poster,
    wait_until,
    wait_until_async,
)
from tests.conftest import REPO, Robot, make_config

TOLERANCE_HZ = 5.0


async def hear(viewer: SoundViewer, seconds: float = 1.0, since: float = 0.0, timeout: float = 20.0) -> np.ndarray:
    """Wait (bounded) until `seconds` of audible sound arrived after `since`; return it."""
    await wait_until(lambda: viewer.heard_seconds(since) >= seconds, timeout, f"{seconds} s of sound")
    return viewer.audio_since(since)


async def sound_health(robot: Robot) -> dict[str, Any]:
    _, body = await robot.health()
    return body["audio"]


# --- the tone, Opus encoded once -------------------------------------------------------------


async def test_viewer_hears_the_tone_with_the_video(robot_factory) -> None:
    robot = await robot_factory(make_config(audio={"source": "tone", "tone_frequency": 880.0}))
    viewer = SoundViewer()
    try:
        await viewer.connect(poster(robot))
        assert viewer.session, "the /offer answer names the session in X-Robotcam-Session"
        assert viewer.audio_direction() in ("sendrecv", "sendonly")
        samples = await hear(viewer, 1.5)
        assert abs(dominant_frequency(samples[-RATE:], RATE) - 880.0) < TOLERANCE_HZ
        await wait_until(lambda: len(viewer.frame_numbers) >= 10, 20, "video frames")
        audio = await sound_health(robot)
        assert audio["source"] == "tone" and audio["state"] == "running" and audio["ok"] is True
        assert audio["listeners"] == 1
        assert audio["encoder"].startswith("libopus, encoded once")
    finally:
        await viewer.close()


async def test_every_viewer_gets_the_same_encoded_packets(robot_factory) -> None:
    robot = await robot_factory(make_config(audio={"source": "tone", "tone_frequency": 523.0}))
    viewers = [SoundViewer(audio="recvonly") for _ in range(3)]
    try:
        for viewer in viewers:
            await viewer.connect(poster(robot))
        for viewer in viewers:
            samples = await hear(viewer, 1.0)
            assert abs(dominant_frequency(samples[-RATE // 2:], RATE) - 523.0) < TOLERANCE_HZ
        audio = await sound_health(robot)
        assert audio["listeners"] == 3
        # one encoder for three viewers: it produced one packet per 20 ms, not three
        assert audio["packets_encoded"] <= audio["blocks"] + 2
        tracks = [s.extras["audio_track"] for s in robot.daemon.peers.sessions.values()]
        assert len(tracks) == 3 and all(t.sent > 0 for t in tracks)
    finally:
        for viewer in viewers:
            await viewer.close()
    await wait_until(lambda: len(robot.daemon.audio.hub) == 0, 10, "listeners gone")
    assert (await sound_health(robot))["encoder"] is None  # nobody listens: nothing encoded


async def test_per_viewer_encoding_by_aiortc_sounds_the_same(robot_factory) -> None:
    """The alternative the benchmark measures (aiortc encodes per sender) is a real one."""
    robot = await robot_factory(make_config(audio={"source": "tone", "tone_frequency": 700.0}))
    robot.daemon.audio.shared_encoder = False
    viewer = SoundViewer(audio="recvonly")
    try:
        await viewer.connect(poster(robot))
        samples = await hear(viewer, 1.0)
        assert abs(dominant_frequency(samples[-RATE // 2:], RATE) - 700.0) < TOLERANCE_HZ
        assert (await sound_health(robot))["encoder"] == "aiortc, per viewer"
    finally:
        await viewer.close()


async def test_source_none_means_video_only(robot_factory) -> None:
    robot = await robot_factory(make_config(audio={"source": "none"}))
    viewer = SoundViewer()
    try:
        await viewer.connect(poster(robot))
        assert viewer.audio_direction() not in ("sendrecv", "sendonly")  # nothing sent
        await wait_until(lambda: len(viewer.frame_numbers) >= 10, 20, "video frames")
        audio = await sound_health(robot)
        assert audio["source"] == "none" and audio["ok"] is True
        assert audio["reason"] == "audio.source is none"
        status, body = await robot.health()
        assert status == 200 and body["status"] == "ok"
    finally:
        await viewer.close()


async def test_reload_changes_the_tone_and_turns_sound_off(robot_factory) -> None:
    robot = await robot_factory(make_config(audio={"source": "tone", "tone_frequency": 440.0}))
    viewer = SoundViewer(audio="recvonly")
    try:
        await viewer.connect(poster(robot))
        await hear(viewer, 0.5)
        robot.daemon.apply_config(make_config(audio={"source": "tone", "tone_frequency": 1200.0}))
        changed = time.monotonic() + 0.3
        samples = await hear(viewer, 1.0, since=changed)
        assert abs(dominant_frequency(samples[-RATE // 2:], RATE) - 1200.0) < TOLERANCE_HZ
        robot.daemon.apply_config(make_config(audio={"source": "none"}))
        await wait_until(lambda: robot.daemon.audio.source_name == "none", 10, "sound off")
        assert (await sound_health(robot))["state"] == "off"
    finally:
        await viewer.close()


# --- auto, and the microphone through the fake sounddevice ------------------------------------


async def test_auto_without_a_microphone_is_none_and_says_why(robot_factory, monkeypatch) -> None:
    install_fake_sounddevice(monkeypatch, inputs=0, outputs=0)
    robot = await robot_factory(make_config(audio={"source": "auto"}))
    audio = await sound_health(robot)
    assert audio["source"] == "none" and audio["ok"] is True
    assert audio["reason"] == "audio.source is auto: no input device (microphone) found; no sound"
    body = await (await robot.http.get("/api/config")).json()
    assert body["audio"] == {"source": "none", "available": False}


async def test_auto_without_portaudio_is_none_and_says_why(robot_factory, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # as if it could not be imported
    robot = await robot_factory(make_config(audio={"source": "auto"}))
    audio = await sound_health(robot)
    assert audio["source"] == "none"
    assert audio["reason"].startswith("audio.source is auto: the sounddevice module is not installed")


async def test_auto_picks_the_microphone(robot_factory, monkeypatch) -> None:
    fake = install_fake_sounddevice(monkeypatch)
    fake.input_frequency = 660.0
    robot = await robot_factory(make_config(audio={"source": "auto"}))
    viewer = SoundViewer(audio="recvonly")
    try:
        await viewer.connect(poster(robot))
        samples = await hear(viewer, 1.0)
        assert abs(dominant_frequency(samples[-RATE // 2:], RATE) - 660.0) < TOLERANCE_HZ
        audio = await sound_health(robot)
        assert audio["source"] == "microphone" and audio["device"] == "Fake USB Microphone 0"
        assert audio["reason"] == "audio.source is auto: Fake USB Microphone 0"
    finally:
        await viewer.close()


async def test_a_microphone_that_is_not_there_is_reported_and_video_goes_on(robot_factory, monkeypatch) -> None:
    install_fake_sounddevice(monkeypatch)
    robot = await robot_factory(make_config(audio={"source": "microphone", "device": "Blue Yeti"}))
    audio = await sound_health(robot)
    assert audio["state"] == "failed" and audio["ok"] is False
    assert audio["problem"] == (
        "audio.source is microphone, but audio.device: no input device (microphone) matches "
        "'Blue Yeti' (there are: 0: Fake USB Microphone 0)"
    )
    status, body = await robot.health()
    assert status == 200 and body["status"] == "degraded"  # sound broken, video fine
    viewer = SoundViewer()
    try:
        await viewer.connect(poster(robot))
        await wait_until(lambda: len(viewer.frame_numbers) >= 10, 20, "video frames")
    finally:
        await viewer.close()


@pytest.mark.parametrize("failure", ["dead", "flagged", "silent"])
async def test_microphone_failure_mid_stream_keeps_video_and_sound_comes_back(
    robot_factory, monkeypatch, failure: str
) -> None:
    """A microphone that aborts (unplugged), reports errors on every block, or goes silent
    (a hung driver) is restarted with backoff; the connected viewer's video never stops, and
    it hears the microphone again once the device is back."""
    fake = install_fake_sounddevice(monkeypatch)
    fake.input_frequency = 600.0
    robot = await robot_factory(make_config(audio={"source": "microphone", "stall_timeout": 0.5}))
    viewer = SoundViewer(audio="recvonly")
    try:
        await viewer.connect(poster(robot))
        await hear(viewer, 0.5)

        fake.input_mode = failure
        await wait_until(lambda: robot.daemon.audio.restarts >= 1, 15, "the failure noticed")
        audio = await sound_health(robot)
        assert audio["ok"] is False and audio["state"] in ("failed", "stalled"), audio
        frames_before = len(viewer.frame_numbers)
        await wait_until(lambda: len(viewer.frame_numbers) >= frames_before + 15, 20, "video during the failure")
        status, body = await robot.health()
        assert status == 200 and body["video"]["state"] == "running"

        fake.input_mode = "ok"
        await wait_until(lambda: robot.daemon.audio.state == "running", 20, "the microphone back")
        back = time.monotonic()
        samples = await hear(viewer, 1.0, since=back)
        assert abs(dominant_frequency(samples[-RATE // 2:], RATE) - 600.0) < TOLERANCE_HZ
        audio = await sound_health(robot)
        assert audio["ok"] is True and audio["restarts"] >= 1
        frames = [n for n in viewer.frame_numbers if n is not None]
        assert frames == sorted(frames), "video frames went backwards"
    finally:
        await viewer.close()


# --- pieces -----------------------------------------------------------------------------------


def test_clock_counts_samples_and_never_goes_back_across_restarts(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr("robotcam.audio.clock.time.monotonic", lambda: now[0])
    clock = AudioClock(48000)
    clock.begin_run(48000)
    assert [clock.stamp(960) for _ in range(3)] == [0, 960, 1920]
    now[0] += 0.01  # a quick restart: less time passed than the samples already stamped
    clock.begin_run(48000)
    assert clock.stamp(960) == 2880  # continuous, not back to 480
    now[0] += 10.0  # a long outage: jump forward to the time that passed
    clock.begin_run(48000)
    assert clock.stamp(960) == round(10.01 * 48000)
    block = np.zeros((960, 1), dtype=np.int16)
    frame = clock.frame(block)
    assert frame.sample_rate == 48000 and frame.time_base == Fraction(1, 48000)
    assert frame.pts == round(10.01 * 48000) + 960


async def test_a_slow_viewer_loses_its_oldest_sound_and_never_queues_more() -> None:
    hub = AudioHub()
    slow, fast = PeerAudioTrack(1), PeerAudioTrack(2)
    hub.subscribe(slow)
    hub.subscribe(fast)
    for number in range(50):
        hub.publish(number)  # type: ignore[arg-type]
        assert await fast.recv() == number  # keeps up: loses nothing
    assert slow._queue.qsize() == 10 and slow.dropped == 40
    assert await slow.recv() == 40  # the oldest kept: the newest ten
    slow.stop()
    assert len(hub) == 1
    fast.stop()
    assert len(hub) == 0


async def test_a_stopped_component_ends_every_track_and_thread(monkeypatch) -> None:
    component = AudioComponent(make_config(audio={"source": "tone"}))
    await component.start()
    track = PeerAudioTrack(1)
    component.hub.subscribe(track)
    await wait_until(lambda: component._encoder is not None and component._encoder.alive, 10, "encoder running")
    encoder, source = component._encoder, component.source
    await component.stop()
    assert track.readyState == "ended"
    assert not encoder.alive
    assert source._thread is None  # the tone thread was joined


# --- the real sounddevice / PortAudio / ALSA path ---------------------------------------------


@pytest.mark.skipif(not AlsaFifoDevices.available(), reason="ALSA's configuration is not installed (libasound2-data)")
async def test_microphone_through_real_portaudio_and_alsa(tmp_path: Path) -> None:
    """sounddevice -> PortAudio -> ALSA `file` plugin: the real capture path, end to end."""
    import aiohttp

    with AlsaFifoDevices(tmp_path, mic_frequency=660.0) as devices:
        daemon = DaemonWithAlsa(
            tmp_path, devices,
            "audio: {source: microphone, device: robotcam_mic, stall_timeout: 1.0}\n"
            "talkback: {device: robotcam_spk}\n",
        )
        viewer = SoundViewer(audio="recvonly")
        try:
            async with aiohttp.ClientSession() as http:
                await daemon.wait_healthy(http)
                await viewer.connect(alsa_poster(daemon.url, http))
                samples = await hear(viewer, 1.5, timeout=30)
                assert abs(dominant_frequency(samples[-RATE:], RATE) - 660.0) < TOLERANCE_HZ
                audio = (await daemon.health(http))["audio"]
                assert audio["source"] == "microphone" and audio["device"] == "robotcam_mic", audio
                assert audio["state"] == "running" and audio["ok"] is True

                # the device hangs (no data): restarted, and the sound comes back
                devices.mic_paused.set()
                await wait_until_async(lambda: daemon.health(http), lambda h: h["audio"]["restarts"] >= 1, 20)
                devices.mic_paused.clear()
                health = await wait_until_async(
                    lambda: daemon.health(http), lambda h: h["audio"]["state"] == "running", 30
                )
                assert health["video"]["state"] == "running"
                back = time.monotonic()
                samples = await hear(viewer, 1.0, since=back, timeout=30)
                assert abs(dominant_frequency(samples[-RATE // 2:], RATE) - 660.0) < TOLERANCE_HZ
        finally:
            await viewer.close()
            code = daemon.stop()
        assert code == 0, daemon.log.read_text()
        log = daemon.log.read_text()
        assert "sound: microphone (audio.source is microphone: robotcam_mic)" in log
        assert "sound: microphone recovered" in log


def test_audio_benchmark_smoke_run() -> None:
    """scripts/bench_audio.py (the Opus-once measurement) still runs end to end."""
    result = subprocess.run(
        [sys.executable, "scripts/bench_audio.py", "--viewers", "2", "--warmup", "1", "--duration", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 2 |")]
    assert len(rows) == 1, result.stdout
    rates = {
        match.group(1): float(match.group(2))
        for match in re.finditer(r"(\S+) +2 viewers: .* audio packets/viewer/s min ([0-9.]+)", result.stderr)
    }
    assert set(rates) == {"video-only", "per-viewer", "shared"}, result.stderr
    assert rates["per-viewer"] > 30 and rates["shared"] > 30, rates  # every viewer got sound
