"""Standard signaling and robot control in headless Chromium, against the real daemon process:

- a third-party WHEP player (whip-whep from npm, installed by `scripts/bootstrap.sh --test`),
  on a page from another origin, plays /whep: CORS, trickle ICE by PATCH (its offer carries
  no candidate), ICE servers from the Link headers, DELETE when it stops;
- robotcam's own page takes its ICE servers (TURN credentials minted per request) from
  /api/config, and its control pad reaches a robot program on a Unix socket and shows what
  that program sends back.

Same Chromium flags as tests/test_browser.py; all traffic on 127.0.0.1.
"""

from __future__ import annotations

import functools
import hashlib
import json
import urllib.request
import http.server
import re
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import free_port
from tests.daemon_process import DaemonProcess, get_json
from tests.signaling_support import RobotProgram, closed_udp_port, verify_turn_rest
from tests.test_browser import (
    CHROMIUM,
    FIRST_PICTURE_TIMEOUT_MS,
    PageSession,
    assert_frames_advance,
    chromium_launch_options,
    screenshot,
    wait_until_playing,
)

PLAYER_DIR = Path(__file__).resolve().parent / "whep-player"
PLAYER_MODULE = PLAYER_DIR / "node_modules" / "whip-whep" / "whep.js"
TURN_SECRET, TURN_TTL = "browser-test-secret", 600
PLAYER_TOKEN = "whep-player-token-0123456789"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass


@pytest.fixture
def player_site() -> Iterator[str]:
    """The player page and its node_modules, from a second origin (another port)."""
    if not PLAYER_MODULE.is_file():
        pytest.skip(f"{PLAYER_MODULE} is missing: run scripts/bootstrap.sh --test (npm ci in tests/whep-player)")
    handler = functools.partial(QuietHandler, directory=str(PLAYER_DIR))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def program(tmp_path: Path) -> Iterator[RobotProgram]:
    robot = RobotProgram(tmp_path / "control.sock")
    robot.start()
    try:
        yield robot
    finally:
        robot.stop()


class SignalingDaemon(DaemonProcess):
    """robotcam with STUN/TURN servers that never answer (closed loopback ports), TURN REST
    credentials, and control bridged to the test's robot program."""

    def __init__(self, workdir: Path, control_socket: Path, anonymous: str) -> None:
        super().__init__(workdir)
        self.stun = f"stun:127.0.0.1:{closed_udp_port()}"
        self.turn = f"turn:127.0.0.1:{closed_udp_port()}?transport=udp"
        self.config.write_text(
            f"server: {{host: 127.0.0.1, port: {self.port}}}\n"
            "video: {source: testpattern, width: 320, height: 240, fps: 15}\n"
            "webrtc:\n"
            "  host_addresses: [127.0.0.1]\n"
            f"  ice_servers: [{{urls: '{self.stun}'}}, {{urls: '{self.turn}'}}]\n"
            f"  turn_secret: {TURN_SECRET}\n"
            f"  turn_credential_ttl: {TURN_TTL}\n"
            "  gather_timeout: 0.5\n"
            f"control: {{enabled: true, socket: '{control_socket}'}}\n"
            "logging: {level: info}\n"
            # the page watches and drives without signing in (a kiosk); players use the token
            "auth:\n"
            f"  anonymous: {anonymous}\n"
            f"  tokens: [{{name: player, sha256: '{hashlib.sha256(PLAYER_TOKEN.encode()).hexdigest()}', permissions: [view]}}]\n"
        )


def running(process: SignalingDaemon) -> Iterator[SignalingDaemon]:
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def daemon(tmp_path: Path, program: RobotProgram) -> Iterator[SignalingDaemon]:
    yield from running(SignalingDaemon(tmp_path, program.path, anonymous="[view, control]"))


@pytest.fixture
def whep_daemon(tmp_path: Path, program: RobotProgram) -> Iterator[SignalingDaemon]:
    """Nothing without a credential: a WHEP player must bring the token."""
    yield from running(SignalingDaemon(tmp_path, program.path, anonymous="[]"))


