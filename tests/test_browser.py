"""The web client in a real browser: headless Chromium against the real daemon, on loopback.

The daemon runs as a subprocess (`python -m robotcam run --config ...`), exactly as systemd
starts it, with the test pattern. Chromium is Debian's (/usr/bin/chromium) driven by
Playwright; its WebRTC stays on 127.0.0.1 (loopback candidates allowed, mDNS hiding of local
addresses off), so the suite also runs in a network namespace that only has `lo`.

Every wait is bounded and generous, and the assertions are about behaviour (frames advance,
the page recovers), never about how fast a loaded machine manages it.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import playwright
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, expect, sync_playwright

from tests.conftest import REPO
from tests.daemon_process import DaemonProcess, get_json

ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]

FIRST_PICTURE_TIMEOUT_MS = 20_000
RECOVERY_TIMEOUT_MS = 30_000  # from the new daemon being healthy to the page playing again
PROGRESS_TIMEOUT_MS = 20_000  # for frames to visibly advance once playing


# --- Chromium flags ----------------------------------------------------------------------------

# Playwright's own list (1.65), used only if it cannot be read from the installed driver.
_FALLBACK_PLAYWRIGHT_DISABLED_FEATURES = [
    "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
    "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect",
    "TcpPortRandomizationWin", "OptimizationHints", "NetworkTimeServiceQuerying", "AimEnabled",
    "PreconnectToSearch", "msForceBrowserSignIn", "msEdgeUpdateLaunchServicesPreferredVersion",
]


def playwright_disabled_features() -> list[str]:
    """The features Playwright passes in its own `--disable-features=` switch.

    Chromium honours only the last `--disable-features=`, so ours must carry Playwright's list
    too, and Playwright's must be dropped (ignore_default_args needs its exact text). The list
    lives in the driver's JS: `disabledFeatures = [...]` in chromiumSwitches."""
    lib = Path(playwright.__file__).parent / "driver" / "package" / "lib"
    files = [lib / "server" / "chromium" / "chromiumSwitches.js", lib / "coreBundle.js"]
    for path in files:
        if not path.is_file():
            continue
        match = re.search(r"disabledFeatures\s*=\s*\[(.*?)\]", path.read_text(errors="replace"), re.S)
        if match:
            body = re.sub(r"//[^\n]*", "", match.group(1))
            names = re.findall(r"""["']([A-Za-z0-9_]+)["']""", body)
            if names:
                return names
    return list(_FALLBACK_PLAYWRIGHT_DISABLED_FEATURES)


def chromium_launch_options() -> dict[str, Any]:
    defaults = playwright_disabled_features()
    merged = [*defaults, *(f for f in ["WebRtcHideLocalIpsWithMdns"] if f not in defaults)]
    return {
        "executable_path": str(CHROMIUM),
        "headless": True,
        "ignore_default_args": ["--disable-features=" + ",".join(defaults)],
        "args": [
            "--no-sandbox",
            "--autoplay-policy=no-user-gesture-required",
            "--allow-loopback-in-peer-connection",
            "--use-fake-ui-for-media-stream",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--disable-features=" + ",".join(merged),
        ],
    }


# --- the daemon --------------------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path)
    process.start()
    try:
        yield process
    finally:
        process.stop()


# --- the browser -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def playwright_driver() -> Iterator[Playwright]:
    """One Playwright per module: its sync API allows only one at a time."""
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright_driver: Playwright) -> Iterator[Browser]:
    chromium = playwright_driver.chromium.launch(**chromium_launch_options())
    try:
        yield chromium
    finally:
        chromium.close()


class PageSession:
    """A page in its own browser context, with its console kept for failure messages."""

    def __init__(self, browser: Browser, **context_options: Any) -> None:
        self.context = browser.new_context(permissions=["camera", "microphone"], **context_options)
        self.page: Page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", self._on_console)
        self.page.on("pageerror", lambda exc: self.console.append(f"[pageerror] {exc}"))

    def _on_console(self, message: ConsoleMessage) -> None:
        self.console.append(f"[{message.type}] {message.text}")

    def close(self) -> None:
        if self.console:
            print("browser console:\n  " + "\n  ".join(self.console[-50:]))
        self.context.close()


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Any]:
    sessions: list[PageSession] = []

    def open_(url: str, **context_options: Any) -> Page:
        session = PageSession(browser, **context_options)
        sessions.append(session)
        session.page.goto(url)
        return session.page

    yield open_
    for session in sessions:
        session.close()


