"""Signing in on the page, in headless Chromium against the real daemon (issue #9): the form
appears, signing in plays the video, a `view` user gets no talk button or drive pad while a user
with `talk` and `control` gets both, and signing out returns to the form and ends the viewer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from argon2 import PasswordHasher
from playwright.sync_api import Page, expect

from tests.daemon_process import DaemonProcess, get_json
from tests.test_browser import (  # noqa: F401 - fixtures
    CHROMIUM,
    FIRST_PICTURE_TIMEOUT_MS,
    assert_frames_advance,
    browser,
    open_page,
    playwright_driver,
    screenshot,
    wait_until_playing,
)
from tests.test_whep_browser import wait_for

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (apt-get install chromium)"),
]

FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[DaemonProcess]:
    users = [("grandma", "view-only-pw", "[view]"), ("pilot", "pilot-pw", "[view, talk, control]")]
    lines = "".join(f"    - {{name: {n}, password_hash: '{FAST.hash(p)}', permissions: {perms}}}\n" for n, p, perms in users)
    process = DaemonProcess(tmp_path, extra_config=(
        f"control: {{enabled: true, socket: '{tmp_path / 'no-program.sock'}'}}\n"
        "auth:\n  users:\n" + lines
    ))
    process.start()
    try:
        yield process
    finally:
        process.stop()


def sign_in(page: Page, name: str, password: str) -> None:
    expect(page.locator("#login")).to_be_visible(timeout=FIRST_PICTURE_TIMEOUT_MS)
    page.fill("#login-user", name)
    page.fill("#login-password", password)
    page.click("#login-submit")


def viewers(daemon: DaemonProcess) -> int:
    return len(daemon_health(daemon)["peers"]["sessions"])


def daemon_health(daemon: DaemonProcess) -> dict[str, Any]:
    """The full /health: it needs `view`, so the test signs in over HTTP like any script."""
    import json
    import urllib.request

    request = urllib.request.Request(daemon.url + "/api/login", method="POST", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"username": "pilot", "password": "pilot-pw"}).encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        cookie = response.headers["Set-Cookie"].split(";")[0]
    with urllib.request.urlopen(urllib.request.Request(daemon.url + "/health", headers={"Cookie": cookie}), timeout=10) as r:
        return json.loads(r.read())


def test_sign_in_plays_and_shows_only_permitted_controls(daemon: DaemonProcess, open_page: Any) -> None:
    page = open_page(daemon.url + "/", viewport={"width": 1024, "height": 768})
    expect(page.locator("#login")).to_be_visible(timeout=FIRST_PICTURE_TIMEOUT_MS)
    assert page.evaluate("window.robotcam.state") == "signed-out"
    assert page.evaluate("window.robotcam.pc") is None, "nothing connects before signing in"
    status, short = get_json(daemon.url + "/health")
    assert status == 200 and list(short) == ["status"]  # degraded: no robot program here

    sign_in(page, "grandma", "wrong")
    expect(page.locator("#login-error")).to_have_text("Wrong user name or password", timeout=10_000)
    screenshot(page, "browser-login.png")

    sign_in(page, "grandma", "view-only-pw")
    wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "signed in as a view-only user")
    assert_frames_advance(page)
    expect(page.locator("#login")).to_be_hidden()
    expect(page.locator("#signout-button")).to_be_visible()
    assert page.locator("#talk-button").is_hidden(), "a view-only user gets no talk button"
    assert page.locator("#drive-pad").count() == 0 or page.locator("#drive-pad").is_hidden()
    assert [s["user"] for s in daemon_health(daemon)["peers"]["sessions"]] == ["user grandma"]
    # what the page hides, the server refuses too
    refused = page.evaluate("""async () => (await fetch('/api/talk', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: '{"session": "x", "action": "start"}'})).status""")
    assert refused == 403

    page.click("#signout-button")
    expect(page.locator("#login")).to_be_visible(timeout=10_000)
    assert page.evaluate("window.robotcam.state") == "signed-out"
    wait_for(lambda: viewers(daemon) == 0, 10, "signing out ends the viewer")

    sign_in(page, "pilot", "pilot-pw")
    wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "signed in with talk and control")
    expect(page.locator("#talk-button")).to_be_visible(timeout=10_000)
    expect(page.locator("#drive-pad")).to_be_visible(timeout=10_000)

    # a reload of the page keeps the sign-in (the cookie): no form, straight to the picture
    page.reload()
    wait_until_playing(page, FIRST_PICTURE_TIMEOUT_MS, "reloaded while signed in")
    expect(page.locator("#login")).to_be_hidden()
