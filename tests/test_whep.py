"""WHEP at /whep against a real daemon: an aiortc player that trickles its candidates by PATCH,
every error the draft names, CORS, ICE servers in Link headers, and the bound on gathering."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from typing import Any

import aioice.ice
from aiortc import RTCSessionDescription

from tests.conftest import Robot, make_config, wait_until
from tests.signaling_support import (
    closed_udp_port,
    sdpfrag,
    split_candidates,
    verify_turn_rest,
)
from tests.viewer import Viewer

SDP = {"Content-Type": "application/sdp"}
SDPFRAG = {"Content-Type": "application/trickle-ice-sdpfrag"}


class WhepPlayer(Viewer):
    """An aiortc WHEP player: POSTs its offer without candidates, then PATCHes them."""

    location: str
    etag: str
    offer_sdp: str

    async def post(self, robot: Robot) -> Any:
        offer = await self.offer()
        self.offer_sdp, self.candidates = split_candidates(offer["sdp"])
        assert self.candidates, "the player gathered no candidate"
        response = await robot.http.post("/whep", data=self.offer_sdp, headers=SDP)
        assert response.status == 201, await response.text()
        self.location = response.headers["Location"]
        self.etag = response.headers["ETag"]
        await self.pc.setRemoteDescription(RTCSessionDescription(await response.text(), "answer"))
        return response

    async def trickle(self, robot: Robot) -> Any:
        body = sdpfrag(self.offer_sdp, self.candidates)
        return await robot.http.patch(self.location, data=body, headers={**SDPFRAG, "If-Match": self.etag})


async def problem(response: Any, status: int) -> dict[str, Any]:
    """An RFC 9457 problem with robotcam's `error` member, and CORS so pages can read it."""
    assert response.status == status, (response.status, await response.text())
    assert response.headers["Content-Type"].startswith("application/problem+json"), response.headers
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    body = await response.json()
    assert body["status"] == status and body["error"] and body["detail"] == body["error"], body
    return body


async def test_whep_player_trickles_plays_and_deletes(robot: Robot) -> None:
    player = WhepPlayer()
    try:
        response = await player.post(robot)
        assert response.headers["Content-Type"].startswith("application/sdp")
        assert re.fullmatch(r"/whep/[A-Za-z0-9_-]{20,}", player.location), player.location
        assert re.fullmatch(r'"[^"]+"', player.etag), player.etag
        assert response.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "Link" not in response.headers  # no ICE servers configured
        answer = await response.text()
        assert "a=sendonly" in answer and "a=candidate:" in answer

        # The offer had no candidate: only the PATCH lets ICE succeed.
        patched = await player.trickle(robot)
        assert patched.status == 204, await patched.text()
        assert "ETag" not in patched.headers
        assert await patched.read() == b""

        numbers = await player.wait_frames(10)
        decoded = [n for n in numbers if n is not None]
        assert len(decoded) >= 5 and decoded == sorted(decoded), numbers
        status, health = await robot.health()
        assert status == 200, health
        sessions = health["peers"]["sessions"]
        assert [s["signaling"] for s in sessions] == ["whep"], sessions
        assert player.location.rsplit("/", 1)[1] not in str(health)  # the key stays secret

        # GET on a session: 2xx without content (draft §4.1).
        got = await robot.http.get(player.location)
        assert got.status == 204

        deleted = await robot.http.delete(player.location)
        assert deleted.status == 200
        await wait_until(lambda: len(robot.daemon.peers) == 0, what="the session ends")
        for method in ("DELETE", "PATCH", "GET"):
            gone = await robot.http.request(method, player.location, data="a=end-of-candidates\r\n", headers=SDPFRAG)
            await problem(gone, 404)
        await wait_until(lambda: robot.daemon.peers.tasks == 0, what="watcher tasks end")
    finally:
        await player.close()