# --- what the page does, read through its test hooks and the browser's own APIs ----------------

JS_PLAYBACK = """() => {
    const v = document.querySelector('video');
    const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : null;
    const rc = window.robotcam || {};
    return {
        videoWidth: v.videoWidth, videoHeight: v.videoHeight, currentTime: v.currentTime,
        paused: v.paused, totalVideoFrames: q ? q.totalVideoFrames : null,
        state: rc.state, detail: rc.detail, reconnects: rc.reconnects, hasPc: !!rc.pc,
        status: document.getElementById('status-text').textContent,
    };
}"""

# framesDecoded and the selected ICE candidate pair of the page's current RTCPeerConnection.
JS_RTC_STATS = """async () => {
    const pc = window.robotcam && window.robotcam.pc;
    if (!pc) return null;
    const report = await pc.getStats();
    let inbound = null, transport = null;
    report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') inbound = s;
        if (s.type === 'transport' && s.selectedCandidatePairId) transport = s;
    });
    const pair = transport ? report.get(transport.selectedCandidatePairId) : null;
    const side = (id) => {
        const c = id ? report.get(id) : null;
        return c ? { address: c.address, port: c.port, candidateType: c.candidateType,
                     protocol: c.protocol } : null;
    };
    return {
        framesDecoded: inbound ? inbound.framesDecoded : null,
        connectionState: pc.connectionState,
        pairState: pair ? pair.state : null,
        local: pair ? side(pair.localCandidateId) : null,
        remote: pair ? side(pair.remoteCandidateId) : null,
    };
}"""

# The three measures of progress: media time, frames the element decoded, framesDecoded.
JS_PROGRESS = """async () => {
    const v = document.querySelector('video');
    const pc = window.robotcam && window.robotcam.pc;
    let frames = null;
    if (pc) {
        (await pc.getStats()).forEach((s) => {
            if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded;
        });
    }
    return { pc: pc ? 1 : 0, currentTime: v.currentTime,
             totalVideoFrames: v.getVideoPlaybackQuality().totalVideoFrames, framesDecoded: frames };
}"""


JS_IS_PLAYING = """() => {
    const v = document.querySelector('video');
    return v.videoWidth > 0 && v.currentTime > 0 && window.robotcam && window.robotcam.state === 'live';
}"""


def describe(page: Page) -> str:
    try:
        return json.dumps({"playback": page.evaluate(JS_PLAYBACK), "rtc": page.evaluate(JS_RTC_STATS)})
    except Exception as exc:  # noqa: BLE001 - only for a failure message
        return f"(page state unavailable: {exc})"


def wait_until_playing(page: Page, timeout_ms: int, what: str) -> None:
    try:
        page.wait_for_function(JS_IS_PLAYING, timeout=timeout_ms, polling=250)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{what}: the page did not play within {timeout_ms / 1000:.0f} s ({exc}); {describe(page)}")


def assert_frames_advance(page: Page, seconds: float = 2.0, frames: int = 10) -> None:
    """currentTime, the element's decoded frames and the connection's framesDecoded all move on.

    Polls from Python (page.wait_for_function does not await a predicate's promise), until all
    three have advanced by `seconds` of media time and `frames` frames, or the bound expires."""
    page.evaluate("window.__progressPc = window.robotcam.pc")
    before = page.evaluate(JS_PROGRESS)
    assert before["pc"] and before["framesDecoded"] is not None, describe(page)
    deadline = time.monotonic() + PROGRESS_TIMEOUT_MS / 1000
    now = before
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = page.evaluate(JS_PROGRESS)
        assert page.evaluate("window.robotcam.pc === window.__progressPc"), (
            f"the page replaced its connection while it was playing: {describe(page)}"
        )
        if (
            now["currentTime"] >= before["currentTime"] + seconds
            and now["totalVideoFrames"] >= before["totalVideoFrames"] + frames
            and (now["framesDecoded"] or 0) >= before["framesDecoded"] + frames
        ):
            break
    else:
        pytest.fail(f"frames did not advance within {PROGRESS_TIMEOUT_MS / 1000:.0f} s "
                    f"(before: {before}, after: {now}); {describe(page)}")
    after = page.evaluate(JS_PLAYBACK)
    assert after["videoWidth"] == 320 and after["videoHeight"] == 240, after
    assert not after["paused"], after
    assert after["state"] == "live", after


