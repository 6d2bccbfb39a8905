"""Generated hostile input at every surface (issue #14), each target against a real daemon:
the answer is a 4xx with a JSON error (WHEP: problem details; WebSocket: an error message or a
clean close; data channel: an error reply), never a 5xx; nothing is logged at ERROR; and a real
aiortc viewer plays afterwards. ROBOTCAM_FUZZ=long (scripts/fuzz.sh --long) tries ten times more.

Every crash these found is fixed in the code and kept here as an @example.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st

from robotcam.http.auth import COOKIE
from robotcam.config import ConfigError, parse_config
from tests.conftest import REPO, make_config
from tests.fuzz_strategies import (
    CHROME_OFFER, CONTENT_TYPES, HEADER_VALUES, JSON_VALUES, ODD_TEXT, headers, json_bodies,
    mutated_sdp, sdpfrags, yaml_configs,
)
from tests.fuzz_support import ServedDaemon, assert_json_error, fuzz_settings
from tests.signaling_support import RobotProgram, ice_credentials, sdpfrag, split_candidates
from tests.test_auth import PASSWORDS, PILOT_TOKEN, VIEW_TOKEN, auth_section
from tests.test_control import ControlViewer
from tests.viewer import Viewer

# Fuzzed offers may be accepted: many viewers, none ever connecting, none rate-limited.
FUZZ_WEBRTC = {"max_peers": 1000, "connect_timeout": 30}
FUZZ_AUTH_LIMITS = {"offers_per_minute": 0, "max_failed_logins": 1000, "lockout_seconds": 1}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedDaemon]:
    """One daemon (access control off, as in the other features' tests) for the module."""
    program = RobotProgram(tmp_path_factory.mktemp("fuzz") / "robot.sock")
    program.start()
    config = make_config(webrtc=FUZZ_WEBRTC, audio={"source": "tone"},
                         control={"enabled": True, "socket": str(program.path), "max_messages_per_second": 1000},
                         auth={"enabled": False, **FUZZ_AUTH_LIMITS})
    daemon = ServedDaemon(config).start()
    daemon.program = program  # type: ignore[attr-defined]
    yield daemon
    daemon.stop()
    program.stop()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedDaemon]:
    """A daemon with access control on: users with fast hashes, tokens, generous limits."""
    state = tmp_path_factory.mktemp("fuzz-auth")
    config = make_config(webrtc=FUZZ_WEBRTC, audio={"source": "none"},
                         auth=auth_section(state_directory=str(state), **FUZZ_AUTH_LIMITS))
    daemon = ServedDaemon(config).start()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def offers(served: ServedDaemon) -> list[str]:
    """Real offers to mutate: aiortc's (video only; video, audio and a data channel) and Chrome's."""
    async def make() -> list[str]:
        plain, full = Viewer(), ControlViewer()
        full.pc.addTransceiver("audio", direction="recvonly")
        try:
            return [(await plain.offer())["sdp"], (await full.offer())["sdp"]]
        finally:
            await plain.close()
            await full.close()
    return [*served.call(make()), CHROME_OFFER]


# --- POST /offer and /connect ------------------------------------------------------------------

def test_offer_and_connect_bodies_and_headers(served: ServedDaemon) -> None:
    @fuzz_settings(300)
    @given(path=st.sampled_from(["/offer", "/connect"]),
           body=json_bodies({"sdp": ODD_TEXT, "type": st.sampled_from(["offer", "answer", "pranswer", ""])}),
           extra=headers({"Content-Type": CONTENT_TYPES, "Content-Encoding": st.sampled_from(["gzip", "br", "identity"]),
                          "Accept": HEADER_VALUES}))
    # found: a body that does not decode as its Content-Encoding says was a 500
    @example(path="/offer", body=b'{"sdp": "v=0", "type": "offer"}', extra={"Content-Encoding": "gzip"})
    # found: an encoding aiohttp cannot decode was logged as an ERROR with a traceback
    @example(path="/connect", body=b"5+", extra={"Content-Encoding": "br"})
    def target(path: str, body: bytes, extra: dict[str, str]) -> None:
        assert_json_error(*served.request("POST", path, body, extra))
        served.assert_no_errors_logged()
    served.run_target(target)


