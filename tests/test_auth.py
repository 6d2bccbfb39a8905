"""Access control (issue #9): the permission matrix over every route and the control channel,
sign-in and its limits, tokens, cross-site use of a session, reload revoking, the CLI."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSServerHandshakeError
from argon2 import PasswordHasher

from robotcam.auth.credentials import Credentials
from robotcam.http.auth import COOKIE
from robotcam.auth.limits import LoginGuard, OfferLimiter
from robotcam.config import AuthConfig
from tests.conftest import REPO, Robot, make_config, wait_until
from tests.signaling_support import RobotProgram
from tests.test_control import ControlViewer, from_program
from tests.viewer import Viewer

# Cheap hashes: verification uses the parameters inside the hash, so the tests stay fast.
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
PASSWORDS = {"viewer": "pw-viewer", "talker": "pw-talker", "driver": "pw-driver",
             "admin": "pw-admin", "pilot": "pw-pilot"}
PERMS = {"viewer": ["view"], "talker": ["talk"], "driver": ["control"], "admin": ["admin"],
         "pilot": ["view", "control"]}
VIEW_TOKEN, PILOT_TOKEN = "token-for-obs-0123456789", "token-for-pilot-0123456789"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def auth_section(**extra: Any) -> dict[str, Any]:
    return {
        "enabled": True,
        "users": [{"name": n, "password_hash": FAST.hash(PASSWORDS[n]), "permissions": PERMS[n]} for n in PASSWORDS],
        "tokens": [{"name": "obs", "sha256": sha(VIEW_TOKEN), "permissions": ["view"]},
                   {"name": "pilot-bot", "sha256": sha(PILOT_TOKEN), "permissions": ["view", "control"]}],
        **extra,
    }


async def login(robot: Robot, name: str, password: str | None = None, **headers: str) -> tuple[int, dict[str, Any], str | None]:
    response = await robot.http.post(
        "/api/login", json={"username": name, "password": password or PASSWORDS[name]}, headers=headers,
    )
    morsel = response.cookies.get(COOKIE)
    robot.http.session.cookie_jar.clear()  # each request below says which credential it uses
    return response.status, await response.json(), morsel.value if morsel else None


# --- the permission matrix ---------------------------------------------------------------------

# (route label, method, path, extra headers, body): each answered by its handler with a 4xx of its
# own (bad body, unknown session, not a WebSocket) once the access layer lets it through, so the
# matrix needs no real viewer.
ROUTES = [
    ("health", "GET", "/health", {}, None),
    ("config", "GET", "/api/config", {}, None),
    ("viewer", "GET", "/api/viewer?session=nope", {}, None),
    ("offer", "POST", "/offer", {}, b"{}"),
    ("connect", "POST", "/connect", {}, b"{}"),
    ("whep", "POST", "/whep", {"Content-Type": "application/sdp"}, b""),
    ("whep-patch", "PATCH", "/whep/nope", {"Content-Type": "application/trickle-ice-sdpfrag"}, b""),
    ("whep-delete", "DELETE", "/whep/nope", {}, None),
    ("ws", "GET", "/ws", {}, None),
    ("ws-upgrade", "GET", "/ws", {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
                                  "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}, None),
    ("events", "GET", "/api/events", {}, None),
    ("talk", "POST", "/api/talk", {}, b"{}"),
    ("page", "GET", "/", {}, None),
    ("session", "GET", "/api/session", {}, None),
    ("snapshot", "GET", "/snapshot.jpg", {}, None),
    ("metrics", "GET", "/metrics", {}, None),
    ("recordings", "GET", "/api/recordings", {}, None),
    ("recording", "GET", "/api/recordings/nope.mp4", {}, None),
]
# What each route answers once allowed (its handler's own answer to the matrix's request).
PASSED = {"health": 200, "config": 200, "viewer": 404, "offer": 400, "connect": 400, "whep": 400, "whep-patch": 404,
          "whep-delete": 404, "ws": 426, "ws-upgrade": 101, "events": 200, "talk": 400, "page": 200,
          "session": 200, "snapshot": 200, "metrics": 200, "recordings": 200, "recording": 400}
NEEDS = {"talk": "talk", "metrics": "metrics", "recordings": "admin", "recording": "admin"}  # else view
PUBLIC = {"page", "session", "health"}
WHEP = {"whep", "whep-patch", "whep-delete"}
STATE_CHANGING = {"offer", "connect", "talk", "ws-upgrade"}  # through the cookie: Origin checked


def expected(credential: str, route: str) -> int:
    """The status the matrix expects: the rules of README "Security", written out."""
    if credential == "wrong-token":
        return 401  # a bad credential is refused everywhere, even where none is needed
    if route in PUBLIC:
        return 200
    cookie_user = credential.removeprefix("cookie:") if credential.startswith("cookie:") else None
    via_cookie = cookie_user is not None or credential == "foreign-origin"
    if credential in ("none", "wrong-password", "expired") or (via_cookie and route in WHEP):
        return 401  # no credential (a cookie never counts for WHEP)
    if credential == "foreign-origin" and route in STATE_CHANGING:
        return 403
    perms = {"token": ["view"], "foreign-origin": ["admin"]}.get(credential) or PERMS[cookie_user or ""]
    need = NEEDS.get(route, "view")
    return PASSED[route] if ("admin" in perms or need in perms) else 403


CREDENTIALS = ["none", "wrong-password", "expired", *[f"cookie:{n}" for n in ("viewer", "talker", "driver", "admin")],
               "token", "wrong-token", "foreign-origin"]


@pytest.fixture
async def secured(robot_factory: Any) -> Robot:
    return await robot_factory(make_config(auth=auth_section(), audio={"source": "none"}))


async def credential_headers(robot: Robot, credential: str) -> dict[str, str]:
    origin = {"Origin": str(robot.http.make_url("")).rstrip("/")}
    if credential in ("none", "wrong-password"):
        if credential == "wrong-password":
            status, _, cookie = await login(robot, "viewer", "not-it")
            assert status == 401 and cookie is None
        return {}
    if credential == "token":
        return {"Authorization": f"Bearer {VIEW_TOKEN}"}
    if credential == "wrong-token":
        return {"Authorization": "Bearer not-a-token"}
    name = {"expired": "admin", "foreign-origin": "admin"}.get(credential) or credential.removeprefix("cookie:")
    status, _, cookie = await login(robot, name)
    assert status == 200 and cookie
    if credential == "expired":
        for session in robot.daemon.access.sessions._sessions.values():
            session.last_seen -= robot.daemon.config.auth.session_idle_timeout + 1
    if credential == "foreign-origin":
        origin = {"Origin": "http://evil.example"}
    return {"Cookie": f"{COOKIE}={cookie}", **origin}


async def test_permission_matrix(secured: Robot) -> None:
    robot = secured
    table: dict[tuple[str, str], tuple[int, int]] = {}
    for credential in CREDENTIALS:
        headers = await credential_headers(robot, credential)
        for label, method, path, extra, body in ROUTES:
            response = await robot.http.request(method, path, headers={**headers, **extra}, data=body)
            table[(credential, label)] = (response.status, expected(credential, label))
            if response.status == 401:
                assert response.headers["WWW-Authenticate"] == 'Bearer realm="robotcam"', (credential, label)
                assert "error" in await response.json()
            if label == "health" and response.status == 200:
                report = await response.json()
                full = credential in ("token", "cookie:viewer", "cookie:admin", "foreign-origin")
                assert ("video" in report) == full and report["status"] == "ok", (credential, report)
            response.close()
    wrong = {k: v for k, v in table.items() if v[0] != v[1]}
    assert not wrong, f"(credential, route): (got, expected): {wrong}"
    assert len(table) == len(CREDENTIALS) * len(ROUTES)


async def test_whep_answers_cors_on_refusals_and_preflights_need_no_credential(secured: Robot) -> None:
    robot = secured
    preflight = await robot.http.options("/whep", headers={
        "Origin": "http://player.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status == 200 and preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    refused = await robot.http.post("/whep", data=b"v=0", headers={"Content-Type": "application/sdp", "Origin": "http://player.example"})
    assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == "*"
    assert refused.content_type == "application/problem+json" and "WWW-Authenticate" in refused.headers


async def test_control_messages_need_the_control_permission(robot_factory: Any, tmp_path: Path) -> None:
    program = RobotProgram(tmp_path / "robot.sock")
    program.start()
    robot: Robot = await robot_factory(make_config(
        auth=auth_section(), audio={"source": "none"}, control={"enabled": True, "socket": str(program.path)}))
    watcher, pilot = ControlViewer(), ControlViewer()
    try:
        await wait_until(lambda: robot.daemon.control.connected, 15, "the bridge connects")
        config = await (await robot.http.get("/api/config", headers={"Authorization": f"Bearer {VIEW_TOKEN}"})).json()
        assert config["control"]["enabled"] is False and config["control"]["permitted"] is False
        await watcher.connect(token_poster(robot, VIEW_TOKEN))
        await pilot.connect(token_poster(robot, PILOT_TOKEN))
        await asyncio.wait_for(asyncio.gather(watcher.opened.wait(), pilot.opened.wait()), 15)
        watcher.send({"type": "drive", "linear": 1.0})
        reply = await watcher.receive()
        assert reply["type"] == "error" and "'control' permission" in reply["error"]
        pilot.send({"type": "drive", "linear": 0.25})
        got = await from_program(program)
        assert got["linear"] == 0.25 and got["user"] == "pilot-bot"
        await asyncio.sleep(0.5)  # anything the watcher's message could have caused has arrived
        assert program.drain() == [], "a view-only viewer's message reached the robot program"
        assert robot.daemon.control.to_robot == 1
    finally:
        await watcher.close()
        await pilot.close()
        program.stop()


def token_poster(robot: Robot, token: str) -> Any:
    async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        response = await robot.http.post("/offer", json=body, headers={"Authorization": f"Bearer {token}"})
        return response.status, await response.json()
    return post


# --- sign-in ----------------------------------------------------------------------------------

async def test_sign_in_cookie_and_sign_out(secured: Robot) -> None:
    robot = secured
    response = await robot.http.post("/api/login", json={"username": "viewer", "password": PASSWORDS["viewer"]})
    assert response.status == 200
    assert (await response.json())["user"] == {"name": "viewer", "kind": "user", "permissions": ["view"]}
    header = response.headers["Set-Cookie"]
    assert "HttpOnly" in header and "SameSite=Strict" in header and "Secure" not in header  # plain HTTP here
    first = response.cookies[COOKIE].value
    again = await robot.http.post("/api/login", json={"username": "viewer", "password": PASSWORDS["viewer"]})
    assert again.cookies[COOKIE].value != first, "a fresh session id at every sign-in"
    robot.http.session.cookie_jar.clear()

    origin = str(robot.http.make_url("")).rstrip("/")
    cookie = {"Cookie": f"{COOKIE}={first}", "Origin": origin}
    viewer = Viewer()
    try:
        async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            r = await robot.http.post("/offer", json=body, headers=cookie)
            return r.status, await r.json()
        await viewer.connect(post)
        await viewer.wait_frames(5)
        assert [s.identity.name for s in robot.daemon.peers.sessions.values()] == ["viewer"]
        out = await robot.http.post("/api/logout", headers=cookie)
        assert out.status == 200 and (await out.json())["viewers_closed"] == 1
        assert 'robotcam_session=""' in out.headers["Set-Cookie"]
        await wait_until(lambda: len(robot.daemon.peers) == 0, 10, "the signed-out viewer closes")
        assert (await robot.http.get("/api/config", headers=cookie)).status == 401
    finally:
        await viewer.close()


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"username": "viewer"}',
                                  b'{"username": 5, "password": "x"}', b'{"username": "", "password": "x"}',
                                  json.dumps({"username": "v" * 65, "password": "x"}).encode()])
async def test_bad_sign_in_bodies_are_400(secured: Robot, body: bytes) -> None:
    response = await secured.http.post("/api/login", data=body)
    assert response.status == 400 and "error" in await response.json()


async def test_guessing_is_slowed_then_refused(secured: Robot) -> None:
    robot = secured
    for _ in range(5):
        status, body, _ = await login(robot, "admin", "guess")
        assert status == 401 and body == {"error": "wrong user name or password"}
    response = await robot.http.post("/api/login", json={"username": "admin", "password": "guess"})
    assert response.status == 429 and int(response.headers["Retry-After"]) >= 30
    right = await robot.http.post("/api/login", json={"username": "admin", "password": PASSWORDS["admin"]})
    assert right.status == 429, "the right password waits out the lockout too"
    # another user from the same address waits as well: the address is locked
    assert (await login(robot, "viewer"))[0] == 429
    assert robot.daemon.access.failed_logins == 5


async def test_foreign_origin_cannot_sign_in(secured: Robot) -> None:
    status, body, cookie = await login(secured, "admin", Origin="http://evil.example")
    assert status == 403 and cookie is None


def test_login_guard_counts_user_names_across_addresses() -> None:
    guard = LoginGuard(max_failures=5, lockout=30)
    for n in range(9):
        guard.failed(f"10.0.0.{n}", "admin")
    assert guard.retry_after("10.0.1.1", "admin") == 0
    guard.failed("10.0.0.99", "admin")  # the tenth, from yet another address
    assert guard.retry_after("10.0.1.1", "admin") >= 29
    assert guard.retry_after("10.0.1.1", "someone-else") == 0


def test_unknown_users_cost_a_full_check() -> None:
    """A name that does not exist is still checked against a hash with today's parameters."""
    config = AuthConfig(users=[{"name": "alice", "password_hash": FAST.hash("x"), "permissions": ["view"]}])
    credentials = Credentials(config, dummy=Credentials.make_dummy())
    checked: list[str] = []
    real = credentials.hasher

    class Spy:
        def verify(self, hashed: str, password: str) -> bool:
            checked.append(hashed)
            return real.verify(hashed, password)

    credentials.hasher = Spy()  # type: ignore[assignment]
    assert credentials.check_password("mallory", "x") is None
    assert checked and checked[0].startswith("$argon2id$v=19$m=65536,t=3")