def only_loopback_interface() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def assert_loopback_pair(page: Page) -> None:
    """The selected candidate pair joins two host candidates on 127.0.0.1.

    Chromium gathers every interface's address; with only `lo` (the namespace the suite runs
    in) that is 127.0.0.1 alone. On a host with other interfaces Chromium prefers one of those
    as its side of the pair; the packets to 127.0.0.1 still never leave the machine, so there
    only the daemon's side and the candidate types are checked, and mDNS hiding must be off."""
    rtc = page.evaluate(JS_RTC_STATS)
    assert rtc is not None and rtc["connectionState"] == "connected", rtc
    assert rtc["pairState"] == "succeeded", rtc
    assert rtc["local"] is not None and rtc["remote"] is not None, rtc
    assert rtc["remote"]["address"] == "127.0.0.1", f"the daemon's candidate is not loopback: {rtc}"
    assert rtc["remote"]["candidateType"] == "host", rtc
    assert rtc["local"]["candidateType"] == "host", rtc
    assert not str(rtc["local"]["address"]).endswith(".local"), f"mDNS hiding is on: {rtc}"
    if only_loopback_interface():
        assert rtc["local"]["address"] == "127.0.0.1", f"the browser's candidate is not loopback: {rtc}"


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path))
    return path


# --- tests -------------------------------------------------------------------------------------


def test_page_plays_video(daemon: DaemonProcess, open_page: Any) -> None:
    page = open_page(daemon.url + "/", viewport={"width": 1024, "height": 768})
    assert page.title() == "robotcam"

    wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "first load")
    assert_frames_advance(page)
    assert_loopback_pair(page)

    status = page.locator("#status-text")
    assert status.inner_text().strip() == "Live"
    assert page.evaluate("window.robotcam.reconnects") == 0

    # The stats overlay toggles and fills in from getStats.
    page.click("#stats-button")
    page.wait_for_function(
        """() => ['stat-resolution', 'stat-fps', 'stat-bitrate', 'stat-rtt', 'stat-codec']
                 .every((id) => document.getElementById(id).textContent !== '–')""",
        timeout=15_000,
    )
    assert page.locator("#stat-resolution").inner_text() == "320 × 240"
    assert re.fullmatch(r"(H\.264.*|VP8)", page.locator("#stat-codec").inner_text()), page.locator("#stat-codec").inner_text()
    assert "127.0.0.1" in page.locator("#stat-path").inner_text()
    # which rendition the daemon sends this page, and the link it estimates
    page.wait_for_function("() => document.getElementById('stat-quality').textContent.startsWith('full: 320x240')",
                           timeout=15_000)
    page.wait_for_function("() => /good|short/.test(document.getElementById('stat-link').textContent)", timeout=15_000)

    # The footer shows the daemon's /health.
    page.wait_for_function("() => /testpattern/.test(document.getElementById('footer-text').textContent)", timeout=15_000)
    assert re.search(r"robotcam \d+\.\d+", page.locator("#footer-text").inner_text())

    screenshot(page, "browser-playing.png")

    page.click("#stats-button")
    assert page.locator("#stats").is_hidden()


