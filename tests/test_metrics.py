"""GET /metrics: the Prometheus text format (parsed with prometheus_client's own parser), and
counters that rise while a viewer watches."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_config, wait_until
from tests.viewer import Viewer


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def scrape(robot: Any) -> dict[Any, float]:
    response = await robot.http.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return samples(await response.text())


async def test_metrics_parse_and_rise_while_a_viewer_watches(robot_factory) -> None:
    robot = await robot_factory(make_config())
    before = await scrape(robot)
    assert all(name.startswith("robotcam_") for name, _ in before)
    assert value(before, "robotcam_viewers", path="offer") == 0
    assert value(before, "robotcam_source_up", camera="main") == 1
    assert value(before, "robotcam_info", version=robot.daemon.health()["version"], source="testpattern") == 1

    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        await viewer.wait_frames(30)
        during = await scrape(robot)
        assert value(during, "robotcam_viewers", path="offer") == 1
        assert value(during, "robotcam_frames_produced_total", camera="main") > value(
            before, "robotcam_frames_produced_total", camera="main")
        assert value(during, "robotcam_frames_encoded_total", camera="main", codec="H264") >= 30
        assert value(during, "robotcam_keyframes_forced_total", camera="main", codec="H264") >= 1
        assert value(during, "robotcam_rtp_packets_sent_total", kind="video") > 0
        sent = value(during, "robotcam_rtp_sent_bytes_total", kind="video")
        assert sent > value(before, "robotcam_rtp_sent_bytes_total", kind="video")
        await viewer.wait_frames(len(viewer.numbers) + 15)
        later = await scrape(robot)
        assert value(later, "robotcam_rtp_sent_bytes_total", kind="video") > sent
    finally:
        await viewer.close()
    # the viewer's bytes stay counted after it leaves, and the encoder's frames too
    await wait_until(lambda: len(robot.daemon.peers) == 0, what="viewer gone")
    after = await scrape(robot)
    assert value(after, "robotcam_viewers", path="offer") == 0
    assert value(after, "robotcam_rtp_sent_bytes_total", kind="video") >= value(
        later, "robotcam_rtp_sent_bytes_total", kind="video")
    assert value(after, "robotcam_frames_encoded_total", camera="main", codec="H264") >= value(
        later, "robotcam_frames_encoded_total", camera="main", codec="H264")

    snapshot = await robot.http.get("/snapshot.jpg")
    assert snapshot.status == 200
    assert value(await scrape(robot), "robotcam_snapshots_total") == value(after, "robotcam_snapshots_total") + 1


async def test_every_daemon_has_its_own_registry(robot_factory) -> None:
    one = await robot_factory(make_config())
    two = await robot_factory(make_config())
    assert one.daemon.metrics.registry is not two.daemon.metrics.registry