async def test_offers_are_rate_limited_per_address(robot_factory: Any) -> None:
    robot = await robot_factory(make_config(auth=auth_section(offers_per_minute=3)))
    headers = {"Authorization": f"Bearer {VIEW_TOKEN}"}
    statuses = [(await robot.http.post("/offer", data=b"{}", headers=headers)).status for _ in range(3)]
    limited = await robot.http.post("/offer", data=b"{}", headers=headers)
    assert statuses == [400] * 3 and limited.status == 429 and int(limited.headers["Retry-After"]) >= 1
    # without access control, no limit of this issue applies
    open_robot = await robot_factory(make_config(auth={"enabled": False, "offers_per_minute": 1}))
    assert [(await open_robot.http.post("/offer", data=b"{}")).status for _ in range(4)] == [400] * 4


def test_offer_limiter_refills() -> None:
    limiter = OfferLimiter(60)
    assert all(limiter.retry_after("a") == 0 for _ in range(60))
    assert 0 < limiter.retry_after("a") <= 1.0
    assert limiter.retry_after("b") == 0


async def test_anonymous_view_for_a_kiosk(robot_factory: Any) -> None:
    robot = await robot_factory(make_config(auth={"enabled": True, "anonymous": ["view"]}))
    session = await (await robot.http.get("/api/session")).json()
    assert session == {"auth": True, "user": None, "anonymous": ["view"], "permissions": ["view"]}
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        await viewer.wait_frames(3)
    finally:
        await viewer.close()
    assert (await robot.http.post("/api/talk", json={})).status == 401


