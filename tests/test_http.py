"""The HTTP API: offers good and bad, the viewer limit, health, and viewers that vanish."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aioice.ice
import pytest

from robotcam import __version__
from tests.conftest import make_config
from tests.viewer import Viewer


async def a_valid_offer() -> str:
    viewer = Viewer()
    try:
        return (await viewer.offer())["sdp"]
    finally:
        await viewer.close()


def without_lines(sdp: str, prefix: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefix))


def only_unsupported_codecs(sdp: str) -> str:
    return sdp.replace("VP8/90000", "VP9/90000").replace("H264/90000", "H265/90000")


def audio_only(sdp: str) -> str:
    """Keep the session part and turn the video section into an audio one."""
    return sdp.replace("m=video", "m=audio").replace("VP8/90000", "opus/48000/2").replace(
        "H264/90000", "PCMU/8000"
    )


# (name, raw body or a function of a valid offer's SDP, expected status, words in the error)
BAD_OFFERS: list[tuple[str, Any, int, str]] = [
    ("empty body", b"", 400, "empty body"),
    ("not JSON", b"hello robot", 400, "not valid JSON"),
    ("not UTF-8", b"\xff\xfe\x00{", 400, "not valid JSON"),
    ("JSON array", b"[1, 2]", 400, "must be a JSON object"),
    ("JSON string", b'"v=0"', 400, "must be a JSON object"),
    ("missing type", lambda sdp: {"sdp": sdp}, 400, "missing field 'type'"),
    ("type answer", lambda sdp: {"sdp": sdp, "type": "answer"}, 400, "must be \"offer\""),
    ("type number", lambda sdp: {"sdp": sdp, "type": 5}, 400, "(got 5)"),
    ("missing sdp", {"type": "offer"}, 400, "missing field 'sdp'"),
    ("sdp number", {"type": "offer", "sdp": 42}, 400, "must be a string (got int)"),
    ("sdp list", {"type": "offer", "sdp": ["v=0"]}, 400, "must be a string (got list)"),
    ("sdp empty", {"type": "offer", "sdp": "  "}, 400, "is empty"),
    ("sdp garbage", {"type": "offer", "sdp": "hello"}, 400, "starts with 'v=0'"),
    ("sdp truncated", {"type": "offer", "sdp": "v=0\r\nm=video\r\n"}, 400, "invalid SDP"),
    ("no video", lambda sdp: {"sdp": audio_only(sdp), "type": "offer"}, 400, "no video section"),
    (
        "video sendonly",
        lambda sdp: {"sdp": sdp.replace("a=recvonly", "a=sendonly"), "type": "offer"},
        400, "must be recvonly or sendrecv",
    ),
    (
        "no ICE credentials",
        lambda sdp: {"sdp": without_lines(sdp, "a=ice-ufrag"), "type": "offer"},
        400, "invalid SDP offer",
    ),
    (
        "no DTLS fingerprint",
        lambda sdp: {"sdp": without_lines(sdp, "a=fingerprint"), "type": "offer"},
        400, "invalid SDP offer",
    ),
    (
        "no common codec",
        lambda sdp: {"sdp": only_unsupported_codecs(sdp), "type": "offer"},
        400, "H264 or VP8",
    ),
    ("oversized", lambda sdp: {"sdp": sdp + "a=x\r\n" * 40000, "type": "offer"}, 413, "too large"),
]


@pytest.mark.parametrize(
    "body,status,words", [case[1:] for case in BAD_OFFERS], ids=[case[0] for case in BAD_OFFERS]
)
async def test_bad_offer_gets_a_clear_json_error(robot, body, status, words) -> None:
    if callable(body):
        body = body(await a_valid_offer())
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await robot.http.post(
        "/offer", data=data, headers={"Content-Type": "application/json"}
    )
    assert response.status == status
    assert response.content_type == "application/json"
    error = (await response.json())["error"]
    assert words in error, error
    assert len(robot.daemon.peers) == 0


async def test_after_every_bad_offer_a_good_viewer_still_plays(robot) -> None:
    sdp = await a_valid_offer()
    for _, body, _, _ in BAD_OFFERS:
        body = body(sdp) if callable(body) else body
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = await robot.http.post("/offer", data=data)
        assert 400 <= response.status < 500
    assert len(robot.daemon.peers) == 0
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        await viewer.wait_frames(10)
    finally:
        await viewer.close()


async def test_offer_as_text_plain_like_the_seed_clients(robot) -> None:
    """RTCBot's client posts JSON with no Content-Type, to /connect."""
    viewer = Viewer()
    try:
        offer = await viewer.offer()
        response = await robot.http.post("/connect", data=json.dumps(offer))
        assert response.status == 200
        body = await response.json()
        assert body["type"] == "answer" and body["sdp"].startswith("v=0")
    finally:
        await viewer.close()