def test_page_reconnects_after_daemon_restart(daemon: DaemonProcess, open_page: Any) -> None:
    page = open_page(daemon.url + "/")
    wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "first load")
    assert_frames_advance(page)
    page.evaluate("window.__firstPc = window.robotcam.pc")
    reconnects_before = page.evaluate("window.robotcam.reconnects")

    daemon.stop()
    # The page notices the daemon is gone (connection closed or video frozen) and says so.
    try:
        page.wait_for_function("() => window.robotcam.state !== 'live'", timeout=20_000, polling=250)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"the page still says live 20 s after the daemon stopped ({exc}); {describe(page)}")
    shown = page.locator("#status-text").inner_text()
    assert re.match(r"(Reconnecting|Connecting)", shown), shown
    screenshot(page, "browser-reconnecting.png")

    daemon.start()  # same port, same config
    wait_until_playing(page, RECOVERY_TIMEOUT_MS, "after the daemon restarted")
    assert page.evaluate("window.robotcam.pc !== window.__firstPc"), "still the old RTCPeerConnection"
    assert page.evaluate("window.__firstPc.connectionState") == "closed", "the old connection was not closed"
    assert page.evaluate("window.robotcam.reconnects") > reconnects_before
    assert_frames_advance(page)
    assert_loopback_pair(page)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1  # never reloaded


def test_phone_viewport_plays_with_reachable_fullscreen_button(daemon: DaemonProcess, open_page: Any) -> None:
    width, height = 390, 844
    page = open_page(
        daemon.url + "/",
        viewport={"width": width, "height": height},
        device_scale_factor=3,
        is_mobile=True,
        has_touch=True,
    )
    wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "phone viewport")
    assert_frames_advance(page)

    video = page.locator("video").bounding_box()
    assert video is not None and video["width"] >= width - 2, f"the video does not fill the width: {video}"

    button = page.locator("#fullscreen-button")
    assert button.is_visible()
    box = button.bounding_box()
    assert box is not None
    assert box["x"] >= 0 and box["y"] >= 0, box
    assert box["x"] + box["width"] <= width and box["y"] + box["height"] <= height, box
    assert box["width"] >= 44 and box["height"] >= 44, f"touch target too small: {box}"

    screenshot(page, "browser-phone.png")

    # A tap puts the picture (with its overlays) fullscreen; it keeps playing.
    button.tap()
    page.wait_for_function("() => document.fullscreenElement === document.documentElement", timeout=10_000)
    expect(button).to_have_text("Exit fullscreen", timeout=10_000)
    assert_frames_advance(page)
    box = button.bounding_box()  # still on screen, to get out again
    assert box is not None and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height, box
    screenshot(page, "browser-phone-fullscreen.png")
    button.tap()
    page.wait_for_function("() => document.fullscreenElement === null", timeout=10_000)
    expect(button).to_have_text("Fullscreen", timeout=10_000)


def test_several_viewers_all_play(daemon: DaemonProcess, open_page: Any) -> None:
    """Tabs in separate browser profiles (as on separate devices) each get their own stream."""
    pages = [open_page(daemon.url + "/", viewport={"width": 480, "height": 480}) for _ in range(4)]
    for number, page in enumerate(pages, 1):
        wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, f"viewer {number}")
    for page in pages:
        assert_frames_advance(page)
    status, health = get_json(daemon.url + "/health")
    assert status == 200, health
    assert health["peers"]["count"] == len(pages), health


# --- sound both ways (issue #4) ----------------------------------------------------------------

JS_AUDIO_STATS = """async () => {
    const pc = window.robotcam && window.robotcam.pc;
    if (!pc) return null;
    let inbound = null;
    (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') inbound = s;
    });
    const v = document.querySelector('video');
    const stream = v.srcObject;
    return {
        packetsReceived: inbound ? inbound.packetsReceived : 0,
        totalAudioEnergy: inbound ? inbound.totalAudioEnergy || 0 : 0,
        muted: v.muted,
        videoTracks: stream ? stream.getVideoTracks().length : 0,
        audioTracks: stream ? stream.getAudioTracks().length : 0,
    };
}"""


def sound_state(page: Page) -> dict[str, Any]:
    return page.evaluate("() => { const s = window.robotcamSound; return { unmuted: s.unmuted, level: s.level, "
                         "talkState: s.talkState, lineBusy: s.lineBusy, you: s.you, session: s.session, "
                         "lastError: s.lastError, sent: s.sent }; }")


def wait_for_sound(page: Page, predicate: str, what: str, timeout_ms: int = 20_000) -> None:
    try:
        page.wait_for_function(f"() => {{ const s = window.robotcamSound; return s && ({predicate}); }}",
                               timeout=timeout_ms, polling=100)
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{what}: not within {timeout_ms / 1000:.0f} s ({exc}); sound: {sound_state(page)}; {describe(page)}")