async def test_reload_removing_a_user_ends_sessions_and_viewers(robot_factory: Any) -> None:
    config = make_config(auth=auth_section(), audio={"source": "none"})
    robot = await robot_factory(config)
    status, _, cookie = await login(robot, "pilot")
    origin = str(robot.http.make_url("")).rstrip("/")
    headers = {"Cookie": f"{COOKIE}={cookie}", "Origin": origin}
    kept, removed = Viewer(), Viewer()
    try:
        await kept.connect(token_poster(robot, VIEW_TOKEN))

        async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            r = await robot.http.post("/offer", json=body, headers=headers)
            return r.status, await r.json()
        await removed.connect(post)
        await asyncio.gather(kept.wait_frames(3), removed.wait_frames(3))
        auth = auth_section()
        auth["users"] = [u for u in auth["users"] if u["name"] != "pilot"]
        robot.daemon.apply_config(make_config(auth=auth, audio={"source": "none"}))
        await wait_until(lambda: [s.identity.name for s in robot.daemon.peers.sessions.values()] == ["obs"],
                         10, "the removed user's viewer closes, the token's stays")
        assert (await robot.http.get("/api/config", headers=headers)).status == 401
        count = len(kept.numbers)
        await kept.wait_frames(count + 5)
    finally:
        await kept.close()
        await removed.close()