# Offers that crashed aiortc's createAnswer (500s) before check_offer refused them.
NO_DIRECTION = CHROME_OFFER.replace("a=mid:1\r\n", "a=mid:1\r\n", 1).replace("a=recvonly\r\n", "")
NO_MID = CHROME_OFFER.replace("a=mid:1\r\n", "")
BUNDLE_UNKNOWN_MID = CHROME_OFFER.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 0 1 2 7")
UNKNOWN_KIND = CHROME_OFFER.replace("m=application", "m=aXpplication")
BAD_PORT = CHROME_OFFER.replace("127.0.0.1 51234 typ host", "127.0.0.1 -1 typ host")


def test_mutated_sdp_offers(served: ServedDaemon, offers: list[str]) -> None:
    @fuzz_settings(250)
    @given(sdp=mutated_sdp(offers))
    @example(sdp=NO_DIRECTION)  # found: a video section without a direction
    @example(sdp=NO_MID)  # found: a section without a=mid
    @example(sdp=BUNDLE_UNKNOWN_MID)  # found: BUNDLE naming a mid no section has
    @example(sdp=UNKNOWN_KIND)  # found (long mode): a section of a kind aiortc does not know
    # found (long mode, through WHEP): a candidate on port -1 made asyncio log a fatal write error
    @example(sdp=BAD_PORT)
    def target(sdp: str) -> None:
        status, reply_headers, body = served.request("POST", "/offer", json.dumps({"sdp": sdp, "type": "offer"}).encode(),
                                                     {"Content-Type": "application/json"})
        data = assert_json_error(status, reply_headers, body)
        if status == 200:
            data = json.loads(body)
            assert data["type"] == "answer" and data["sdp"].startswith("v=0"), data
            served.close_sessions()
        served.assert_no_errors_logged()
    served.run_target(target)


# --- WHEP --------------------------------------------------------------------------------------

def test_whep_post(served: ServedDaemon, offers: list[str]) -> None:
    @fuzz_settings(200)
    @given(sdp=st.one_of(mutated_sdp(offers).map(lambda s: s.encode()), st.binary(max_size=300),
                         mutated_sdp(offers).map(lambda s: s.encode("latin-1", "replace"))),
           content_type=st.one_of(st.just("application/sdp"), CONTENT_TYPES),
           extra=headers({"If-Match": HEADER_VALUES, "Accept": HEADER_VALUES}))
    # found (long mode): a Content-Type whose parameters the stdlib parser fails on was a 500
    @example(sdp=b"v=0", content_type="\xf4\xfb;\xa1\xcb7*", extra={})
    @example(sdp=BAD_PORT.encode(), content_type="application/sdp", extra={})  # found (long mode)
    def target(sdp: bytes, content_type: str, extra: dict[str, str]) -> None:
        status, reply_headers, body = served.request("POST", "/whep", sdp, {**extra, "Content-Type": content_type})
        assert_json_error(status, reply_headers, body, problem=True)
        if status == 201:
            assert reply_headers["content-type"].startswith("application/sdp"), reply_headers
            delete = served.request("DELETE", reply_headers["location"])
            assert delete[0] == 200, delete
        served.assert_no_errors_logged()
    served.run_target(target)


