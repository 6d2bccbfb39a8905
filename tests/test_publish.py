"""Publishing over WHIP (issue #13) against an endpoint the test controls: a real aiortc receiver
decodes what robotcam sends; canned errors check the backoff, the log and that nothing leaks."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import psutil
import pytest
import yaml
from aiortc import RTCPeerConnection

from robotcam.cli import main
from robotcam.config import ConfigError, load_config, parse_config
from robotcam.service.notify import SystemdNotifier
from robotcam.publish import PublishTiming
from robotcam.publish.whip import parse_retry_after
from robotcam.service.reload import changed_keys
from robotcam.service.runner import Service
from tests.conftest import Robot, make_config, wait_until
from tests.viewer import Viewer, advancing
from tests.whip_support import WhipEndpoint

FAST = PublishTiming(
    backoff_first=0.2, backoff_max=1.0, config_error_backoff=3.0, connect_timeout=3.0,
    ack_timeout=5.0, request_timeout=3.0, check_interval=0.2,
)


@pytest.fixture
async def endpoint():
    async with WhipEndpoint() as server:
        yield server


async def publishing_robot(robot_factory: Any, *entries: dict[str, Any], timing: PublishTiming = FAST, **sections: Any) -> Robot:
    config = make_config(audio={"source": "none"}, publish=list(entries), **sections)
    return await robot_factory(config, publish_timing=timing)


def publishers(robot: Robot) -> list[dict[str, Any]]:
    return robot.daemon.publish.health()["publishers"]


def open_peer_connections() -> int:
    """RTCPeerConnections not closed (the test endpoint's own receivers included)."""
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, RTCPeerConnection) and o.connectionState != "closed")


def udp_sockets() -> int:
    return len(psutil.Process().net_connections(kind="udp"))


def publish_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if (t.get_name() or "").startswith("robotcam-publish")]


# --- config -------------------------------------------------------------------------------------

def test_publish_entries_are_validated_with_clear_messages() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            "publish:\n"
            "  - {url: http://a.example/whip, camera: rear}\n"
            "  - {url: rtmp://b.example/live}\n"
            "  - {url: http://a.example/whip}\n"
        )
    text = str(caught.value)
    assert "publish[0].camera: unknown camera 'rear': known cameras are main" in text
    assert "publish[1].url: must be an http:// or https:// WHIP endpoint URL (got 'rtmp://b.example/live')" in text
    with pytest.raises(ConfigError) as caught:
        parse_config("publish: [{url: http://a.example/whip}, {url: http://a.example/whip, token: x}]")
    assert "publish[1].url: http://a.example/whip is listed twice" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        parse_config("publish: [{url: 'http://u:p@a.example/whip', token: x}]")
    assert "publish[0].token: give either a token (Authorization: Bearer) or user:password in the URL, not both" in str(caught.value)
    config = parse_config("publish: [{url: https://m.example/r/whip, camera: main, audio: false}, {url: http://n/whip}]")
    assert [e.camera for e in config.publish] == ["main", ""]