# --- first run, the CLI -------------------------------------------------------------------------

def test_first_run_logs_a_password_that_signs_in_and_survives_a_restart(tmp_path: Path) -> None:
    from tests.daemon_process import DaemonProcess

    daemon = DaemonProcess(tmp_path, extra_config="auth: {}\n")
    daemon.start()
    try:
        log = daemon.output()
        line = next(l for l in log.splitlines() if "initial admin password: " in l)
        password = line.split("initial admin password: ")[1].strip()
        status, cookie = http_login(daemon.url, "admin", password)
        assert status == 200 and cookie
        assert http_get(daemon.url + "/api/config", cookie)[0] == 200
        assert http_get(daemon.url + "/api/config", None)[0] == 401
        daemon.stop()
        daemon.start()
        assert "initial admin password" not in daemon.output(), "shown only once"
        assert http_get(daemon.url + "/api/config", cookie)[0] == 200, "a restart keeps the sign-in"
        assert http_login(daemon.url, "admin", password)[0] == 200

        # the documented reset: a new password, then a reload
        reset = subprocess.run(
            [sys.executable, "-m", "robotcam", "reset-password", "--config", str(daemon.config),
             "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, cwd=REPO, timeout=60)
        assert reset.returncode == 0, reset.stderr
        new = reset.stdout.split("password: ")[1].split()[0]
        import signal as signals
        daemon.send_signal(signals.SIGHUP)
        deadline = time.monotonic() + 15
        while http_login(daemon.url, "admin", new)[0] != 200:
            assert time.monotonic() < deadline, daemon.log_tail()
            time.sleep(0.2)
        assert http_login(daemon.url, "admin", password)[0] == 401
        assert http_get(daemon.url + "/api/config", cookie)[0] == 401, "the old sign-in ended"
        assert password not in daemon.output().split("initial admin password")[0]
    finally:
        daemon.stop()


def http_login(url: str, name: str, password: str) -> tuple[int, str | None]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url + "/api/login", data=json.dumps({"username": name, "password": password}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            cookie = response.headers["Set-Cookie"].split(";")[0].split("=", 1)[1]
            return response.status, cookie
    except urllib.error.HTTPError as exc:
        return exc.code, None


def http_get(url: str, cookie: str | None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def run_cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "robotcam", *args], input=stdin, capture_output=True,
                          text=True, cwd=REPO, timeout=60)


def test_cli_hash_password_and_new_token(tmp_path: Path) -> None:
    hashed = run_cli("hash-password", stdin="correct horse\n")
    assert hashed.returncode == 0 and PasswordHasher().verify(hashed.stdout.strip(), "correct horse")
    assert "correct horse" not in hashed.stdout + hashed.stderr
    assert run_cli("hash-password", stdin="\n").returncode == 1

    made = run_cli("new-token", "--name", "obs", "--permissions", "view,talk")
    assert made.returncode == 0, made.stderr
    token = made.stdout.split("token: ")[1].split()[0]
    line = next(l for l in made.stdout.splitlines() if "sha256:" in l)
    assert sha(token) in line and '["view", "talk"]' in line
    # the printed line pastes into a config that loads
    config = tmp_path / "robotcam.yaml"
    config.write_text("auth:\n  tokens:\n" + line + "\n")
    assert run_cli("check-config", str(config)).returncode == 0
    hashed_line = f"  users:\n    - {{name: alice, password_hash: '{hashed.stdout.strip()}'}}\n"
    config.write_text("auth:\n  tokens:\n" + line + "\n" + hashed_line)
    shown = run_cli("config", "--config", str(config))
    assert shown.returncode == 0 and token not in shown.stdout
    assert hashed.stdout.strip() not in shown.stdout and "password_hash: '**********'" in shown.stdout
    assert run_cli("new-token", "--permissions", "drive").returncode == 1


@pytest.mark.parametrize("yaml_text, message", [
    ("auth: {users: [{name: a, password_hash: plain}]}", "auth.users[0].password_hash: not an argon2id hash"),
    ("auth: {users: [{name: a, password_hash: '$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo', permissions: [drive]}]}",
     "auth.users[0].permissions[0]: must be one of 'view', 'talk', 'control', 'metrics' or 'admin' (got 'drive')"),
    ("auth: {tokens: [{name: t, sha256: abc}]}", "auth.tokens[0].sha256: must be the SHA-256"),
    ("auth: {anonymous: [watch]}", "auth.anonymous[0]: must be one of"),
    ("auth: {allowed_origins: [evil]}", "auth.allowed_origins: 'evil' is not an origin"),
    ("auth: {users: [{name: 'a b', password_hash: '$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo'}]}",
     "auth.users[0].name: 'a b' is not a valid name"),
])
def test_auth_config_errors_name_the_key(yaml_text: str, message: str) -> None:
    from robotcam.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config(yaml_text)
    assert any(p.startswith(message) for p in caught.value.problems), caught.value.problems


def test_duplicate_users_are_an_error() -> None:
    from robotcam.config import ConfigError, parse_config

    entry = "{name: alice, password_hash: '" + FAST.hash("x") + "'}"
    with pytest.raises(ConfigError) as caught:
        parse_config(f"auth: {{users: [{entry}, {entry}]}}")
    assert caught.value.problems == ["auth.users[1].name: duplicate name 'alice'"]


async def test_stills_take_a_token_in_the_query_and_metrics_a_metrics_token(robot_factory: Any) -> None:
    """Home Assistant and <img src> cannot send a header: ?token= works for stills and streams
    (and nowhere else); Prometheus brings a token with `metrics`, which may do nothing more."""
    auth = auth_section()
    auth["tokens"].append({"name": "prometheus", "sha256": sha("prom-token-0123456789"), "permissions": ["metrics"]})
    robot = await robot_factory(make_config(auth=auth))
    jpeg = await robot.http.get(f"/snapshot.jpg?token={VIEW_TOKEN}")
    assert jpeg.status == 200 and jpeg.content_type == "image/jpeg"
    assert (await robot.http.get("/snapshot.jpg?token=wrong")).status == 401
    assert (await robot.http.get("/snapshot.jpg")).status == 401
    assert (await robot.http.get(f"/api/config?token={VIEW_TOKEN}")).status == 401, "headers only elsewhere"
    prom = {"Authorization": "Bearer prom-token-0123456789"}
    metrics = await robot.http.get("/metrics", headers=prom)
    assert metrics.status == 200 and "robotcam_login_failures_total" in await metrics.text()
    assert (await robot.http.get("/api/config", headers=prom)).status == 403
    assert (await robot.http.get("/metrics", headers={"Authorization": f"Bearer {VIEW_TOKEN}"})).status == 403


async def test_a_reload_can_turn_access_control_on(robot_factory: Any) -> None:
    """Off at start, on after a reload: sign-in works, and an unknown user is checked against
    a real hash like a known one (the reload makes that dummy hash before applying)."""
    from robotcam.service.reload import apply_reload

    old = make_config(audio={"source": "none"})
    robot = await robot_factory(old)
    assert (await robot.http.get("/api/config")).status == 200
    new = make_config(auth=auth_section(), audio={"source": "none"})
    await apply_reload(robot.daemon, old, new)
    assert robot.daemon.access.credentials._dummy.startswith("$argon2id$")
    assert (await robot.http.get("/api/config")).status == 401
    assert (await login(robot, "viewer"))[0] == 200
    assert (await login(robot, "nobody", "x"))[0] == 401