def test_whep_patch_and_delete(served: ServedDaemon, offers: list[str]) -> None:
    """PATCHes to a live session (fragments with right and wrong credentials, any If-Match and
    Content-Type) and to unknown ones; DELETEs of anything."""
    offer, candidates = split_candidates(offers[0])
    status, reply_headers, body = served.request("POST", "/whep", offer.encode(), {"Content-Type": "application/sdp"})
    assert status == 201, body
    location, etag = reply_headers["location"], reply_headers["etag"]
    ufrag, pwd = ice_credentials(offer)

    @fuzz_settings(250)
    @given(method=st.sampled_from(["PATCH", "PATCH", "PATCH", "DELETE", "PUT", "GET", "OPTIONS"]),
           where=st.one_of(st.just(location), st.just(location),
                           st.text("abcdefABCDEF0123456789-_", min_size=1, max_size=60).map(lambda t: "/whep/" + t)),
           body=st.one_of(sdpfrags(ufrag, pwd).map(str.encode), st.just(sdpfrag(offer, candidates).encode()),
                          st.binary(max_size=200)),
           content_type=st.one_of(st.just("application/trickle-ice-sdpfrag"), CONTENT_TYPES),
           if_match=st.one_of(st.none(), st.just(etag), st.just("*"), HEADER_VALUES))
    @example(method="PATCH", where=location, content_type="application/trickle-ice-sdpfrag", if_match=None,
             body=sdpfrag(offer, [("0", 0, "candidate:1 1 udp 2122260223 127.0.0.1 70000 typ host")]).encode())
    def target(method: str, where: str, body: bytes, content_type: str, if_match: str | None) -> None:
        if method == "DELETE" and where == location:
            where = location + "x"  # the live session stays for the other examples
        sent = {"Content-Type": content_type, **({"If-Match": if_match} if if_match is not None else {})}
        status, got, reply = served.request(method, where, body, sent)
        assert_json_error(status, got, reply, problem=True)
        served.assert_no_errors_logged()
    served.run_target(target)  # (fragments may end the session: candidates that fail ICE)


# --- WebSocket signaling -----------------------------------------------------------------------

def ws_messages(offer_sdp: str) -> Any:
    stripped, candidates = split_candidates(offer_sdp)
    candidate = st.fixed_dictionaries({}, optional={
        "candidate": st.one_of(st.just(candidates[0][2]) if candidates else st.none(), ODD_TEXT, JSON_VALUES),
        "sdpMid": st.one_of(st.just("0"), JSON_VALUES), "sdpMLineIndex": st.one_of(st.integers(-2, 5), JSON_VALUES),
    })
    text = st.one_of(
        st.just({"type": "offer", "sdp": stripped}),
        st.fixed_dictionaries({"type": st.just("offer")}, optional={"sdp": st.one_of(ODD_TEXT, JSON_VALUES)}),
        st.fixed_dictionaries({"type": st.just("candidate")}, optional={"candidate": st.one_of(st.none(), candidate, JSON_VALUES)}),
        st.just({"type": "bye"}),
        st.fixed_dictionaries({"type": st.one_of(ODD_TEXT, JSON_VALUES)}),
        JSON_VALUES,
    ).map(json.dumps)
    return st.lists(st.one_of(text, ODD_TEXT, st.binary(max_size=50), st.integers(70_000, 200_000).map(lambda n: "x" * n)),
                    max_size=5)


def test_websocket_messages(served: ServedDaemon, offers: list[str]) -> None:
    """Any sequence (candidate before offer, two offers, binary frames, oversized) gets error
    messages, an answer, a bye or a clean close, and never an internal error."""
    async def exchange(messages: list[str | bytes]) -> list[Any]:
        assert served.http is not None
        replies: list[Any] = []
        async with served.http.ws_connect("/ws") as ws:
            for message in messages:
                if ws.closed:
                    break
                await (ws.send_bytes(message) if isinstance(message, bytes) else ws.send_str(message))
            if not ws.closed:
                await ws.send_str('{"type": "probe"}')  # answered in order: marks the end
            while True:
                reply = await ws.receive(timeout=30)
                if reply.type != aiohttp.WSMsgType.TEXT:
                    replies.append(("close", ws.close_code))
                    break
                data = json.loads(reply.data)
                replies.append(data)
                if data.get("type") == "error" and "probe" in data.get("error", ""):
                    break
        return replies

    @fuzz_settings(150)
    @given(messages=ws_messages(offers[0]))
    @example(messages=['{"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host"}}',
                       '{"type": "bye"}'])
    def target(messages: list[str | bytes]) -> None:
        for reply in served.call(exchange(messages)):
            if isinstance(reply, tuple):
                assert reply[1] in (None, 1000, 1001, 1009), reply  # never 1011 (internal error)
            else:
                assert isinstance(reply, dict) and reply.get("type") in ("answer", "error", "bye"), reply
                if reply["type"] == "error":
                    assert isinstance(reply.get("error"), str) and 400 <= reply.get("status", 0) < 500, reply
        served.close_sessions()
        served.assert_no_errors_logged()
    served.run_target(target)


