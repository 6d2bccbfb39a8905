"""`video.source`: what each name opens, and how `auto` chooses and falls back."""

from __future__ import annotations

import pytest

from robotcam.video.sources import SourceError, picamera, select, v4l2
from robotcam.video.sources.testpattern import TestPatternSource
from tests.conftest import make_config


@pytest.fixture
def hardware(monkeypatch: pytest.MonkeyPatch):
    """What this machine 'has': set the probes' answers."""
    state = {"picamera": (False, "picamera2 is not installed"), "v4l2": None}
    monkeypatch.setattr(picamera, "probe", lambda: state["picamera"])
    monkeypatch.setattr(v4l2, "first_capture_device", lambda: state["v4l2"])
    return state


def test_auto_prefers_the_pi_camera(hardware) -> None:
    hardware["picamera"] = (True, "picamera2 lists 1 camera: imx708")
    hardware["v4l2"] = "/dev/video0"
    source, why = select.open_source(make_config(video={"source": "auto"}).video)
    assert source.name == "picamera" and "imx708" in why


def test_auto_takes_a_usb_camera_when_there_is_no_pi_camera(hardware) -> None:
    hardware["v4l2"] = "/dev/video2"
    source, why = select.open_source(make_config(video={"source": "auto"}).video)
    assert source.name == "v4l2"
    assert "no Pi camera (picamera2 is not installed)" in why and "/dev/video2" in why


def test_auto_shows_the_test_pattern_on_a_machine_without_cameras(hardware) -> None:
    source, why = select.open_source(make_config(video={"source": "auto"}).video)
    assert isinstance(source, TestPatternSource)
    assert why == ("video.source is auto: no Pi camera (picamera2 is not installed); "
                   "no V4L2 capture device; showing the test pattern")


def test_auto_falls_back_when_the_chosen_camera_cannot_be_opened(hardware) -> None:
    hardware["picamera"] = (True, "picamera2 lists 1 camera")
    hardware["v4l2"] = "/dev/video0"
    video = make_config(video={"source": "auto"}).video
    first, _ = select.open_source(video)
    busy = SourceError("video.source: the Pi camera is busy: another program holds it")
    second, why = select.fallback(video, first, busy)
    assert second.name == "v4l2" and "picamera could not be used: video.source: the Pi camera is busy" in why
    third, why = select.fallback(video, second, SourceError("video.device: /dev/video0 is busy"))
    assert third.name == "testpattern" and "v4l2 could not be used" in why
    assert select.fallback(video, third, SourceError("x")) is None


def test_an_explicit_source_never_falls_back(hardware) -> None:
    video = make_config(video={"source": "v4l2"}).video
    source, why = select.open_source(video)
    assert source.name == "v4l2" and why == "video.source is v4l2"
    assert select.fallback(video, source, SourceError("video.device: busy")) is None


async def test_daemon_with_auto_on_a_machine_without_cameras_says_why(robot_factory) -> None:
    robot = await robot_factory(make_config(video={"source": "auto"}))
    status, health = await robot.health()
    assert status == 200
    assert health["video"]["source"] == "testpattern"
    assert health["video"]["source_reason"].startswith("video.source is auto: no Pi camera")


async def test_daemon_with_auto_falls_back_past_a_busy_camera(robot_factory, hardware, monkeypatch) -> None:
    hardware["v4l2"] = "/dev/video0"

    def busy(self) -> None:
        raise SourceError("video.device: /dev/video0 is busy: another program is using the camera")

    monkeypatch.setattr(v4l2.V4L2Source, "open", busy)
    robot = await robot_factory(make_config(video={"source": "auto"}))
    status, health = await robot.health()
    assert status == 200 and health["video"]["source"] == "testpattern"
    assert "v4l2 could not be used: video.device: /dev/video0 is busy" in health["video"]["source_reason"]


async def test_explicit_source_that_cannot_be_used_stops_the_daemon_with_its_message(robot_factory) -> None:
    with pytest.raises(SourceError, match="video.file: required when video.source is file"):
        await robot_factory(make_config(video={"source": "file"}))
