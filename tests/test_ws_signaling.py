"""WebSocket signaling at /ws: an aiortc client that trickles its candidates, bad messages,
and the socket and the peer ending together (either way, and on server shutdown)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
from aiohttp import WSCloseCode, WSMsgType
from aiortc import RTCSessionDescription

from tests.conftest import Robot, make_config, wait_until
from tests.signaling_support import split_candidates
from tests.viewer import Viewer

RECEIVE_TIMEOUT = 15.0


async def receive_json(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    message = await ws.receive(timeout=RECEIVE_TIMEOUT)
    assert message.type == WSMsgType.TEXT, (message.type, message.data, message.extra)
    return json.loads(message.data)


async def trickle_connect(ws: aiohttp.ClientWebSocketResponse, viewer: Viewer) -> dict[str, Any]:
    """Offer without candidates, then each candidate, then end-of-candidates."""
    offer = await viewer.offer()
    stripped, candidates = split_candidates(offer["sdp"])
    assert candidates and "a=candidate" not in stripped
    await ws.send_json({"type": "offer", "sdp": stripped})
    for mid, index, candidate in candidates:
        await ws.send_json({"type": "candidate",
                            "candidate": {"candidate": candidate, "sdpMid": mid, "sdpMLineIndex": index}})
    await ws.send_json({"type": "candidate", "candidate": None})
    answer = await receive_json(ws)
    assert answer["type"] == "answer" and answer["sdp"].startswith("v=0"), answer
    await viewer.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
    return answer


async def test_trickled_candidates_play_and_closing_the_socket_ends_the_peer(robot: Robot) -> None:
    viewer = Viewer()
    try:
        async with robot.http.ws_connect("/ws") as ws:
            answer = await trickle_connect(ws, viewer)
            assert robot.daemon.peers.by_key(answer["session"]) is not None
            numbers = await viewer.wait_frames(10)
            decoded = [n for n in numbers if n is not None]
            assert len(decoded) >= 5 and decoded == sorted(decoded), numbers
            _, health = await robot.health()
            assert [s["signaling"] for s in health["peers"]["sessions"]] == ["websocket"]
        # The socket is closed: the peer goes with it.
        await wait_until(lambda: len(robot.daemon.peers) == 0, what="the session ends with its socket")
        await wait_until(lambda: robot.daemon.peers.tasks == 0, what="watcher tasks end")
    finally:
        await viewer.close()


async def test_bad_messages_get_errors_and_the_socket_stays_open(robot_factory: Any) -> None:
    robot: Robot = await robot_factory(make_config(server={"max_body_bytes": 16384}))
    viewer = Viewer()
    try:
        async with robot.http.ws_connect("/ws") as ws:
            cases: list[tuple[Any, str, int]] = [
                ("not json", "not valid JSON", 400),
                ([1, 2], "JSON object", 400),
                ({"type": "hello"}, "unknown message type", 400),
                ({"sdp": "v=0"}, "unknown message type", 400),
                ({"type": "answer", "sdp": "v=0"}, "send an offer", 400),
                ({"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
                                                     "sdpMid": "0"}}, "offer before", 409),
                ({"type": "offer"}, '"sdp"', 400),
                ({"type": "offer", "sdp": 42}, '"sdp"', 400),
                ({"type": "offer", "sdp": "hello"}, "v=0", 400),
            ]
            for message, expected, status in cases:
                if isinstance(message, str):
                    await ws.send_str(message)
                else:
                    await ws.send_json(message)
                reply = await receive_json(ws)
                assert reply["type"] == "error" and expected in reply["error"], (message, reply)
                assert reply["status"] == status, (message, reply)
            await ws.send_bytes(b"\x00\x01")
            assert "binary" in (await receive_json(ws))["error"]

            # Still open: a good offer on the same socket works.
            await trickle_connect(ws, viewer)
            # Bad candidates are answered too, and the peer stays.
            for candidate, expected in [
                ({"candidate": "candidate:garbage"}, "sdpMid"),
                ({"candidate": "candidate:garbage", "sdpMid": "0"}, "not an ICE candidate"),
                ({"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMLineIndex": -1}, "sdpMLineIndex"),
                ("candidate:1", '"candidate" must be'),
            ]:
                await ws.send_json({"type": "candidate", "candidate": candidate})
                reply = await receive_json(ws)
                assert reply["type"] == "error" and expected in reply["error"], (candidate, reply)
            await ws.send_json({"type": "offer", "sdp": "v=0"})
            assert (await receive_json(ws))["status"] == 409  # one peer per socket
            await viewer.wait_frames(5)
            assert len(robot.daemon.peers) == 1

            # A message over max_msg_size (server.max_body_bytes) closes the socket: 1009.
            await ws.send_str(json.dumps({"type": "offer", "sdp": "x" * 20000}))
            closing = await ws.receive(timeout=RECEIVE_TIMEOUT)
            assert closing.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING), closing
            assert ws.close_code == WSCloseCode.MESSAGE_TOO_BIG, ws.close_code
        await wait_until(lambda: len(robot.daemon.peers) == 0, what="the session ends with its socket")
    finally:
        await viewer.close()


async def test_bye_ends_peer_and_socket(robot: Robot) -> None:
    viewer = Viewer()
    try:
        async with robot.http.ws_connect("/ws") as ws:
            await trickle_connect(ws, viewer)
            await viewer.wait_frames(3)
            await ws.send_json({"type": "bye"})
            message = await ws.receive(timeout=RECEIVE_TIMEOUT)
            assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED), message
            assert ws.close_code == WSCloseCode.OK
        await wait_until(lambda: len(robot.daemon.peers) == 0, what="bye ends the session")
    finally:
        await viewer.close()


async def test_a_peer_that_fails_closes_its_socket(robot_factory: Any) -> None:
    """No candidates ever arrive: the daemon gives up after connect_timeout, says bye, closes."""
    robot: Robot = await robot_factory(make_config(webrtc={"connect_timeout": 1.0}))
    viewer = Viewer()
    try:
        async with robot.http.ws_connect("/ws") as ws:
            offer = await viewer.offer()
            stripped, _ = split_candidates(offer["sdp"])
            await ws.send_json({"type": "offer", "sdp": stripped})
            assert (await receive_json(ws))["type"] == "answer"
            bye = await receive_json(ws)
            assert bye["type"] == "bye" and "closed" in bye["reason"], bye
            message = await ws.receive(timeout=RECEIVE_TIMEOUT)
            assert message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED), message
        assert len(robot.daemon.peers) == 0
    finally:
        await viewer.close()


async def test_server_shutdown_says_going_away(robot: Robot) -> None:
    viewer = Viewer()
    try:
        async with aiohttp.ClientSession() as client:
            async with client.ws_connect(robot.http.make_url("/ws")) as ws:
                await trickle_connect(ws, viewer)
                # The app shuts down (as on SIGTERM) while the client reads, as clients do.
                shutdown = asyncio.create_task(robot.http.server.close())
                try:
                    message = await ws.receive(timeout=RECEIVE_TIMEOUT)
                    assert message.type == WSMsgType.CLOSE, message
                    assert ws.close_code == WSCloseCode.GOING_AWAY, ws.close_code
                finally:
                    await asyncio.wait_for(shutdown, RECEIVE_TIMEOUT)
        await wait_until(lambda: len(robot.daemon.peers) == 0, what="the session ends on shutdown")
    finally:
        await viewer.close()


async def test_plain_get_is_told_to_upgrade(robot: Robot) -> None:
    response = await robot.http.get("/ws")
    assert response.status == 426
    assert "WebSocket" in (await response.json())["error"]


async def test_a_client_that_stops_answering_pings_is_dropped(robot: Robot, monkeypatch: Any) -> None:
    """A vanished client (no pongs) is noticed by the heartbeat; its peer ends."""
    monkeypatch.setattr("robotcam.http.signaling.websocket.HEARTBEAT", 0.5)
    viewer = Viewer()
    try:
        async with robot.http.ws_connect("/ws", autoping=False) as ws:  # never answers a ping
            await trickle_connect(ws, viewer)
            await wait_until(lambda: len(robot.daemon.peers) == 0, what="the silent client's peer ends")
    finally:
        await viewer.close()