async def test_whep_errors_say_what_is_wrong(robot_factory: Any) -> None:
    robot: Robot = await robot_factory(make_config(webrtc={"max_peers": 1}, server={"max_body_bytes": 8192}))
    http = robot.http
    good = WhepPlayer()
    await good.offer()
    offer_sdp, _ = split_candidates(good.pc.localDescription.sdp)

    # 415: not application/sdp (JSON as /offer takes it; no type at all).
    body = await problem(await http.post("/whep", json={"sdp": offer_sdp, "type": "offer"}), 415)
    assert "application/sdp" in body["error"]
    missing = await http.post("/whep", data=offer_sdp.encode(), headers={"Content-Type": ""})
    await problem(missing, 415)
    assert missing.headers["Accept-Post"] == "application/sdp"
    # 400: not SDP, empty, no video.
    assert "v=0" in (await problem(await http.post("/whep", data="hello", headers=SDP), 400))["error"]
    await problem(await http.post("/whep", data="", headers=SDP), 400)
    no_video = "\r\n".join(l for l in offer_sdp.splitlines() if not l.startswith("m=video")) + "\r\n"
    await problem(await http.post("/whep", data=no_video.replace("m=video", ""), headers=SDP), 400)
    # 413: bigger than server.max_body_bytes.
    await problem(await http.post("/whep", data="v=0\r\n" + "a=x\r\n" * 3000, headers=SDP), 413)
    # 405 with Allow, on the endpoint and on a session.
    put = await http.put("/whep", data=offer_sdp, headers=SDP)
    await problem(put, 405)
    assert set(put.headers["Allow"].split(", ")) == {"OPTIONS", "GET", "HEAD", "POST"}
    # 404 for an unknown session.
    await problem(await http.patch("/whep/not-a-session", data="a=end-of-candidates\r\n", headers=SDPFRAG), 404)
    await problem(await http.delete("/whep/not-a-session"), 404)

    player = WhepPlayer()
    other = WhepPlayer()
    try:
        await player.post(robot)
        post_to_session = await http.post(player.location, data=offer_sdp, headers=SDP)
        await problem(post_to_session, 405)
        assert "PATCH" in post_to_session.headers["Allow"]
        # 503 with Retry-After: max_peers is 1.
        full = await http.post("/whep", data=split_candidates((await other.offer())["sdp"])[0], headers=SDP)
        assert "limit" in (await problem(full, 503))["error"]
        assert int(full.headers["Retry-After"]) > 0
        # PATCH: wrong type 415, stale ETag 412, ICE restart 422, broken candidate 400.
        frag = sdpfrag(player.offer_sdp, player.candidates)
        wrong_type = await http.patch(player.location, data=frag, headers=SDP)
        await problem(wrong_type, 415)
        assert wrong_type.headers["Accept-Patch"] == "application/trickle-ice-sdpfrag"
        await problem(await http.patch(player.location, data=frag, headers={**SDPFRAG, "If-Match": '"stale"'}), 412)
        restart = sdpfrag(player.offer_sdp, player.candidates, ufrag="newufrag")
        body = await problem(await http.patch(player.location, data=restart, headers={**SDPFRAG, "If-Match": "*"}), 422)
        assert "ICE restart" in body["error"]
        broken = "a=candidate:1 1 udp notanumber 127.0.0.1 9 typ host\r\n"
        await problem(await http.patch(player.location, data=broken, headers=SDPFRAG), 400)
        await problem(await http.patch(player.location, data="garbage line\r\n", headers=SDPFRAG), 400)
        # A TCP candidate is dropped silently (aiortc has no ICE-TCP), as RFC 8840 says.
        tcp = "a=mid:0\r\na=candidate:2 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active\r\n"
        assert (await http.patch(player.location, data=tcp, headers=SDPFRAG)).status == 204

        # After all that, the session still works: trickle without If-Match (as players do).
        patched = await http.patch(player.location, data=frag, headers=SDPFRAG)
        assert patched.status == 204, await patched.text()
        await player.wait_frames(5)
    finally:
        await player.close()
        await other.close()
        await good.close()