@pytest.fixture
def tone_daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    """The test pattern with a 440 Hz tone; no speaker (talkback.device names none)."""
    process = DaemonProcess(
        tmp_path, "audio: {source: tone, tone_frequency: 440.0}\ntalkback: {device: no-such-speaker}\n"
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_unmute_plays_the_robots_sound_with_the_picture(tone_daemon: DaemonProcess, open_page: Any) -> None:
    page = open_page(tone_daemon.url + "/", viewport={"width": 1024, "height": 768})
    wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "first load")

    # sound arrives at once, muted (autoplay policy), in the same MediaStream as the picture
    page.wait_for_function(f"async () => {{ const s = await ({JS_AUDIO_STATS})(); "
                           "return s && s.packetsReceived > 50 && s.audioTracks === 1; }", timeout=20_000, polling=250)
    stats = page.evaluate(JS_AUDIO_STATS)
    assert stats["muted"] is True and stats["videoTracks"] == 1 and stats["audioTracks"] == 1, stats
    unmute = page.locator("#unmute-button")
    expect(unmute).to_be_visible()
    expect(unmute).to_have_text("Unmute")
    assert page.locator("#sound-meter").is_hidden()

    unmute.click()  # one tap
    expect(unmute).to_have_text("Mute")
    assert page.evaluate("document.querySelector('video').muted") is False
    expect(page.locator("#sound-meter")).to_be_visible()
    # the level meter follows the tone (-12 dBFS): well above silence
    wait_for_sound(page, "s.level > 0.4", "the level meter moving")
    assert_frames_advance(page)  # the picture goes on, unmuted, no reconnect
    energy = page.evaluate(JS_AUDIO_STATS)["totalAudioEnergy"]
    page.wait_for_function(f"async () => (await ({JS_AUDIO_STATS})()).totalAudioEnergy > {energy}", timeout=10_000)

    # this daemon has no speaker: the talk button says so and, tapped, why
    talk = page.locator("#talk-button")
    expect(talk).to_have_text("Talk unavailable")
    talk.click(force=True)  # aria-disabled: looks off, yet a tap explains
    expect(page.locator("#talk-status")).to_contain_text("talk-back is unavailable:")
    screenshot(page, "browser-sound.png")

    unmute.click()
    expect(unmute).to_have_text("Unmute")
    assert page.evaluate("document.querySelector('video').muted") is True


def test_phone_layout_keeps_every_button_on_screen(tone_daemon: DaemonProcess, open_page: Any) -> None:
    width, height = 390, 844
    page = open_page(tone_daemon.url + "/", viewport={"width": width, "height": height},
                     device_scale_factor=3, is_mobile=True, has_touch=True)
    wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "phone viewport")
    for selector in ("#unmute-button", "#talk-button", "#stats-button", "#fullscreen-button"):
        box = page.locator(selector).bounding_box()
        assert box is not None, selector
        assert box["x"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height, (selector, box)
        assert box["height"] >= 44, (selector, box)
    page.locator("#unmute-button").tap()
    wait_for_sound(page, "s.unmuted && s.level > 0.4", "sound after a tap on a phone")
    screenshot(page, "browser-phone-sound.png")


def test_insecure_page_explains_that_talking_needs_https(tone_daemon: DaemonProcess, open_page: Any) -> None:
    """On plain HTTP (any address but localhost) browsers give no microphone: instead of the
    talk button the page links to how to turn HTTPS on. Loopback is a secure context, so the
    test makes the page believe it is not."""
    page = open_page("about:blank")
    page.context.add_init_script("Object.defineProperty(window, 'isSecureContext', { get: () => false })")
    page.goto(tone_daemon.url + "/")
    wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "insecure page")
    link = page.locator("#talk-https")
    expect(link).to_be_visible()
    expect(link).to_have_text("Talking needs HTTPS")
    assert page.locator("#talk-button").is_hidden()
    assert sound_state(page)["talkState"] == "insecure"
    expect(page.locator("#unmute-button")).to_be_visible()  # listening works on HTTP
    href = link.get_attribute("href")
    assert href == "/help/https"
    help_page = page.context.new_page()
    help_page.goto(tone_daemon.url + href)
    assert "robotcam gen-cert" in help_page.content()
    help_page.close()