def test_config_command_masks_the_token_and_url_secrets(tmp_path, capsys) -> None:
    path = tmp_path / "robotcam.yaml"
    path.write_text(
        "publish:\n"
        "  - {url: 'https://m.example/whip?key=sk-123', token: tok-secret}\n"
        "  - {url: 'https://bob:pw1@n.example/whip'}\n"
    )
    assert main(["config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tok-secret" not in out and "pw1" not in out and "sk-123" not in out
    assert "https://m.example/whip?key=***" in out and "https://bob:***@n.example/whip" in out
    assert "token: '**********'" in out


def test_reload_log_lines_show_publish_changes_without_secrets() -> None:
    old = parse_config("publish: [{url: 'http://m/whip?key=k1', token: t1}]")
    new = parse_config("publish: [{url: 'http://m/whip?key=k1', token: t2}]")
    changes = changed_keys(old, new)
    assert "publish" in changes and "t1" not in str(changes) and "t2" not in str(changes) and "k1" not in str(changes)
    assert changed_keys(new, new) == {}
    added = changed_keys(parse_config(""), new)
    assert added["publish"][0] == [] and added["publish"][1][0]["url"] == "http://m/whip?key=***"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None
    assert parse_retry_after("999999") == 3600.0


# --- publishing -------------------------------------------------------------------------------

async def test_publishes_the_shared_encoders_packets_and_health_shows_it(robot_factory, endpoint) -> None:
    robot = await publishing_robot(robot_factory, {"url": endpoint.url(), "token": "tok-1"}, webrtc={"max_peers": 1})
    endpoint.token = "tok-1"
    await wait_until(lambda: publishers(robot)[0]["state"] == "connected", 20, "publisher connected")
    receiver = next(iter(endpoint.receivers.values()))
    await wait_until(lambda: len(receiver.numbers) >= 30, 20, "frames at the media server")
    assert advancing(receiver.numbers)
    # A local viewer shares the same encoder, and the publisher took no viewer slot (max_peers 1).
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        await viewer.wait_frames(10)
        assert list(robot.daemon.pipeline.encoders) == ["H264"]
        assert robot.daemon.pipeline.encoders["H264"].contexts_opened == 1
        assert len(robot.daemon.peers) == 1
        await wait_until(lambda: publishers(robot)[0]["bitrate_kbps"] > 0, 10, "bitrate measured")
        status, health = await robot.health()
        assert status == 200 and health["status"] == "degraded"  # the viewer limit (1) is reached
        entry = health["publish"]["publishers"][0]
        assert entry["url"] == endpoint.url() and entry["state"] == "connected" and entry["codec"] == "H264"
        assert entry["server"].startswith("127.0.0.1:") and entry["uptime"] >= 0 and entry["reconnects"] == 0
        assert "tok-1" not in str(health)
        # The server's PLI reaches the shared encoder, as a viewer's does.
        encoder = robot.daemon.pipeline.encoders["H264"]
        rtp_receiver = receiver.pc.getReceivers()[0]
        ssrc = rtp_receiver.getSynchronizationSources()[0].source
        await asyncio.sleep(0.5)  # past the encoder's keyframe rate limit
        forced = encoder.keyframes_forced
        await rtp_receiver._send_rtcp_pli(ssrc)
        await wait_until(lambda: encoder.keyframes_forced > forced, 10, "keyframe forced by the server's PLI")
    finally:
        await viewer.close()
    post = endpoint.of("POST")[0]
    assert post.headers["Content-Type"] == "application/sdp" and post.headers["Authorization"] == "Bearer tok-1"
    assert "a=sendonly" in post.body


async def test_sound_is_published_from_the_shared_opus_encoder(robot_factory, endpoint) -> None:
    robot = await robot_factory(
        make_config(audio={"source": "tone"}, publish=[{"url": endpoint.url()}]), publish_timing=FAST
    )
    await wait_until(lambda: publishers(robot)[0]["state"] == "connected", 20, "publisher connected")
    receiver = next(iter(endpoint.receivers.values()))
    await wait_until(lambda: receiver.audio_frames >= 20, 20, "sound at the media server")
    assert robot.daemon.audio.health()["encoder"] is not None  # the shared Opus encoder runs
    assert "m=audio" in endpoint.of("POST")[0].body


async def test_shutdown_deletes_the_session(robot_factory, endpoint) -> None:
    robot = await publishing_robot(robot_factory, {"url": endpoint.url()})
    await wait_until(lambda: publishers(robot)[0]["state"] == "connected", 20, "publisher connected")
    started = time.monotonic()
    await robot.daemon.stop()
    assert time.monotonic() - started < 4.0  # service.SHUTDOWN_BUDGET
    deletes = endpoint.of("DELETE")
    assert [d.path for d in deletes] == ["/session/1"]  # the relative Location, resolved
    assert publish_tasks() == [] and open_peer_connections() == 0
    await robot.daemon.start()  # the fixture stops it again


async def test_reload_adds_removes_and_changes_entries_without_touching_viewers(robot_factory, endpoint) -> None:
    robot = await publishing_robot(robot_factory)
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        await viewer.wait_frames(5)
        config = make_config(audio={"source": "none"}, publish=[{"url": endpoint.url()}])
        robot.daemon.apply_config(config)
        await wait_until(lambda: publishers(robot) and publishers(robot)[0]["state"] == "connected", 20, "added publisher connected")
        # a changed token: the old session ends (DELETE) before the new one starts
        changed = make_config(audio={"source": "none"}, publish=[{"url": endpoint.url(), "token": "new"}])
        robot.daemon.apply_config(changed)
        await wait_until(lambda: len(endpoint.of("POST")) == 2, 20, "reconnected with the new token")
        assert endpoint.requests.index(endpoint.of("DELETE")[0]) < endpoint.requests.index(endpoint.of("POST")[1])
        assert endpoint.of("POST")[1].headers["Authorization"] == "Bearer new"
        await wait_until(lambda: publishers(robot)[0]["state"] == "connected", 20, "changed publisher connected")
        robot.daemon.apply_config(make_config(audio={"source": "none"}))
        await wait_until(lambda: len(endpoint.of("DELETE")) == 2, 10, "DELETE on removal")
        assert publishers(robot) == []
        await wait_until(lambda: not publish_tasks(), 10, "publisher tasks ended")
        # the local viewer never noticed
        assert len(robot.daemon.peers) == 1
        count = len(viewer.numbers)
        assert advancing(await viewer.wait_frames(count + 10))
    finally:
        await viewer.close()


async def test_a_reload_of_the_config_file_starts_and_stops_publishing(tmp_path, endpoint, caplog) -> None:
    path = tmp_path / "robotcam.yaml"

    def write(**sections: Any) -> None:
        path.write_text(yaml.safe_dump(make_config(audio={"source": "none"}, **sections).model_dump(mode="json")))

    write()
    service = Service(load_config(path), path, notifier=SystemdNotifier(None))
    service.daemon.publish.timing = FAST
    await service.daemon.start()
    try:
        write(publish=[{"url": endpoint.url(), "token": "tok-9"}])
        path.write_text(path.read_text().replace("token: '**********'", "token: tok-9"))  # dumped masked
        with caplog.at_level(logging.INFO, logger="robotcam"):
            assert await service.reload() is True
        assert "reload: publish: [] -> [{'url': '" + endpoint.url() + "', 'token': '**********'" in caplog.text
        assert "tok-9" not in caplog.text
        await wait_until(lambda: service.daemon.publish.health()["publishers"][0]["state"] == "connected", 20, "publishing")
        assert endpoint.of("POST")[0].headers["Authorization"] == "Bearer tok-9"
        write()
        assert await service.reload() is True
        await wait_until(lambda: endpoint.of("DELETE"), 10, "DELETE after the entry was removed")
        assert service.daemon.publish.health()["publishers"] == []
    finally:
        await service.daemon.stop()


async def test_redirects_are_followed_with_the_offer_and_trickle_uses_patch(robot_factory, endpoint) -> None:
    endpoint.trickle = True
    robot = await publishing_robot(robot_factory, {"url": endpoint.url("/old/robot7")})
    await wait_until(lambda: publishers(robot)[0]["state"] == "connected", 20, "publisher connected")
    posts = endpoint.of("POST")
    assert [p.path for p in posts] == ["/old/robot7", "/whip/robot7"]  # 308: method and body kept
    assert posts[1].body == posts[0].body and posts[1].body.startswith("v=0")
    await wait_until(lambda: endpoint.of("PATCH"), 10, "trickle PATCH")
    patch = endpoint.of("PATCH")[0]
    assert patch.path == "/session/1" and patch.headers["Content-Type"] == "application/trickle-ice-sdpfrag"
    assert patch.headers["If-Match"] == '"etag-1"' and "a=end-of-candidates" in patch.body
    assert "a=ice-ufrag:" in patch.body


async def test_the_servers_ice_servers_from_link_headers_are_used(robot_factory, endpoint, caplog) -> None:
    # Nothing answers on port 9: gathering gives up after webrtc.gather_timeout, host candidates work.
    endpoint.links = [
        '<stun:127.0.0.1:9>; rel="ice-server"',
        '<turn:127.0.0.1:9?transport=udp>; rel="ice-server"; username="robot7"; credential="s3cret"; credential-type="password"',
    ]
    robot = await publishing_robot(robot_factory, {"url": endpoint.url()}, webrtc={"gather_timeout": 0.5})
    await wait_until(lambda: publishers(robot)[0]["state"] == "connected", 20, "publisher connected")
    publisher = next(iter(robot.daemon.publish.publishers.values()))
    servers = publisher._rtc_configuration().iceServers
    assert [(s.urls, s.username, s.credential) for s in servers] == [
        ("stun:127.0.0.1:9", None, None), ("turn:127.0.0.1:9?transport=udp", "robot7", "s3cret"),
    ]
    assert endpoint.requests[0].method == "OPTIONS"  # asked before the offer
    assert "s3cret" not in str(publishers(robot))


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("status, text", [
    (401, "POST answered 401 Unauthorized: bad token (check publish[].token)"),
    (404, "POST answered 404 Not Found (check publish[].url: no such WHIP endpoint or stream path)"),
])
async def test_configuration_errors_are_logged_once_and_retried_slowly(robot_factory, endpoint, caplog, status, text) -> None:
    endpoint.mode, endpoint.status, endpoint.body = "status", status, "bad token" if status == 401 else ""
    timing = PublishTiming(**{**FAST.__dict__, "config_error_backoff": 1.5})
    with caplog.at_level(logging.DEBUG, logger="robotcam.publish"):
        robot = await publishing_robot(robot_factory, {"url": endpoint.url()}, timing=timing)
        await wait_until(lambda: len(endpoint.of("POST")) >= 3, 15, "three attempts")
        # the endpoint records a POST before the publisher has read its answer
        await wait_until(lambda: publishers(robot)[0]["state"] == "failed", 5, "the third answer read")
    posts = endpoint.of("POST")
    gaps = [b.at - a.at for a, b in zip(posts, posts[1:])]
    assert min(gaps) >= 1.4, gaps  # the long backoff, not 0.2 s doubling
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and "publish[0]" in r.getMessage()]
    assert len(errors) == 1 and text in errors[0].getMessage()
    entry = publishers(robot)[0]
    assert entry["state"] == "failed" and text in entry["reason"] and entry["reconnects"] >= 2
    status_code, health = await robot.health()
    assert status_code == 200 and health["status"] == "degraded"  # never failing


async def test_429_waits_what_retry_after_says(robot_factory, endpoint) -> None:
    endpoint.mode, endpoint.status, endpoint.headers = "status", 429, {"Retry-After": "2"}
    robot = await publishing_robot(robot_factory, {"url": endpoint.url()})
    await wait_until(lambda: len(endpoint.of("POST")) >= 2, 15, "a second attempt")
    await asyncio.sleep(0.1)
    entry = publishers(robot)[0]
    assert entry["state"] == "backoff" and "429" in entry["reason"]
    posts = endpoint.of("POST")
    assert posts[1].at - posts[0].at >= 1.9  # not FAST's 0.2 s
    endpoint.mode = "accept"  # the server has room again
    await wait_until(lambda: publishers(robot)[0]["state"] == "connected", 20, "connected after 429s")


@pytest.mark.parametrize("mode, reason", [
    ("not-sdp", "the body is not an SDP answer"),
    ("no-location", "201 without a Location header"),
    ("ok-200", "POST answered 200 instead of 201 Created"),
    ("unreachable", "not connected 3 s after the answer"),
])
async def test_garbage_answers_back_off_and_leak_nothing(robot_factory, endpoint, caplog, mode, reason) -> None:
    endpoint.mode = mode
    udp_before = udp_sockets()
    # a 2xx other than 201 is not a WHIP endpoint at all: the configuration's long backoff
    state, log_words, min_gap = ("failed", "configuration problem", 1.4) if mode == "ok-200" else ("backoff", "reconnecting in", 0.35)
    timing = PublishTiming(**{**FAST.__dict__, "config_error_backoff": 1.5})
    with caplog.at_level(logging.INFO, logger="robotcam.publish"):
        robot = await publishing_robot(robot_factory, {"url": endpoint.url()}, timing=timing)
        await wait_until(lambda: len(endpoint.of("POST")) >= 3, 30, "three attempts")
        await wait_until(lambda: publishers(robot)[0]["state"] == state, 10, state)
    entry = publishers(robot)[0]
    assert reason in entry["reason"] and entry["ok"] is False
    assert any(reason in r.getMessage() and log_words in r.getMessage() for r in caplog.records)
    posts = endpoint.of("POST")
    gaps = [b.at - a.at for a, b in zip(posts, posts[1:])]
    assert gaps[1] >= min_gap  # doubling: 0.2 s, then 0.4 s (or the long one)
    # nothing left from the failed attempts: at most the one being tried now
    assert open_peer_connections() <= 1
    assert len(publish_tasks()) == 1
    assert udp_sockets() <= udp_before + 2
    if mode == "unreachable":  # a session was created: it is deleted before the next try
        assert len(endpoint.of("DELETE")) >= 2
    await robot.daemon.stop()
    assert open_peer_connections() == 0 and publish_tasks() == []
    assert robot.daemon.publish._http is None
    await robot.daemon.start()


async def test_a_server_that_goes_away_is_reconnected_and_viewers_never_notice(robot_factory, endpoint, caplog) -> None:
    caplog.set_level(logging.INFO, logger="robotcam.publish")
    robot = await publishing_robot(robot_factory, {"url": endpoint.url()}, timing=PublishTiming(**{**FAST.__dict__, "ack_timeout": 2.0}))
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        await wait_until(lambda: publishers(robot)[0]["state"] == "connected", 20, "publisher connected")
        # the media server's session ends (a crash without a word: test_publish_janus.py)
        for receiver in list(endpoint.receivers.values()):
            await receiver.close()
        frames = len(viewer.numbers)
        await wait_until(lambda: len(endpoint.of("POST")) >= 2, 20, "reconnect attempt")
        await wait_until(lambda: publishers(robot)[0]["state"] == "connected", 20, "connected again")
        assert publishers(robot)[0]["reconnects"] >= 1
        assert "the connection closed; reconnecting in" in caplog.text  # its DTLS close_notify
        assert len(robot.daemon.peers) == 1
        await viewer.wait_frames(frames + 30)
        assert advancing(viewer.numbers[frames:])
    finally:
        await viewer.close()
