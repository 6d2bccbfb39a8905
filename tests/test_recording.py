"""Recording: fMP4 segments that each play from their first frame, retention, the listing and
download API, and a disk that fills up without touching the live view."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from robotcam.config import Config
from robotcam.video.sources.testpattern import decode_frame_number
from tests.conftest import make_config, wait_until
from tests.viewer import Viewer, advancing

FPS = 30


def recording_config(path: Path, sound: str = "none", **recording: Any) -> Config:
    values = {"enabled": True, "path": str(path), "segment_seconds": 1.0, "max_bytes": 0}
    values.update(recording)
    return make_config(
        video={"fps": FPS, "keyframe_interval": 2.0}, audio={"source": sound}, recording=values,
    )


def with_recording(config: Config, **recording: Any) -> Config:
    return config.model_copy(update={"recording": config.recording.model_copy(update=recording)})


def decode_segment(path: Path) -> list[tuple[bool, int | None]]:
    """(keyframe, test-pattern frame number) of every frame, decoded from the first."""
    with av.open(str(path)) as container:
        return [(frame.key_frame, decode_frame_number(frame)) for frame in container.decode(video=0)]


def sound_seconds(path: Path) -> tuple[float, float]:
    """(seconds of sound decoded, its strongest frequency in Hz) of a segment's audio stream."""
    with av.open(str(path)) as container:
        samples = np.concatenate([
            frame.to_ndarray().reshape(-1) for frame in container.decode(audio=0)
        ]).astype(np.float64)
        rate = container.streams.audio[0].sample_rate
    spectrum = np.abs(np.fft.rfft(samples))
    return len(samples) / rate, float(np.argmax(spectrum) * rate / len(samples))