@pytest.fixture(scope="module")
def talk_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What Chromium's fake microphone says: a steady 880 Hz tone, 48 kHz mono."""
    import math
    import struct
    import wave

    path = tmp_path_factory.mktemp("fake-mic") / "tone-880.wav"
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(48000)
        wav.writeframes(b"".join(
            struct.pack("<h", int(12000 * math.sin(2 * math.pi * 880 * n / 48000))) for n in range(48000 * 4)
        ))
    return path


@pytest.fixture(scope="module")
def secure_browser(playwright_driver: Playwright, talk_wav: Path) -> Iterator[Browser]:
    """Chromium with a fake microphone (the WAV, looped), permission granted, and a
    self-signed robot accepted (--ignore-certificate-errors): a phone that trusts the CA."""
    options = chromium_launch_options()
    options["args"] = [
        *options["args"], "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={talk_wav}", "--ignore-certificate-errors",
    ]
    chromium = playwright_driver.chromium.launch(**options)
    try:
        yield chromium
    finally:
        chromium.close()


def test_hold_to_talk_over_https_reaches_the_robots_speaker(tmp_path: Path, secure_browser: Browser) -> None:
    from tests.audio_support import AlsaFifoDevices, dominant_frequency, rms

    import numpy as np

    if not AlsaFifoDevices.available():
        pytest.skip("ALSA's configuration is not installed (libasound2-data)")
    tls_dir = tmp_path / "tls"
    made = subprocess.run(
        [sys.executable, "-m", "robotcam", "gen-cert", "--out-dir", str(tls_dir), "--hostname", "robot", "--ip", "127.0.0.1"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert made.returncode == 0, made.stderr
    sessions: list[PageSession] = []
    with AlsaFifoDevices(tmp_path) as speaker:
        daemon = DaemonProcess(
            tmp_path, "audio: {source: tone}\ntalkback: {device: robotcam_spk}\n", env=speaker.env(),
            tls=(tls_dir / "cert.pem", tls_dir / "key.pem"),
        )
        daemon.start()
        try:
            pages = []
            for _ in range(2):
                session = PageSession(secure_browser, viewport={"width": 1024, "height": 768})
                sessions.append(session)
                session.page.goto(daemon.url + "/")
                pages.append(session.page)
            talker, other = pages
            for page in pages:
                wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "the HTTPS page")
                assert page.evaluate("window.isSecureContext") is True
                assert page.evaluate("location.protocol") == "https:"
                wait_for_sound(page, "s.talkState === 'idle' && s.session", "the talk button ready")
            button = talker.locator("#talk-button")
            expect(button).to_have_text("Hold to talk")
            screenshot(talker, "browser-https-talk-ready.png")

            start = speaker.played_bytes()
            button.hover()
            talker.mouse.down()  # press and hold
            wait_for_sound(talker, "s.talkState === 'talking'", "talking")
            expect(button).to_have_text("Talking…")
            # everyone else sees the line busy, live
            wait_for_sound(other, "s.lineBusy && s.talkState === 'busy'", "the other viewer seeing the line busy")
            expect(other.locator("#talk-button")).to_have_text("Line busy")
            expect(other.locator("#talk-status")).to_have_text("Line busy: someone else is talking")
            screenshot(other, "browser-line-busy.png")

            # the robot's speaker (real PortAudio/ALSA) plays the browser's microphone
            status, health = get_json(daemon.url + "/health", context=daemon.ssl_context)
            rate, channels = health["talkback"]["sample_rate"], health["talkback"]["channels"]

            def loud() -> Any:
                data = np.frombuffer(speaker.played_since(start), dtype="<i2")
                mono = data[: len(data) // channels * channels].reshape(-1, channels)[:, 0]
                blocks = [b for b in np.array_split(mono, max(1, len(mono) // 441)) if rms(b) > 300]
                return np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.int16)

            deadline = time.monotonic() + 30
            while len(loud()) < rate and time.monotonic() < deadline:
                time.sleep(0.2)
            assert len(loud()) >= rate, f"the speaker got {len(loud())} loud samples; {get_json(daemon.url + '/health', context=daemon.ssl_context)}"
            assert abs(dominant_frequency(loud()[-rate // 2:], rate) - 880.0) < 10.0
            status, health = get_json(daemon.url + "/health", context=daemon.ssl_context)
            assert health["talkback"]["state"] == "talking" and health["talkback"]["frames_received"] > 0, health

            talker.mouse.up()  # let go: the line is free again, for everyone
            wait_for_sound(talker, "s.talkState === 'idle'", "the talker letting go")
            wait_for_sound(other, "!s.lineBusy && s.talkState === 'idle'", "the line free for the other viewer")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                status, health = get_json(daemon.url + "/health", context=daemon.ssl_context)
                if health["talkback"]["talker"] is None:
                    break
                time.sleep(0.2)
            assert health["talkback"]["talker"] is None and health["talkback"]["talks"] == 1, health
            assert_frames_advance(talker)  # the picture never stopped
        finally:
            for session in sessions:
                session.close()
            daemon.stop()


def test_a_picture_that_stands_still_is_never_called_live(tmp_path: Path, open_page: Any) -> None:
    """The camera wedges for a few seconds (the test hook stops the test pattern's frames):
    the page says the connection is poor instead of "Live", and comes back by itself."""
    stall = tmp_path / "stall"
    daemon = DaemonProcess(tmp_path, env={"PYTHONPATH": str(REPO / "tests" / "hooks"),
                                          "ROBOTCAM_TEST_STALL_FILE": str(stall)})
    daemon.start()
    try:
        page = open_page(daemon.url + "/")
        wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "before the stall")
        reconnects = page.evaluate("window.robotcam.reconnects")
        stall.touch()
        page.wait_for_function("() => window.robotcam.state === 'poor'", timeout=10_000)
        assert page.evaluate("document.getElementById('status-text').textContent").startswith("Poor connection")
        stall.unlink()
        wait_until_playing(page, RECOVERY_TIMEOUT_MS, "after the stall")
        assert page.evaluate("window.robotcam.reconnects") == reconnects, "a short stall needs no reconnect"
    finally:
        daemon.stop()


def test_chromium_plays_a_recorded_segment_and_the_mjpeg_stream(tmp_path: Path, open_page: Any) -> None:
    """A segment plays on its own in Chromium (picture and sound); `<img src=/stream.mjpg>`
    shows the picture."""
    process = DaemonProcess(tmp_path, (
        "audio: {source: tone, tone_frequency: 440.0}\ntalkback: {device: no-such-speaker}\n"
        f"recording: {{enabled: true, path: {tmp_path / 'rec'}, segment_seconds: 1.0}}\n"
    ))
    process.start()
    try:
        deadline = time.monotonic() + 20
        segments: list[Any] = []
        while time.monotonic() < deadline and len(segments) < 3:
            time.sleep(0.3)
            segments = get_json(process.url + "/api/recordings")[1]["segments"]
        assert len(segments) >= 3, segments
        name = segments[1]["name"]  # a whole one, from a keyframe, with sound from its start
        page = open_page(process.url + "/health")
        page.evaluate(f"""() => {{
            const v = document.createElement('video');
            v.id = 'segment'; v.muted = true; v.src = '/api/recordings/{name}';
            document.body.appendChild(v); v.play();
            const img = document.createElement('img');
            img.id = 'mjpeg'; img.src = '/stream.mjpg';
            document.body.appendChild(img);
        }}""")
        page.wait_for_function(
            "() => { const v = document.getElementById('segment');"
            " return v.ended || v.currentTime > 0.5; }", timeout=15_000)
        played = page.evaluate("""() => { const v = document.getElementById('segment');
            return {width: v.videoWidth, height: v.videoHeight, duration: v.duration,
                    error: v.error && v.error.message, audioBytes: v.webkitAudioDecodedByteCount,
                    frames: v.getVideoPlaybackQuality().totalVideoFrames}; }""")
        assert (played["width"], played["height"]) == (320, 240), played
        assert played["error"] is None and 0.8 < played["duration"] < 2.0, played
        assert played["frames"] > 5 and played["audioBytes"] > 0, played
        page.wait_for_function(
            "() => document.getElementById('mjpeg').naturalWidth === 320", timeout=15_000)
    finally:
        process.stop()
