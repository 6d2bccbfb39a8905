"""Several cameras in a real browser (issue #11): headless Chromium against the daemon process.

Three cameras: the test pattern ("front"), a looping flat-colour file ("arm") and a USB camera
that is not plugged in ("gone"). The page must show the two that work, each in its own
picture and each the right picture (read back from the page's own <video> elements through a
canvas), say "Reconnecting" on the third alone, switch a picture's camera without a new offer
(counted by the daemon's /metrics), lay the pictures out as a grid on a laptop and stacked on a
phone, and make a tapped picture large.
"""

from __future__ import annotations

import re
import signal
import time
from typing import Any, Iterator

import pytest
from playwright.sync_api import Page

from tests.daemon_process import DaemonProcess, get_json
from tests.test_browser import (  # noqa: F401 - fixtures
    CHROMIUM,
    FIRST_PICTURE_TIMEOUT_MS,
    browser,
    open_page,
    playwright_driver,
    screenshot,
    wait_until_playing,
)
from tests.test_cameras import FLAT_U, FLAT_V, flat_clip

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]

# The average colour and spread of a <video>'s picture, through a small canvas.
JS_LOOK = """(index) => {
    const tile = window.robotcamCameras.tiles[index];
    const v = tile.video;
    if (!v.videoWidth) return null;
    const c = document.createElement('canvas');
    c.width = 64; c.height = 48;
    const g = c.getContext('2d');
    g.drawImage(v, 0, 0, 64, 48);
    const d = g.getImageData(0, 0, 64, 48).data;
    const n = d.length / 4;
    const mean = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) { mean[0] += d[i]; mean[1] += d[i + 1]; mean[2] += d[i + 2]; }
    mean.forEach((_, k) => { mean[k] /= n; });
    let spread = 0;
    for (let i = 0; i < d.length; i += 4) spread += Math.abs(d[i] - mean[0]) + Math.abs(d[i + 1] - mean[1]) + Math.abs(d[i + 2] - mean[2]);
    return { mean, spread: spread / n, camera: tile.camera, state: tile.state, frames: tile.frames,
             text: tile.text.textContent };
}"""

JS_TILES = """() => window.robotcamCameras.tiles.map((t) => {
    const r = t.element.getBoundingClientRect();
    return { camera: t.camera, state: t.state, frames: t.frames, text: t.text.textContent,
             x: Math.round(r.x), y: Math.round(r.y), width: Math.round(r.width) };
})"""


def flat_rgb() -> tuple[float, float, float]:
    """The flat file's colour in RGB (BT.601, as browsers show yuv420p)."""
    y, u, v = 128 - 16, FLAT_U - 128, FLAT_V - 128
    rgb = (1.164 * y + 1.596 * v, 1.164 * y - 0.392 * u - 0.813 * v, 1.164 * y + 2.017 * u)
    return tuple(max(0.0, min(255.0, c)) for c in rgb)  # type: ignore[return-value]


def shows(page: Page, index: int) -> str | None:
    """Which camera picture `index` shows: "arm" (flat, its colour), "front" (busy) or None."""
    look = page.evaluate(JS_LOOK, index)
    if look is None:
        return None
    if look["spread"] < 25:
        close = all(abs(a - b) < 40 for a, b in zip(look["mean"], flat_rgb()))
        return "arm" if close else None
    return "front" if look["spread"] > 60 else None


def wait_showing(page: Page, index: int, camera: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if shows(page, index) == camera:
            return
        time.sleep(0.25)
    pytest.fail(f"picture {index} does not show {camera}: {page.evaluate(JS_LOOK, index)}; tiles {page.evaluate(JS_TILES)}")


def answered(daemon: DaemonProcess) -> float:
    """Offers the daemon has answered since it started (its /metrics counter)."""
    import urllib.request

    with urllib.request.urlopen(f"{daemon.url}/metrics", timeout=10) as response:
        text = response.read().decode()
    return float(re.search(r"^robotcam_viewers_answered_total (\S+)$", text, re.M).group(1))


@pytest.fixture(scope="module")
def cameras_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    workdir = tmp_path_factory.mktemp("cameras")
    clip = flat_clip(workdir / "flat.mkv")
    process = DaemonProcess(workdir, extra_config=(
        "cameras:\n"
        "  front: {source: testpattern}\n"
        f"  arm: {{source: file, file: {clip}}}\n"
        "  gone: {source: v4l2, device: /dev/video-not-plugged-in}\n"
    ))
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_every_camera_plays_in_its_own_picture(cameras_daemon: DaemonProcess, open_page: Any) -> None:
    page = open_page(cameras_daemon.url + "/", viewport={"width": 1280, "height": 800})
    wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "three cameras")
    page.wait_for_function("() => window.robotcamCameras.tiles.length === 3", timeout=10_000)
    wait_showing(page, 0, "front")
    wait_showing(page, 1, "arm")
    # the camera that is not plugged in says so on its own picture; the others stay live
    page.wait_for_function(
        "() => window.robotcamCameras.tiles[2].state === 'reconnecting'", timeout=15_000)
    tiles = page.evaluate(JS_TILES)
    assert "Reconnecting" in tiles[2]["text"] and "video-not-plugged-in" in tiles[2]["text"], tiles
    page.wait_for_function(
        "() => window.robotcamCameras.tiles[1].state === 'live'", timeout=10_000)
    assert page.evaluate("window.robotcam.state") == "live"
    _, health = get_json(f"{cameras_daemon.url}/health")
    assert health["status"] == "degraded" and health["peers"]["count"] == 1  # one viewer, three cameras
    assert health["cameras"]["gone"]["state"] == "failed"
    # a grid on a laptop: the second picture sits beside the first
    assert tiles[1]["y"] == tiles[0]["y"] and tiles[1]["x"] > tiles[0]["x"], tiles
    screenshot(page, "cameras-grid.png")


