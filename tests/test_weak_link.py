"""A viewer on a shaped link (issue #10), end to end: the daemon here, one Chromium in another
network namespace behind a veth pair whose daemon side is rate-limited with `tc` (tbf), two
pages in a Chromium here on loopback. (An aiortc viewer is no judge of freezes on a lossy link:
its jitter buffer holds every later frame until each hole is filled or 128 packets have passed,
18 s at a low rung, where a browser drops the broken frame and asks for a keyframe.)
Camera-like content: a looping clip of noise, which the encoder cannot shrink below its
bitrate (the test pattern compresses to almost nothing).

All inside the suite's own loopback-only namespace: the child namespace and the veth pair are
made here and removed afterwards; addresses are in 127.0.1.0/24 (route_localnet)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from playwright.sync_api import Browser, Playwright

from tests.conftest import free_port
from tests.daemon_process import DaemonProcess, get_json
from tests.netns_support import JS_RECORD_FRAMES, ShapedLink, browser_behind, longest_gap, needs_netns, noise_clip
from tests.test_browser import (  # noqa: F401 - fixtures
    FIRST_PICTURE_TIMEOUT_MS,
    PageSession,
    browser,
    playwright_driver,
    wait_until_playing,
)
from tests.test_whep_browser import wait_for

SERVER, CLIENT = "127.0.1.1", "127.0.1.2"
BITRATE = 600_000
CAP = "200kbit"  # a third of the stream

pytestmark = [pytest.mark.browser, needs_netns]


@pytest.fixture
def shaped(tmp_path: Path) -> Iterator[tuple[ShapedLink, DaemonProcess]]:
    link = ShapedLink(SERVER, CLIENT)
    clip = noise_clip(tmp_path / "noise.mp4")
    port = free_port()
    daemon = DaemonProcess(tmp_path, port=port, config_text=(
        f"server: {{host: 0.0.0.0, port: {port}}}\n"
        f"video: {{source: file, file: {clip}, width: 320, height: 240, fps: 30, bitrate: {BITRATE}}}\n"
        f"webrtc: {{host_addresses: [127.0.0.1, {SERVER}], ice_servers: []}}\n"
        "audio: {source: none}\nauth: {enabled: false}\nlogging: {level: info}\n"
    ))
    try:
        daemon.start()
        yield link, daemon
    finally:
        daemon.stop()
        link.close()


def sessions(daemon: DaemonProcess) -> list[dict[str, Any]]:
    return get_json(daemon.url + "/health")[1]["peers"]["sessions"]


def test_a_capped_viewer_moves_down_keeps_moving_and_comes_back(
    shaped: tuple[ShapedLink, DaemonProcess], playwright_driver: Playwright, browser: Browser, tmp_path: Path,
) -> None:
    link, daemon = shaped
    weak_browser = browser_behind(link, playwright_driver, tmp_path)
    weak_page = PageSession(weak_browser)
    healthy = [PageSession(browser), PageSession(browser)]
    try:
        weak_page.page.goto(f"http://{SERVER}:{daemon.port}/")
        wait_until_playing(weak_page.page, FIRST_PICTURE_TIMEOUT_MS, "the viewer behind the veth")
        [weak_session] = sessions(daemon)
        for session in healthy:
            session.page.goto(daemon.url + "/")
            wait_until_playing(session.page, FIRST_PICTURE_TIMEOUT_MS, "a viewer on loopback")
        for page in (weak_page.page, *(s.page for s in healthy)):
            page.evaluate(JS_RECORD_FRAMES)
        time.sleep(6)  # everyone past the link estimate's warm-up, on the full stream

        def weak() -> dict[str, Any]:
            return next(s for s in sessions(daemon) if s["id"] == weak_session["id"])

        assert weak()["rung"] == 0, weak()
        link.cap(CAP)
        capped_at = time.time()
        wait_for(lambda: weak()["rung"] >= 1, 20, "the capped viewer moves down")
        moved_after = time.time() - capped_at
        time.sleep(max(0.0, capped_at + 25 - time.time()))
        during = weak()
        encoders = get_json(daemon.url + "/health")[1]["video"]["encoders"]
        others = [s for s in sessions(daemon) if s["id"] != weak_session["id"]]
        link.lift()
        lifted_at = time.time()
        wait_for(lambda: weak()["rung"] == 0, 70, "the viewer returns to full quality")
        recovered_after = time.time() - lifted_at
        time.sleep(3)
        weak_frames = weak_page.page.evaluate("window.__frames")
        healthy_frames = [s.page.evaluate("window.__frames") for s in healthy]
        reconnects = weak_page.page.evaluate("window.robotcam.reconnects")
    finally:
        for session in (weak_page, *healthy):
            session.close()
        weak_browser.close()

    capped = [(t, w) for t, w in weak_frames if capped_at + 10 <= t <= lifted_at]
    gap = longest_gap([t for t, _ in weak_frames], capped_at + 10, lifted_at)
    smaller = sum(1 for _, w in capped if w < 320)
    print(f"moved down {moved_after:.1f} s after the cap; {len(capped)} frames in the last "
          f"{lifted_at - capped_at - 10:.0f} s of it, {smaller} smaller; longest freeze {gap:.2f} s; "
          f"back to full {recovered_after:.1f} s after the cap lifted; encoders {sorted(encoders)}")
    assert reconnects == 0, "the capped page kept its connection"
    assert gap < 2.0, f"froze for {gap:.1f} s while capped"
    assert smaller >= 0.7 * len(capped) and len(capped) >= 5 * (lifted_at - capped_at - 10), (smaller, len(capped))
    assert during["rung"] >= 1 and all(s["rung"] == 0 for s in others), (during, others)
    assert len(encoders) <= 3, encoders  # the full stream, the weak viewer's rung, a switch in flight
    for frames in healthy_frames:  # the others kept the full picture at (nearly) the full rate
        window = [w for t, w in frames if capped_at <= t <= lifted_at]
        assert set(window) == {320} and len(window) >= 0.8 * 30 * (lifted_at - capped_at), len(window)
    assert weak_frames[-1][1] == 320, "the full picture again at the end"


def test_a_lossy_link_keeps_decoding_with_paced_resends(
    shaped: tuple[ShapedLink, DaemonProcess], playwright_driver: Playwright, tmp_path: Path,
) -> None:
    """3 % of the packets lost: a smeared frame now and then, resends of what the browser
    NACKs, and the picture keeps moving."""
    link, daemon = shaped
    lossy_browser = browser_behind(link, playwright_driver, tmp_path)
    page = PageSession(lossy_browser)
    try:
        page.page.goto(f"http://{SERVER}:{daemon.port}/")
        wait_until_playing(page.page, FIRST_PICTURE_TIMEOUT_MS, "the viewer behind the veth")
        page.page.evaluate(JS_RECORD_FRAMES)
        link.lose(0.03)
        lossy_at = time.time()
        time.sleep(15)
        [viewer] = sessions(daemon)
        frames = page.page.evaluate("window.__frames")
        reconnects = page.page.evaluate("window.robotcam.reconnects")
    finally:
        page.close()
        lossy_browser.close()
    window = [t for t, _ in frames if lossy_at + 2 <= t <= lossy_at + 15]
    gap = longest_gap([t for t, _ in frames], lossy_at + 2, lossy_at + 15)
    print(f"3 % loss: {len(window) / 13:.1f} frames/s shown, longest freeze {gap:.2f} s, "
          f"{viewer['link']['resent']} packets resent, link {viewer['link']}")
    assert reconnects == 0 and viewer["link"]["resent"] > 0, viewer
    assert len(window) >= 0.5 * 30 * 13, len(window)
    assert gap < 2.0, gap