def token_health(daemon: SignalingDaemon) -> dict[str, Any]:
    request = urllib.request.Request(daemon.url + "/health", headers={"Authorization": f"Bearer {PLAYER_TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(**chromium_launch_options())
        try:
            yield chromium
        finally:
            chromium.close()


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


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"{what}: not within {timeout:.0f} s")


def check_ice_servers(servers: list[dict[str, Any]], daemon: SignalingDaemon) -> None:
    """The daemon's STUN server as is, its TURN server with a TURN REST credential."""
    by_url = {(s["urls"][0] if isinstance(s["urls"], list) else s["urls"]): s for s in servers}
    assert daemon.stun in by_url and daemon.turn in by_url, servers
    turn = by_url[daemon.turn]
    assert re.fullmatch(r"\d+:robotcam", turn["username"]), turn
    verify_turn_rest(turn["username"], turn["credential"], TURN_SECRET, TURN_TTL)


JS_PLAYER_FRAMES = """async () => {
    const pc = window.player && window.player.pc;
    if (!pc) return -1;
    let frames = -1;
    (await pc.getStats()).forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded;
    });
    return frames;
}"""


def test_third_party_whep_player_plays_cross_origin_with_a_token(
    whep_daemon: SignalingDaemon, player_site: str, open_page: Any
) -> None:
    daemon = whep_daemon
    refused = open_page(f"{player_site}/player.html?whep={daemon.url}/whep")
    refused.wait_for_function("() => window.player && window.player.state !== 'starting'", timeout=FIRST_PICTURE_TIMEOUT_MS)
    assert refused.evaluate("window.player.state") == "error", "no token: refused"
    assert token_health(daemon)["peers"]["count"] == 0

    page = open_page(f"{player_site}/player.html?whep={daemon.url}/whep&token={PLAYER_TOKEN}")
    page.wait_for_function("() => window.player && window.player.state !== 'starting'", timeout=FIRST_PICTURE_TIMEOUT_MS)
    assert page.evaluate("window.player.state") == "viewing", page.evaluate("window.player.error")
    page.wait_for_function(
        "() => { const v = document.getElementById('video'); return v.videoWidth === 320 && v.currentTime > 0; }",
        timeout=FIRST_PICTURE_TIMEOUT_MS,
    )
    first = page.evaluate(JS_PLAYER_FRAMES)
    wait_for(lambda: page.evaluate(JS_PLAYER_FRAMES) >= first + 10, 20, "frames advance in the WHEP player")

    # The player took the STUN/TURN servers from the Link headers (whip-whep applies them).
    check_ice_servers(page.evaluate("window.player.pc.getConfiguration().iceServers"), daemon)
    # It trickled: its offer had no candidate, so only its PATCH can have connected it.
    health = token_health(daemon)
    assert [s["signaling"] for s in health["peers"]["sessions"]] == ["whep"], health
    assert health["peers"]["sessions"][0]["state"] == "connected", health
    assert health["peers"]["sessions"][0]["user"] == "token player", health

    page.evaluate("window.stopPlayer()")  # pc.close(), then DELETE (with the token) on the session URL
    wait_for(lambda: token_health(daemon)["peers"]["count"] == 0, 10, "the DELETE ends the session")


def test_page_uses_configured_ice_servers_and_drives_the_robot(
    daemon: SignalingDaemon, program: RobotProgram, open_page: Any
) -> None:
    page = open_page(daemon.url + "/", viewport={"width": 1024, "height": 768})
    wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "robotcam page with ICE servers and control")
    assert_frames_advance(page)
    check_ice_servers(page.evaluate("window.robotcam.pc.getConfiguration().iceServers"), daemon)

    assert wait_for(program.connected.is_set, 15, "the daemon connects to the robot program")
    page.wait_for_function("() => window.robotcamControl.state === 'open'", timeout=15_000)
    assert page.locator("#drive-pad").is_visible()
    viewer_id = get_json(daemon.url + "/health")[1]["peers"]["sessions"][0]["id"]

    # ArrowUp held: forward, repeated; released: one stop.
    page.keyboard.down("ArrowUp")
    assert program.next_message() == {"type": "drive", "linear": 1, "angular": 0, "viewer": viewer_id}
    assert program.next_message()["linear"] == 1  # repeated while held (about 10 Hz)
    page.keyboard.up("ArrowUp")
    message = program.next_message()
    while message["linear"] != 0:  # repeats already on their way
        message = program.next_message()
    assert message == {"type": "drive", "linear": 0, "angular": 0, "viewer": viewer_id}
    # S drives backwards here; it does not also toggle the stats overlay.
    page.keyboard.down("s")
    assert program.next_message()["linear"] == -1
    page.keyboard.up("s")
    assert page.locator("#stats").is_hidden()

    # The on-screen pad: holding near its top edge drives forward.
    program.drain()
    box = page.locator("#drive-pad").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] * 0.1)
    page.mouse.down()
    forward = program.next_message()
    while forward["linear"] == 0:  # the stop after S may still be on its way
        forward = program.next_message()
    assert forward["linear"] > 0.5 and abs(forward["angular"]) < 0.2, forward
    page.mouse.up()
    stop = program.next_message()
    while stop["linear"] != 0:
        stop = program.next_message()
    assert stop["angular"] == 0, stop
    assert page.evaluate("getComputedStyle(document.querySelector('.drive-knob')).transform") in ("none", "matrix(1, 0, 0, 1, 0, 0)")

    # Telemetry from the robot program shows in the page.
    program.send({"type": "telemetry", "battery": 12.3, "mode": "manual"})
    page.wait_for_function(
        "() => /battery[^\\n]*12\\.3/.test(document.getElementById('control-telemetry').textContent)",
        timeout=10_000,
    )
    assert page.locator("#control-telemetry").is_visible()
    assert page.evaluate("window.robotcamControl.telemetry.mode") == "manual"
    screenshot(page, "browser-control.png")