def test_switching_a_picture_needs_no_new_offer(cameras_daemon: DaemonProcess, open_page: Any) -> None:
    page = open_page(cameras_daemon.url + "/", viewport={"width": 1280, "height": 800})
    wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "three cameras")
    page.wait_for_function("() => window.robotcamCameras.tiles.length === 3", timeout=10_000)
    wait_showing(page, 1, "arm")
    offers = answered(cameras_daemon)
    page.locator("#tiles .tile").first.locator("select.tile-camera").select_option("front")
    wait_showing(page, 1, "front")
    page.locator("#stage select.tile-camera").select_option("arm")
    wait_showing(page, 0, "arm")
    assert answered(cameras_daemon) == offers  # the same connection all along
    assert page.evaluate("window.robotcam.reconnects") == 0
    # tapping a picture makes it large; tapping again returns to the grid
    page.locator("#tiles .tile video").first.click()
    tiles = page.evaluate(JS_TILES)
    assert tiles[1]["width"] > tiles[0]["width"] * 1.5, tiles
    page.locator("#tiles .tile video").first.click()
    tiles = page.evaluate(JS_TILES)
    assert abs(tiles[1]["width"] - tiles[0]["width"]) < 5, tiles


def test_stacked_on_a_phone(cameras_daemon: DaemonProcess, open_page: Any) -> None:
    page = open_page(cameras_daemon.url + "/", viewport={"width": 390, "height": 844}, is_mobile=True,
                     has_touch=True)
    wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "three cameras on a phone")
    page.wait_for_function("() => window.robotcamCameras.tiles.length === 3", timeout=10_000)
    wait_showing(page, 1, "arm")
    tiles = page.evaluate(JS_TILES)
    assert tiles[0]["x"] == tiles[1]["x"] == tiles[2]["x"] and tiles[0]["y"] < tiles[1]["y"] < tiles[2]["y"], tiles
    screenshot(page, "cameras-phone.png")


def test_reload_adding_and_removing_a_camera_reshapes_the_page(tmp_path: Any, open_page: Any) -> None:
    clip = flat_clip(tmp_path / "flat.mkv")
    two = f"cameras:\n  front: {{source: testpattern}}\n  arm: {{source: file, file: {clip}}}\n"
    daemon = DaemonProcess(tmp_path, extra_config=two)
    daemon.start()
    try:
        page = open_page(daemon.url + "/", viewport={"width": 1280, "height": 800})
        wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "two cameras")
        page.wait_for_function("() => window.robotcamCameras.tiles.length === 2", timeout=10_000)
        wait_showing(page, 1, "arm")
        base = daemon.config.read_text()
        daemon.config.write_text(base + "  rear: {source: testpattern}\n")
        daemon.send_signal(signal.SIGHUP)
        page.wait_for_function(
            "() => window.robotcamCameras.tiles.length === 3 && window.robotcamCameras.tiles[2].state === 'live'",
            timeout=30_000)
        wait_showing(page, 2, "front")  # the new camera is a test pattern too
        daemon.config.write_text(base.replace(two, "cameras:\n  front: {source: testpattern}\n"))
        daemon.send_signal(signal.SIGHUP)
        # one camera left: the plain page again, still playing
        page.wait_for_function("() => !document.body.classList.contains('multi')", timeout=30_000)
        wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "one camera left")
        assert page.locator("video").count() == 1
    finally:
        daemon.stop()