# --- the control data channel ------------------------------------------------------------------

def test_control_channel_messages(served: ServedDaemon) -> None:
    """Anything on the `control` channel reaches the robot program as a JSON object or gets an
    error reply; the viewer stays connected throughout."""
    program: RobotProgram = served.program  # type: ignore[attr-defined]

    async def start() -> ControlViewer:
        viewer = ControlViewer()  # made in the daemon's loop: aiortc binds to the running loop
        await viewer.connect(served.post_offer)
        await asyncio.wait_for(viewer.opened.wait(), 30)
        return viewer

    async def send(message: str | bytes, probe: int) -> list[Any]:
        """The message, then a probe the program must get: messages are handled in order."""
        viewer.send(message)
        viewer.send({"type": "probe", "n": probe})
        await asyncio.sleep(0.01)
        replies = []
        while not viewer.inbox.empty():
            replies.append(viewer.inbox.get_nowait())
        return replies

    def until_probe(probe: int) -> list[dict[str, Any]]:
        forwarded = []
        while (got := program.next_message(30)) != {"type": "probe", "n": probe, "viewer": session_id}:
            forwarded.append(got)
        return forwarded

    viewer = served.call(start())
    session_id = max(served.daemon.peers.sessions)
    probes = iter(range(10**9))

    @fuzz_settings(200)
    @given(message=st.one_of(JSON_VALUES.map(json.dumps), ODD_TEXT, st.binary(max_size=100),
                             st.fixed_dictionaries({"type": st.sampled_from(["drive", "stop", "telemetry"])},
                                                   optional={"linear": JSON_VALUES, "angular": JSON_VALUES,
                                                             "viewer": JSON_VALUES, "user": JSON_VALUES}).map(json.dumps),
                             st.integers(4000, 70_000).map(lambda n: json.dumps({"type": "drive", "pad": "x" * n}))))
    def target(message: str | bytes) -> None:
        probe = next(probes)
        for reply in served.call(send(message, probe)):
            assert isinstance(reply, dict) and reply.get("type") == "error" and isinstance(reply.get("error"), str), reply
        for forwarded in until_probe(probe):
            assert isinstance(forwarded, dict) and forwarded.get("viewer") == session_id, forwarded
        assert session_id in served.daemon.peers.sessions, "the viewer was dropped"
        served.assert_no_errors_logged()

    try:
        served.run_target(target)
    finally:
        served.call(viewer.close())


# --- access control: sign-in, credentials, talk ------------------------------------------------

ROUTES = ["/health", "/api/config", "/offer", "/whep", "/ws", "/api/events", "/api/talk", "/api/session",
          "/api/login", "/api/logout", "/", "/nope", "/static/../../etc/passwd"]


