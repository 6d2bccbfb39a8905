"""Reload (SIGHUP) applied to a running daemon with a viewer connected."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from robotcam.config import load_config
from robotcam.service.notify import SystemdNotifier
from robotcam.http.server import build_app
from robotcam.service.runner import Service
from tests.conftest import Robot, make_config
from tests.viewer import Viewer


def write(path: Path, **sections: dict) -> None:
    path.write_text(yaml.safe_dump(make_config(**sections).model_dump(mode="json")))


@pytest.fixture
async def service(tmp_path: Path):
    path = tmp_path / "robotcam.yaml"
    write(path)
    service = Service(load_config(path), path, notifier=SystemdNotifier(None))
    await service.daemon.start()
    http = TestClient(TestServer(build_app(service.daemon), host="127.0.0.1"))
    await http.start_server()
    await asyncio.wait_for(service.daemon.pipeline.first_frame.wait(), 10)
    yield service, Robot(service.daemon, http), path
    await http.close()
    await service.daemon.stop()


async def test_video_size_change_restarts_the_source_and_viewers_carry_on(service, caplog) -> None:
    svc, robot, path = service
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        await viewer.wait_frames(10)
        assert viewer.sizes == {(320, 240)}
        write(path, video={"width": 160, "height": 120, "bitrate": 300000})
        with caplog.at_level(logging.INFO, logger="robotcam"):
            assert await svc.reload() is True
        assert "reload: video.width: 320 -> 160" in caplog.text
        assert "reload: video.bitrate: 1000000 -> 300000" in caplog.text
        # same peer connection, new picture size, no renegotiation
        for _ in range(100):
            if (160, 120) in viewer.sizes:
                break
            await viewer.wait_frames(len(viewer.numbers) + 1, timeout=10)
        assert (160, 120) in viewer.sizes
        assert len(robot.daemon.peers) == 1
        assert robot.daemon.pipeline.encoders["H264"].settings.bitrate == 300000
    finally:
        await viewer.close()


async def test_reload_to_an_unusable_source_keeps_streaming(service, caplog) -> None:
    svc, robot, path = service
    write(path, video={"source": "picamera"}, webrtc={"max_peers": 3})
    with caplog.at_level(logging.INFO, logger="robotcam"):
        assert await svc.reload() is False
    assert "video.source" in caplog.text and "previous" in caplog.text
    assert robot.daemon.pipeline.video.source == "testpattern"
    assert robot.daemon.config.webrtc.max_peers == 3  # the rest of the file still applied
    await asyncio.sleep(1.0)
    status, health = await robot.health()
    assert status == 200 and health["video"]["source"] == "testpattern"


async def test_reload_without_a_config_file_changes_nothing() -> None:
    svc = Service(make_config(), None, notifier=SystemdNotifier(None))
    assert await svc.reload() is False