async def test_segments_play_from_their_first_frame_cover_the_time_and_are_kept_in_budget(
    robot_factory, tmp_path
) -> None:
    folder = tmp_path / "recordings" / "not-yet-there"
    robot = await robot_factory(recording_config(folder, sound="tone"))
    daemon, recorder = robot.daemon, robot.daemon.recorder
    await wait_until(lambda: recorder.state == "recording", what="recording started")
    started = time.monotonic()
    assert len(daemon.peers) == 0 and "H264" in daemon.pipeline.encoders  # the recorder reads the hub
    encoder = daemon.pipeline.encoders["H264"]
    skipped_before = encoder.frames_skipped
    await asyncio.sleep(4.5)
    daemon.apply_config(with_recording(daemon.config, enabled=False))
    await wait_until(lambda: recorder.state == "off", what="recording stopped")
    # frames the shared encoder skipped while busy (a loaded machine) were never encoded
    skipped = encoder.frames_skipped - skipped_before
    recorded = time.monotonic() - started

    names = sorted(p.name for p in folder.glob("*.mp4"))
    assert len(names) >= 4, names
    frames: list[tuple[bool, int | None]] = []
    for name in names:
        decoded = await asyncio.to_thread(decode_segment, folder / name)
        assert decoded and decoded[0][0], f"{name} does not start with a keyframe"
        assert all(number is not None for _, number in decoded), name
        frames += decoded
        if name not in (names[0], names[-1]):  # the sound starts a little after the video
            seconds, pitch = await asyncio.to_thread(sound_seconds, folder / name)
            # the time the segment's frames span (test pattern numbers), not how many there
            # are: frames the encoder skipped on a loaded machine leave time, not sound, out
            video_seconds = (decoded[-1][1] - decoded[0][1] + 1) / FPS
            assert abs(seconds - video_seconds) <= 0.15, (name, seconds, video_seconds)
            assert abs(pitch - 440) < 5, pitch
    numbers = [number for _, number in frames]
    # no frame lost or repeated at segment boundaries (but those the encoder skipped), and as
    # many as the time recorded
    assert numbers == sorted(set(numbers)), "in order, none twice"
    missing = numbers[-1] - numbers[0] + 1 - len(numbers)
    assert missing <= skipped, (missing, skipped, numbers)
    print(f"recorded {len(numbers)} frames in {recorded:.2f} s ({len(names)} segments)")
    assert abs(len(numbers) - recorded * FPS) <= 0.05 * recorded * FPS + 3

    response = await robot.http.get("/api/recordings")
    assert response.status == 200 and response.headers["Cache-Control"] == "no-store"
    listing = (await response.json())["segments"]
    assert [s["name"] for s in listing] == names
    for segment in listing[:-1]:
        assert 0.9 <= segment["duration"] <= 1.6, segment
        assert segment["bytes"] == (folder / segment["name"]).stat().st_size
        assert segment["start"].endswith("Z")

    download = await robot.http.get(f"/api/recordings/{names[0]}")
    assert download.status == 200 and download.headers["Content-Type"] == "video/mp4"
    assert await download.read() == (folder / names[0]).read_bytes()

    secret = tmp_path / "recordings" / "secret.mp4"
    secret.write_bytes(b"not for you")
    for bad, status in [
        ("..", 400), ("..%2Fsecret.mp4", 400), ("%2E%2E%2Fsecret.mp4", 400), ("a%2Fb.mp4", 400),
        ("secret.mp4", 400), ("20200101T000000Z.mp4", 404), ("%00.mp4", 400),
    ]:
        refused = await robot.http.get(f"/api/recordings/{bad}")
        assert refused.status in (status, 404), (bad, refused.status)
        assert "error" in await refused.json(), bad
    nested = await robot.http.get("/api/recordings/../../etc/passwd")
    assert nested.status in (400, 404)

    # retention: with a budget of about two segments, the oldest go first
    sizes = sorted((folder / name).stat().st_size for name in names)
    budget = sizes[len(sizes) // 2] * 2
    daemon.apply_config(with_recording(daemon.config, enabled=True, max_bytes=budget))
    await wait_until(lambda: recorder.segments_deleted >= len(names), timeout=20, what="old segments deleted")
    assert names[0] not in {p.name for p in folder.glob("*.mp4")}

    def within_budget() -> bool:
        """Beside the newest finished segment (always kept), the budget holds."""
        current = recorder.health()["current"]
        finished = sorted(p for p in folder.glob("*.mp4") if p.name != current)
        return sum(p.stat().st_size for p in finished[:-1]) <= budget

    await wait_until(within_budget, timeout=5, what="segments within the budget")


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Any:
    """A 2 MB tmpfs (the tests run as root in their own namespace); unmounted afterwards."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the file system until it is full."""
    ballast = folder / "ballast"
    with open(ballast, "wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return ballast


async def test_a_full_disk_never_stops_the_live_view_and_recording_resumes(
    robot_factory, tiny_disk
) -> None:
    robot = await robot_factory(recording_config(tiny_disk / "rec"))
    recorder = robot.daemon.recorder
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        await viewer.wait_frames(10)
        await wait_until(lambda: recorder.segments_written >= 1, what="a segment recorded")

        ballast = await asyncio.to_thread(fill, tiny_disk)
        await wait_until(lambda: recorder.state == "failed", timeout=15, what="recording failed")
        status, health = await robot.health()
        assert status == 200 and health["status"] == "degraded"
        assert health["recording"]["state"] == "failed"
        assert "No space left" in health["recording"]["reason"]
        seen = len(viewer.numbers)
        await viewer.wait_frames(seen + 30, timeout=15)  # the viewer's video goes on
        assert advancing(viewer.numbers[seen:])
        metrics = await (await robot.http.get("/metrics")).text()
        assert "robotcam_recording_up 0.0" in metrics

        written = recorder.segments_written
        await asyncio.to_thread(os.unlink, ballast)
        await wait_until(lambda: recorder.state == "recording", timeout=15, what="recording resumed")
        await wait_until(lambda: recorder.segments_written > written, timeout=15, what="new segment")
        status, health = await robot.health()
        assert health["recording"]["state"] == "recording"
    finally:
        await viewer.close()
        await recorder.stop()  # release the files before the tmpfs is unmounted


async def test_an_unusable_folder_is_reported_and_the_rest_works(robot_factory, tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    robot = await robot_factory(recording_config(blocker / "rec"))
    recorder = robot.daemon.recorder
    await wait_until(lambda: recorder.state == "failed", what="recording failed")
    status, health = await robot.health()
    assert status == 200 and health["recording"]["state"] == "failed"
    assert str(blocker) in health["recording"]["reason"]
    assert (await robot.http.get("/snapshot.jpg")).status == 200
    listing = await robot.http.get("/api/recordings")
    assert listing.status == 200 and (await listing.json())["segments"] == []