def test_sign_in_and_credential_headers(secured: ServedDaemon) -> None:
    """/api/login bodies, and Authorization/Cookie/Origin headers on every route: 401/403/429
    with JSON, never a 5xx; real credentials keep working."""
    credential = st.one_of(
        st.sampled_from([f"Bearer {VIEW_TOKEN}", f"Bearer {PILOT_TOKEN}", "Bearer", "Bearer ", "Basic dXNlcjpwdw==",
                         "bearer " + VIEW_TOKEN, "Bearer " + VIEW_TOKEN + " extra", "Digest x"]),
        HEADER_VALUES, HEADER_VALUES.map(lambda t: "Bearer " + t))
    cookie = st.one_of(HEADER_VALUES, HEADER_VALUES.map(lambda t: f"{COOKIE}={t}"),
                       st.just(f"{COOKIE}=a; {COOKIE}=b"), st.just(f"{COOKIE}="))

    @fuzz_settings(300)
    @given(method=st.sampled_from(["GET", "POST", "POST", "DELETE", "PATCH"]), path=st.sampled_from(ROUTES),
           body=json_bodies({"username": st.sampled_from(sorted(PASSWORDS)) | ODD_TEXT,
                             "password": st.sampled_from(sorted(PASSWORDS.values())) | ODD_TEXT,
                             "session": ODD_TEXT, "action": st.sampled_from(["start", "stop"])}),
           extra=headers({"Authorization": credential, "Cookie": cookie, "Origin": st.one_of(
               st.sampled_from(["null", "http://evil.example", f"http://127.0.0.1:{secured.port}"]), HEADER_VALUES),
               "Content-Type": CONTENT_TYPES, "X-Forwarded-For": HEADER_VALUES}))
    @example(method="POST", path="/api/login", body=b'{"username": "admin", "password": "pw-admin"}', extra={})
    # found (long mode): a token that is not UTF-8 (latin-1 bytes in the header) was a 500
    @example(method="POST", path="/api/login", body=b"{}", extra={"Authorization": "Bearer \xf6o"})
    def target(method: str, path: str, body: bytes, extra: dict[str, str]) -> None:
        status, got, reply = secured.request(method, path, body if method != "GET" else None, extra)
        if path.startswith("/api/") or path in ("/offer", "/health"):
            assert_json_error(status, got, reply)
        else:
            assert status < 500, (status, reply[:200])
        secured.assert_no_errors_logged()

    secured.run_target(target, headers={"Authorization": f"Bearer {VIEW_TOKEN}"})
    # the right password still signs in (the lockout did not stay)
    status, _, reply = secured.request("POST", "/api/login", json.dumps(
        {"username": "viewer", "password": PASSWORDS["viewer"]}).encode(), {"Content-Type": "application/json"})
    assert status in (200, 429), reply


# --- configuration: parse_config, check-config, reload -----------------------------------------

@fuzz_settings(600)
@given(text=yaml_configs())
@example(text="x: &a [*a]\n")
@example(text="audio: {}\nt: 2026-13-45\n")  # found: PyYAML's ValueError escaped parse_config
def test_parse_config_raises_only_config_error(text: str) -> None:
    try:
        parse_config(text, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml"), exc


def test_check_config_cli_exits_0_or_1(tmp_path: Path) -> None:
    @fuzz_settings(6)
    @given(text=yaml_configs())
    @example(text="video: {fps: 0}\n")
    def target(text: str) -> None:
        path = tmp_path / "fuzz.yaml"
        path.write_text(text)
        result = subprocess.run([sys.executable, "-m", "robotcam", "check-config", str(path)],
                                cwd=REPO, capture_output=True, text=True, timeout=60)
        assert result.returncode in (0, 1), (result.returncode, result.stdout, result.stderr)
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
    target()


def test_reload_with_random_files(tmp_path: Path) -> None:
    """SIGHUP's path (Service.reload) with a random file: refused and the old config kept, or
    applied; the daemon keeps serving either way."""
    path = tmp_path / "robotcam.yaml"
    base = {"server": {"host": "127.0.0.1", "port": 8080},
            "video": {"source": "testpattern", "width": 160, "height": 120, "fps": 15},
            "webrtc": {"host_addresses": ["127.0.0.1"], "ice_servers": []}, "auth": {"enabled": False}}
    path.write_text(yaml.safe_dump(base))
    daemon = ServedDaemon(parse_config(path.read_text()), path).start()
    daemon.errors.allowed = ("reload refused, keeping the running config",
                             "reload: the new video settings could not be applied")
    try:
        @fuzz_settings(40)
        @given(text=yaml_configs())
        def target(text: str) -> None:
            path.write_text(text)
            assert daemon.service is not None
            applied = daemon.call(daemon.service.reload())
            try:
                parse_config(text)
                valid = True
            except ConfigError:
                valid = False
            if not valid:
                assert applied is False
            daemon.assert_no_errors_logged()
            path.write_text(yaml.safe_dump(base))  # back to a working config for the next example
            daemon.call(daemon.service.reload())
        daemon.run_target(target)
    finally:
        daemon.stop()