async def test_wrong_method_and_unknown_api_path_answer_json(robot) -> None:
    response = await robot.http.get("/offer")
    assert response.status == 405
    assert "error" in await response.json()
    response = await robot.http.get("/api/nothing-here")
    assert response.status == 404
    assert "error" in await response.json()


async def test_viewer_limit_answers_503_with_a_reason(robot_factory) -> None:
    robot = await robot_factory(make_config(webrtc={"max_peers": 2}))
    viewers = [Viewer(), Viewer()]
    extra = Viewer()
    try:
        for viewer in viewers:
            await viewer.connect(robot.post_offer)
            await viewer.wait_frames(3)
        status, body = await robot.post_offer(await extra.offer())
        assert status == 503
        assert "viewer limit reached (2)" in body["error"] and body["max_peers"] == 2
        status, health = await robot.health()
        assert health["status"] == "degraded" and health["peers"] == {
            **health["peers"], "count": 2, "max": 2
        }
        await viewers[0].close()
        deadline = time.monotonic() + 20
        while len(robot.daemon.peers) > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await extra.close()
        extra = Viewer()
        await extra.connect(robot.post_offer)
        await extra.wait_frames(5)
    finally:
        await asyncio.gather(*(v.close() for v in [*viewers, extra]))


async def test_health_reports_the_pipeline(robot) -> None:
    await asyncio.sleep(1.2)  # let the fps window fill
    status, body = await robot.health()
    assert status == 200
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["uptime"] > 0
    video = body["video"]
    assert video["source"] == "testpattern" and video["state"] == "running"
    assert video["fps_configured"] == 30
    assert 5 < video["fps_measured"] <= 40
    assert video["frames_produced"] > 10
    assert 0 <= video["last_frame_age"] < 2
    assert body["peers"]["count"] == 0 and body["peers"]["max"] == 16


async def test_viewer_that_vanishes_without_closing_is_cleaned_up(
    robot, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ICE consent freshness (RFC 7675) notices a silent peer; make aioice check often.
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.5)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", 3)
    viewer = Viewer()
    try:
        await viewer.connect(robot.post_offer)
        await viewer.wait_frames(5)
        assert len(robot.daemon.peers) == 1
        # the viewer's network goes away: its sockets close, nothing is said to the robot
        connection = viewer.pc.getTransceivers()[0].receiver.transport.transport._connection
        for protocol in list(connection._protocols):
            protocol.transport.close()
        deadline = time.monotonic() + 30
        while len(robot.daemon.peers) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert len(robot.daemon.peers) == 0
        assert robot.daemon.pipeline.encoders == {}
    finally:
        await viewer.close()


async def test_viewer_that_never_connects_is_dropped(robot_factory) -> None:
    robot = await robot_factory(make_config(webrtc={"connect_timeout": 1.0}))
    viewer = Viewer()
    try:
        status, _ = await robot.post_offer(await viewer.offer())  # answer never applied
        assert status == 200
        assert len(robot.daemon.peers) == 1
        deadline = time.monotonic() + 20
        while len(robot.daemon.peers) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert len(robot.daemon.peers) == 0
    finally:
        await viewer.close()


async def test_client_config_lists_ice_servers_for_the_page(robot_factory) -> None:
    robot = await robot_factory(make_config(webrtc={"ice_servers": [
        {"urls": "stun:stun.example.org:3478"},
        {"urls": ["turn:turn.example.org:3478"], "username": "robot", "credential": "pw"},
    ]}))
    response = await robot.http.get("/api/config")
    assert response.status == 200
    body = await response.json()
    assert body["iceServers"] == [
        {"urls": ["stun:stun.example.org:3478"]},
        {"urls": ["turn:turn.example.org:3478"], "username": "robot", "credential": "pw"},
    ]


async def test_answer_names_an_unguessable_session(robot) -> None:
    viewer = Viewer()
    try:
        response = await robot.http.post("/offer", json=await viewer.offer())
        body = await response.json()
        assert response.status == 200 and set(body) == {"sdp", "type"}  # nothing else in the body
        key = response.headers["X-Robotcam-Session"]
        assert len(key) >= 20
        session = robot.daemon.peers.by_key(key)
        assert session is not None and session.key == key
        assert robot.daemon.peers.by_key(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    finally:
        await viewer.close()
