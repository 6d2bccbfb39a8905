"""Talk-back: one viewer's voice on the robot's speaker, one talker at a time, seen live.

Talkers are real aiortc clients sending a sine from an AudioStreamTrack subclass; the speaker
is the fake `sounddevice` (in-process, recording what it plays) or, in the last test, the real
PortAudio/ALSA stack playing into a FIFO. Line state is read from /api/events as a page would.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import ClientSession

from tests.audio_support import (
    AlsaFifoDevices,
    DaemonWithAlsa,
    EventReader,
    SoundViewer,
    alsa_poster,
    dominant_frequency,
    install_fake_sounddevice,
    poster,
    rms,
    wait_until,
    wait_until_async,
)
from tests.conftest import Robot, make_config

TOLERANCE_HZ = 5.0


async def talk(robot: Robot, session: str | None, action: str) -> tuple[int, dict[str, Any]]:
    response = await robot.http.post("/api/talk", json={"session": session, "action": action})
    return response.status, await response.json()


async def events(robot: Robot, session: str | None = None) -> EventReader:
    response = await robot.http.get("/api/events", params={"session": session} if session else None)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return EventReader(response)


def loud_played(fake: Any, since_chunk: int = 0) -> np.ndarray:
    """What the fake speaker played after chunk `since_chunk`, channel 0, silence left out."""
    with fake.lock:
        chunks = list(fake.played[since_chunk:])
    loud = [c[:, 0] for c in chunks if rms(c[:, 0]) > 500]
    return np.concatenate(loud) if loud else np.zeros(0, dtype=np.int16)


@pytest.fixture
def speaker(monkeypatch: pytest.MonkeyPatch) -> Any:
    """The fake sounddevice with a speaker at 44.1 kHz stereo (talk-back resamples to it)."""
    return install_fake_sounddevice(monkeypatch, inputs=0, outputs=1)


async def test_the_talker_is_heard_on_the_speaker(robot_factory, speaker) -> None:
    robot = await robot_factory(make_config(audio={"source": "tone"}))
    talker = SoundViewer(talk_frequency=1000.0)
    try:
        await talker.connect(poster(robot))
        assert talker.audio_direction() == "sendrecv"
        status, body = await talk(robot, talker.session, "start")
        assert status == 200 and body["talking"] is True and body["max_seconds"] == 120.0
        rate = 44100
        await wait_until(lambda: len(loud_played(speaker)) >= rate, 20, "a second of the talker on the speaker")
        played = loud_played(speaker)
        assert abs(dominant_frequency(played[-rate // 2:], rate) - 1000.0) < TOLERANCE_HZ
        _, health = await robot.health()
        section = health["talkback"]
        assert section["state"] == "talking" and section["talker"] == 1 and section["ok"] is True
        assert section["frames_received"] > 0 and section["samples_played"] > 0
        assert section["device"] == "Fake Speaker 0" and section["sample_rate"] == rate

        status, body = await talk(robot, talker.session, "stop")
        assert (status, body) == (200, {"talking": False})
        stopped = len(speaker.played)
        # What was buffered (at most 0.3 s: 15 blocks of 20 ms) plays out; after that, silence.
        await wait_until(lambda: len(speaker.played) >= stopped + 40, 10, "the speaker playing on")
        assert len(loud_played(speaker, stopped + 20)) == 0, "the viewer is still heard after letting go"
    finally:
        await talker.close()


async def test_only_the_talker_reaches_the_speaker(robot_factory, speaker) -> None:
    robot = await robot_factory(make_config())
    first, second = SoundViewer(talk_frequency=600.0), SoundViewer(talk_frequency=1500.0)
    try:
        await first.connect(poster(robot))
        await second.connect(poster(robot))
        assert (await talk(robot, first.session, "start"))[0] == 200
        await wait_until(lambda: len(loud_played(speaker)) >= 44100, 20, "the first talker")
        played = loud_played(speaker)[-22050:]
        assert abs(dominant_frequency(played, 44100) - 600.0) < TOLERANCE_HZ
    finally:
        await first.close()
        await second.close()


async def test_one_talker_at_a_time_and_everyone_sees_the_line(robot_factory, speaker) -> None:
    robot = await robot_factory(make_config())
    alice, bob = SoundViewer(talk_frequency=500.0), SoundViewer(talk_frequency=800.0)
    alice_events = bob_events = None
    try:
        await alice.connect(poster(robot))
        await bob.connect(poster(robot))
        alice_events, bob_events = await events(robot, alice.session), await events(robot, bob.session)
        anonymous = await events(robot)
        for reader in (alice_events, bob_events, anonymous):
            await reader.wait_for("talk", lambda d: d["busy"] is False and d["available"] is True)

        assert (await talk(robot, alice.session, "start"))[0] == 200
        await alice_events.wait_for("talk", lambda d: d["busy"] and d["you"])
        await bob_events.wait_for("talk", lambda d: d["busy"] and not d["you"])
        await anonymous.wait_for("talk", lambda d: d["busy"] and not d["you"])

        status, body = await talk(robot, bob.session, "start")
        assert status == 409 and body == {"error": "line busy", "talker": 1}
        assert (await talk(robot, alice.session, "start"))[0] == 200  # asking again: still hers

        assert (await talk(robot, bob.session, "stop")) == (200, {"talking": False})  # not his
        assert robot.daemon.talkback.talker is not None

        assert (await talk(robot, alice.session, "stop"))[0] == 200
        await bob_events.wait_for("talk", lambda d: d["busy"] is False)

        assert (await talk(robot, bob.session, "start"))[0] == 200
        await alice_events.wait_for("talk", lambda d: d["busy"] and not d["you"])
        # the talker's connection ends: the line is freed for everyone
        await bob.close()
        await alice_events.wait_for("talk", lambda d: d["busy"] is False, timeout=15)
        assert (await talk(robot, alice.session, "start"))[0] == 200
        await anonymous.close()
    finally:
        for reader in (alice_events, bob_events):
            if reader is not None:
                await reader.close()
        await alice.close()
        await bob.close()


async def test_the_line_is_released_after_max_talk_seconds(robot_factory, speaker) -> None:
    robot = await robot_factory(make_config(talkback={"max_talk_seconds": 1.0}))
    talker = SoundViewer(talk_frequency=700.0)
    reader = None
    try:
        await talker.connect(poster(robot))
        reader = await events(robot, talker.session)
        status, body = await talk(robot, talker.session, "start")
        assert status == 200 and body["max_seconds"] == 1.0
        await reader.wait_for("talk", lambda d: d["you"])
        await reader.wait_for("talk", lambda d: d["busy"] is False, timeout=10)
        assert robot.daemon.talkback.talker is None
    finally:
        if reader is not None:
            await reader.close()
        await talker.close()


BAD_TALK_REQUESTS: list[tuple[Any, int, str]] = [
    (b"", 400, 'empty body: send JSON {"session": "<X-Robotcam-Session of your /offer answer>", "action": "start"}'),
    (b"{not json", 400, "body is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    (b"[1, 2]", 400, 'body must be a JSON object {"session": "<X-Robotcam-Session of your /offer answer>", "action": "start"}'),
    ({"action": "start"}, 400, "missing field 'session': the X-Robotcam-Session header of your /offer answer"),
    ({"session": 42, "action": "start"}, 400, "field 'session' must be a non-empty string"),
    ({"session": "KEY"}, 400, "missing field 'action': \"start\" or \"stop\""),
    ({"session": "KEY", "action": "shout"}, 400, "field 'action' must be \"start\" or \"stop\" (got \"shout\")"),
    ({"session": "KEY", "action": ["start"]}, 400, "field 'action' must be \"start\" or \"stop\" (got [\"start\"])"),
    ({"session": "no-such-session", "action": "start"}, 404, "unknown session: it has ended or never existed; connect again"),
]


async def test_bad_talk_requests_get_clear_errors_and_the_daemon_goes_on(robot_factory, speaker) -> None:
    robot = await robot_factory(make_config(audio={"source": "tone"}))
    viewer = SoundViewer()
    try:
        await viewer.connect(poster(robot))
        for body, status, message in BAD_TALK_REQUESTS:
            if isinstance(body, bytes):
                response = await robot.http.post("/api/talk", data=body, headers={"Content-Type": "application/json"})
            else:
                body = {k: (viewer.session if v == "KEY" else v) for k, v in body.items()}
                response = await robot.http.post("/api/talk", json=body)
            assert response.status == status, (body, await response.text())
            assert response.content_type == "application/json"
            assert await response.json() == {"error": message}, body
        response = await robot.http.get("/api/talk")
        assert response.status == 405 and "error" in await response.json()
        huge = b'{"session": "' + b"x" * 70000 + b'", "action": "start"}'
        response = await robot.http.post("/api/talk", data=huge)
        assert response.status == 413 and (await response.json())["error"] == "request body too large"
        # still serving: health, the viewer's video and sound, and a good talk request
        status, _ = await robot.health()
        assert status == 200
        count = len(viewer.frame_numbers)
        await wait_until(lambda: len(viewer.frame_numbers) > count + 5, 20, "video after bad requests")
        assert (await talk(robot, viewer.session, "start"))[0] == 200
    finally:
        await viewer.close()


async def test_disabled_talkback_is_refused_and_reported(robot_factory, speaker) -> None:
    robot = await robot_factory(make_config(talkback={"enabled": False}))
    viewer = SoundViewer()
    try:
        await viewer.connect(poster(robot))
        status, body = await talk(robot, viewer.session, "start")
        assert (status, body) == (403, {"error": "talk-back is disabled (talkback.enabled: false)"})
        _, health = await robot.health()
        assert health["talkback"]["state"] == "disabled" and health["talkback"]["ok"] is True
        config = await (await robot.http.get("/api/config")).json()
        assert config["talkback"]["available"] is False
    finally:
        await viewer.close()


async def test_no_speaker_disables_talkback_and_says_why(robot_factory, monkeypatch) -> None:
    install_fake_sounddevice(monkeypatch, inputs=1, outputs=0)
    robot = await robot_factory(make_config())
    viewer = SoundViewer()
    reader = None
    try:
        await viewer.connect(poster(robot))
        status, body = await talk(robot, viewer.session, "start")
        reason = "talk-back is unavailable: no output device (speaker) found"
        assert (status, body) == (403, {"error": reason})
        _, health = await robot.health()
        assert health["talkback"]["state"] == "unavailable" and health["talkback"]["reason"] == reason
        config = await (await robot.http.get("/api/config")).json()
        assert config["talkback"] == {"enabled": True, "permitted": True, "available": False, "reason": reason, "max_seconds": 120.0}
        reader = await events(robot, viewer.session)
        data = await reader.wait_for("talk", lambda d: True)
        assert data == {"busy": False, "you": False, "available": False, "reason": reason}
    finally:
        if reader is not None:
            await reader.close()
        await viewer.close()


async def test_a_speaker_that_cannot_open_is_a_503_and_degrades_health(robot_factory, speaker) -> None:
    robot = await robot_factory(make_config())
    viewer = SoundViewer(talk_frequency=440.0)
    try:
        await viewer.connect(poster(robot))
        speaker.refuse_open = True
        status, body = await talk(robot, viewer.session, "start")
        assert status == 503 and body["error"].startswith("the robot's speaker cannot be used: talkback.device: cannot open Fake Speaker 0")
        _, health = await robot.health()
        assert health["talkback"]["ok"] is False and health["status"] == "degraded"
        assert robot.daemon.talkback.talker is None  # the line was not kept
        speaker.refuse_open = False
        assert (await talk(robot, viewer.session, "start"))[0] == 200
        _, health = await robot.health()
        assert health["talkback"]["ok"] is True
    finally:
        await viewer.close()


async def test_event_streams_end_on_shutdown(robot_factory, speaker) -> None:
    robot = await robot_factory(make_config())
    readers = [await events(robot) for _ in range(3)]
    for reader in readers:
        await reader.wait_for("talk", lambda d: True)
    assert len(robot.daemon.events) == 3
    await robot.http.server.close()  # aiohttp shutdown: on_shutdown ends the streams
    for reader in readers:
        await asyncio.wait_for(reader.ended.wait(), 10)
    assert len(robot.daemon.events) == 0
    for reader in readers:
        await reader.close()


@pytest.mark.skipif(not AlsaFifoDevices.available(), reason="ALSA's configuration is not installed (libasound2-data)")
async def test_talker_heard_through_real_portaudio_and_alsa(tmp_path: Path) -> None:
    """aiortc talker -> daemon -> sounddevice OutputStream -> PortAudio -> ALSA `file` plugin."""
    with AlsaFifoDevices(tmp_path) as devices:
        daemon = DaemonWithAlsa(tmp_path, devices, "audio: {source: tone}\ntalkback: {device: robotcam_spk}\n")
        talker = SoundViewer(talk_frequency=1000.0)
        try:
            async with ClientSession() as http:
                health = await daemon.wait_healthy(http)
                assert health["talkback"]["state"] == "idle", health["talkback"]
                rate, channels = health["talkback"]["sample_rate"], health["talkback"]["channels"]
                await talker.connect(alsa_poster(daemon.url, http))
                start = devices.played_bytes()
                async with http.post(daemon.url + "/api/talk", json={"session": talker.session, "action": "start"}) as r:
                    assert r.status == 200, await r.text()

                def loud() -> np.ndarray:
                    data = np.frombuffer(devices.played_since(start), dtype="<i2")
                    mono = data[: len(data) // channels * channels].reshape(-1, channels)[:, 0]
                    blocks = [b for b in np.array_split(mono, max(1, len(mono) // 441)) if rms(b) > 500]
                    return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int16)

                await wait_until(lambda: len(loud()) >= rate, 30, "a second of the talker from the ALSA device")
                assert abs(dominant_frequency(loud()[-rate // 2:], rate) - 1000.0) < TOLERANCE_HZ
                health = await wait_until_async(
                    lambda: daemon_health(daemon, http), lambda h: h["talkback"]["samples_played"] > 0, 10
                )
                assert health["talkback"]["device"] == "robotcam_spk"
        finally:
            await talker.close()
            code = daemon.stop()
        assert code == 0, daemon.log.read_text()


async def daemon_health(daemon: DaemonWithAlsa, http: ClientSession) -> dict[str, Any]:
    return await daemon.health(http)