async def test_whep_cors_and_options(robot_factory: Any) -> None:
    stun = f"stun:127.0.0.1:{closed_udp_port()}"
    robot: Robot = await robot_factory(make_config(webrtc={"ice_servers": [{"urls": stun}], "gather_timeout": 0.3}))
    http = robot.http
    origin = {"Origin": "http://player.example"}

    # A CORS preflight for the POST: allowed from anywhere; no ICE servers (RFC 9725 §4.6).
    pre = await http.options("/whep", headers={
        **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"})
    assert pre.status == 200
    assert pre.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert "content-type" in pre.headers["Access-Control-Allow-Headers"].lower()
    assert pre.headers["Accept-Post"] == "application/sdp"
    assert "Link" not in pre.headers
    # A plain OPTIONS (a player asking before its offer) gets the ICE servers.
    plain = await http.options("/whep")
    assert plain.headers.getall("Link") == [f'<{stun}>; rel="ice-server"']
    # ... as does a preflight that asks for Link.
    asks = await http.options("/whep", headers={
        **origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type, link"})
    assert asks.headers.getall("Link") == [f'<{stun}>; rel="ice-server"']

    # HEAD/GET: discovery (draft §4.2): a WHEP endpoint takes application/sdp.
    head = await http.head("/whep")
    assert head.status == 200 and head.headers["Content-Type"].startswith("application/sdp")

    player = WhepPlayer()
    try:
        posted = await player.post(robot)
        for name in ("Location", "Link", "ETag"):
            assert name in posted.headers["Access-Control-Expose-Headers"], posted.headers
        assert posted.headers.getall("Link") == [f'<{stun}>; rel="ice-server"']
        # Preflight for the PATCH and DELETE a page sends to the session.
        session_pre = await http.options(player.location, headers={
            **origin, "Access-Control-Request-Method": "PATCH",
            "Access-Control-Request-Headers": "content-type, if-match"})
        assert session_pre.status == 200
        assert session_pre.headers["Access-Control-Allow-Origin"] == "*"
        methods = session_pre.headers["Access-Control-Allow-Methods"]
        assert "PATCH" in methods and "DELETE" in methods
        allowed = session_pre.headers["Access-Control-Allow-Headers"].lower()
        assert "content-type" in allowed and "if-match" in allowed
        deleted = await http.delete(player.location, headers=origin)
        assert deleted.status == 200 and deleted.headers["Access-Control-Allow-Origin"] == "*"
    finally:
        await player.close()


async def test_ice_servers_with_turn_rest_credentials(robot_factory: Any) -> None:
    """Link headers, /api/config and the daemon's own connections all carry the servers; TURN
    servers without a username get a fresh TURN REST credential, never the secret."""
    secret, ttl = "s3cret-shared-with-coturn", 3600
    stun = f"stun:127.0.0.1:{closed_udp_port()}"
    turn = f"turn:127.0.0.1:{closed_udp_port()}?transport=udp"
    static = "turns:127.0.0.1:5349?transport=tcp"
    robot: Robot = await robot_factory(make_config(webrtc={
        "ice_servers": [{"urls": stun}, {"urls": [turn]},
                        {"urls": static, "username": "robot", "credential": "fixed"}],
        "turn_secret": secret, "turn_credential_ttl": ttl, "gather_timeout": 0.3,
    }))
    player = WhepPlayer()
    try:
        posted = await player.post(robot)
        links = posted.headers.getall("Link")
        assert links[0] == f'<{stun}>; rel="ice-server"'
        match = re.fullmatch(
            rf'<{re.escape(turn)}>; rel="ice-server"; username="([^"]+)"; credential="([^"]+)"; credential-type="password"',
            links[1])
        assert match, links
        verify_turn_rest(match.group(1), match.group(2), secret, ttl)
        assert links[2] == f'<{static}>; rel="ice-server"; username="robot"; credential="fixed"; credential-type="password"'
        assert all(secret not in link for link in links)

        config = await (await robot.http.get("/api/config")).json()
        servers = config["iceServers"]
        assert servers[0] == {"urls": [stun]}
        assert servers[1]["urls"] == [turn]
        verify_turn_rest(servers[1]["username"], servers[1]["credential"], secret, ttl)
        assert servers[2] == {"urls": [static], "username": "robot", "credential": "fixed"}

        own = robot.daemon.peers.rtc_configuration().iceServers
        verify_turn_rest(own[1].username, own[1].credential, secret, ttl)
    finally:
        await player.close()


async def test_unreachable_stun_server_does_not_hold_the_answer(robot_factory: Any) -> None:
    """A STUN server on a closed loopback port never answers (aioice ignores the ICMP errors);
    the answer still comes within webrtc.gather_timeout plus slack, with our host candidate."""
    gather_timeout = 1.0
    # aioice's own bound is 5 s, which the slack below would not cover.
    default = inspect.signature(aioice.ice.Connection.get_component_candidates).parameters["timeout"].default
    assert default > gather_timeout + 3
    robot: Robot = await robot_factory(make_config(webrtc={
        "ice_servers": [{"urls": f"stun:127.0.0.1:{closed_udp_port()}"},
                        {"urls": f"turn:127.0.0.1:{closed_udp_port()}?transport=udp",
                         "username": "u", "credential": "p"}],
        "gather_timeout": gather_timeout,
    }))
    viewer = Viewer()
    try:
        offer = await viewer.offer()
        started = time.monotonic()
        status, answer = await robot.post_offer(offer)
        elapsed = time.monotonic() - started
        assert status == 200, answer
        assert elapsed < gather_timeout + 3, f"answer took {elapsed:.1f} s"
        assert re.search(r"a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 \d+ typ host", answer["sdp"]), answer["sdp"]
        await viewer.pc.setRemoteDescription(RTCSessionDescription(**answer))
        await viewer.wait_frames(5)
    finally:
        await viewer.close()


async def test_offers_that_arrive_in_pieces_are_read_whole(robot: Robot) -> None:
    """Over Wi-Fi a 5 KB offer comes in several TCP segments: read to the end, not one chunk."""
    viewer = Viewer()
    try:
        offer = await viewer.offer()

        def in_pieces(body: bytes) -> Any:
            async def pieces() -> Any:
                for start in range(0, len(body), 400):
                    yield body[start:start + 400]
                    await asyncio.sleep(0.02)
            return pieces()

        offered = await robot.http.post("/offer", data=in_pieces(json.dumps(offer).encode()),
                                        headers={"Content-Type": "application/json"})
        assert offered.status == 200, await offered.text()
        posted = await robot.http.post("/whep", data=in_pieces(offer["sdp"].encode()), headers=SDP)
        assert posted.status == 201, await posted.text()
    finally:
        await viewer.close()
