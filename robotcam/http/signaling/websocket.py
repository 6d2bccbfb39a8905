"""JSON signaling over a WebSocket at /ws, for front ends that trickle their ICE candidates.

Client to server (one JSON object per text message):

    {"type": "offer", "sdp": "..."}                  once per socket
    {"type": "candidate", "candidate": {"candidate": "candidate:...", "sdpMid": "0",
                                        "sdpMLineIndex": 0}}   as RTCIceCandidate.toJSON() gives
    {"type": "candidate", "candidate": null}         end of candidates (an empty "candidate"
                                                     string means the same, as browsers send it)
    {"type": "bye"}                                  end the peer (the socket closes too)

Server to client:

    {"type": "answer", "sdp": "...", "session": "<key>"}   carries all our candidates: aiortc
                                                           does not trickle, so no server
                                                           candidates follow
    {"type": "error", "error": "...", "status": 400}       bad input; the socket stays open
    {"type": "bye", "reason": "..."}                       the peer ended; the socket closes

One peer per socket: closing the socket ends the peer, and a peer that fails or is closed by
the daemon closes the socket. Messages are processed in order, so candidates sent right after
the offer wait until the offer is answered. The server pings every HEARTBEAT seconds and drops a
socket that stops answering; messages over server.max_body_bytes close it (1009).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from robotcam.http.auth import IDENTITY
from robotcam.http.cameras import read_switch, wanted_cameras
from robotcam.auth.identity import Identity
from robotcam.service.daemon import Daemon
from robotcam.webrtc.peers import OfferError, PeerSession
from robotcam.http.signaling.candidates import CandidateError, parse_candidate
from robotcam.tasks import TaskSet

log = logging.getLogger(__name__)

HEARTBEAT = 15.0  # seconds between pings; no pong within half of it closes the socket
CLOSE_GRACE = 1.0  # seconds a closing handshake may take (shutdown has a budget of 4 s)


class BadMessage(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class SignalingConnection:
    """One WebSocket and the one peer it negotiates; owns the tasks it starts."""

    def __init__(
        self, ws: web.WebSocketResponse, daemon: Daemon, number: int, identity: Identity,
        cameras: list[str] | None = None,
    ) -> None:
        self.ws = ws
        self.daemon = daemon
        self.number = number  # for log lines
        self.identity = identity  # decided at the upgrade: the peer it opens is theirs
        self.cameras = cameras  # ?camera= on the socket's URL; an offer's "camera" overrides it
        self.session: PeerSession | None = None
        self._ending = False
        self._tasks = TaskSet()

    async def run(self) -> None:
        """Handle messages until the socket closes (either side) or fails."""
        async for message in self.ws:
            if message.type == WSMsgType.TEXT:
                try:
                    await self._handle(message.data)
                except BadMessage as exc:
                    await self._send({"type": "error", "error": exc.message, "status": exc.status})
            elif message.type == WSMsgType.BINARY:
                await self._send({"type": "error", "status": 400,
                                  "error": "binary messages are not understood: send JSON text"})
            elif message.type == WSMsgType.ERROR:
                log.info("websocket %d: %s", self.number, self.ws.exception())
                break
            if self._ending:
                break

    async def _handle(self, text: str) -> None:
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise BadMessage(f"not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise BadMessage('a message is a JSON object with a "type"')
        kind = data.get("type")
        if kind == "offer":
            await self._offer(data)
        elif kind == "candidate":
            await self._candidate(data)
        elif kind == "bye":
            await self._end("bye from the client", notify=False)
        elif kind == "camera":
            await self._switch(data)
        elif kind == "answer":
            raise BadMessage("robotcam answers, it never offers: send an offer")
        else:
            raise BadMessage(
                f'unknown message type {json.dumps(kind)}: use "offer", "candidate", "camera" or "bye"'
            )

    async def _offer(self, data: dict[str, Any]) -> None:
        if self.session is not None:
            raise BadMessage("this socket already has a peer: one peer per socket (send bye, then open a new socket)", 409)
        sdp = data.get("sdp")
        if not isinstance(sdp, str) or not sdp.strip():
            raise BadMessage('an offer needs "sdp": the SDP text of the offer')
        cameras = self.cameras
        if "camera" in data:
            camera = data["camera"]
            if isinstance(camera, str):
                camera = [camera]
            if not (isinstance(camera, list) and camera and all(isinstance(c, str) and c for c in camera)):
                raise BadMessage('"camera" names a camera, or lists one per video section: "front" or ["front", "arm"]')
            cameras = camera
        try:
            session, answer = await self.daemon.peers.open_session(sdp, self.identity, cameras)
        except OfferError as exc:
            log.info("websocket %d: offer refused (%d): %s", self.number, exc.status, exc.message)
            raise BadMessage(exc.message, exc.status) from None
        session.extras["signaling"] = "websocket"
        self.session = session
        pc = session.pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState in ("failed", "closed") and not self._ending:
                self._tasks.spawn(self._end(f"peer connection {pc.connectionState}", notify=True))

        await self._send({"type": "answer", "sdp": answer, "session": session.key})

    async def _switch(self, data: dict[str, Any]) -> None:
        """{"type": "camera", "video": 0, "camera": "arm"}: another camera in a video section."""
        if self.session is None:
            raise BadMessage("send the offer before switching cameras", 409)
        try:
            _, index, camera = read_switch({**data, "session": self.session.key})
            video = self.daemon.peers.switch_camera(self.session, index, camera)
        except OfferError as exc:
            raise BadMessage(exc.message, exc.status) from None
        await self._send({"type": "camera", "video": video.index, "camera": video.camera})

    async def _candidate(self, data: dict[str, Any]) -> None:
        if self.session is None:
            raise BadMessage("send the offer before its candidates", 409)
        if "candidate" not in data:
            raise BadMessage('a candidate message needs "candidate": an RTCIceCandidate as JSON, or null')
        value = data["candidate"]
        if value is None or (isinstance(value, dict) and not value.get("candidate")):
            await self.session.pc.addIceCandidate(None)  # end of candidates
            return
        if not isinstance(value, dict) or not isinstance(value.get("candidate"), str):
            raise BadMessage('"candidate" must be {"candidate": "candidate:...", "sdpMid": ..., "sdpMLineIndex": ...} or null')
        mid, index = value.get("sdpMid"), value.get("sdpMLineIndex")
        if mid is not None and not isinstance(mid, str):
            raise BadMessage('"sdpMid" must be a string or null')
        if index is not None and (not isinstance(index, int) or isinstance(index, bool) or index < 0):
            raise BadMessage('"sdpMLineIndex" must be a non-negative integer or null')
        if mid is None and index is None:
            raise BadMessage('a candidate needs "sdpMid" or "sdpMLineIndex"')
        try:
            candidate = parse_candidate(value["candidate"], mid, index)
        except CandidateError as exc:
            raise BadMessage(str(exc)) from None
        if candidate is None:  # TCP: dropped, aiortc has no ICE-TCP
            return
        try:
            await self.session.pc.addIceCandidate(candidate)
        except ValueError as exc:
            raise BadMessage(f"candidate refused: {exc}") from None

    async def _end(self, why: str, notify: bool) -> None:
        """End the peer and the socket (once)."""
        if self._ending:
            return
        self._ending = True
        if self.session is not None:
            await self.daemon.peers.close_session(self.session, why)
        if notify:
            await self._send({"type": "bye", "reason": why})
        await self.ws.close(code=WSCloseCode.OK, message=why.encode()[:120])

    async def _send(self, message: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        try:
            await self.ws.send_json(message)
        except (ConnectionError, RuntimeError) as exc:  # closing under us
            log.debug("websocket %d: send failed: %s", self.number, exc)

    async def going_away(self) -> None:
        """Server shutdown: close with 1001. The closing handshake runs as our task, so the
        handler (which waits for our tasks) keeps the connection until the client answers."""
        self._ending = True
        task = self._tasks.spawn(self.ws.close(code=WSCloseCode.GOING_AWAY, message=b"robotcam is shutting down"))
        await asyncio.wait({task}, timeout=CLOSE_GRACE)

    async def close(self) -> None:
        """The socket is gone: end the peer, then every task of ours."""
        self._ending = True
        if self.session is not None:
            await self.daemon.peers.close_session(self.session, "websocket closed")
        await self._tasks.close(CLOSE_GRACE)  # a closing handshake in progress may finish, briefly


class WebSocketSignaling:
    """GET /ws, and every socket it has open (closed with 1001 when the server shuts down)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.connections: set[SignalingConnection] = set()
        self._count = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            heartbeat=HEARTBEAT, timeout=CLOSE_GRACE,
            max_msg_size=self.daemon.config.server.max_body_bytes,
        )
        if not ws.can_prepare(request).ok:
            return web.json_response(
                {"error": "this is a WebSocket endpoint: connect with a WebSocket (ws://.../ws)"},
                status=426, headers={"Upgrade": "websocket", "Connection": "Upgrade"},
            )
        await ws.prepare(request)
        self._count += 1
        connection = SignalingConnection(ws, self.daemon, self._count, request[IDENTITY],
                                         wanted_cameras(request.query))
        self.connections.add(connection)
        log.debug("websocket %d: open from %s", connection.number, request.remote)
        try:
            await connection.run()
        except Exception:  # noqa: BLE001 - a bug costs this socket, not the daemon
            log.exception("websocket %d: internal error", connection.number)
        finally:
            self.connections.discard(connection)
            await connection.close()
            if not ws.closed:
                await ws.close()
            log.debug("websocket %d: closed", connection.number)
        return ws

    async def close_all(self, app: web.Application) -> None:
        """on_shutdown: say going-away to every client, so handlers (and their peers) end."""
        await asyncio.gather(
            *(connection.going_away() for connection in list(self.connections)),
            return_exceptions=True,
        )


def add_routes(app: web.Application, daemon: Daemon) -> None:
    signaling = WebSocketSignaling(daemon)
    app.router.add_get("/ws", signaling.handle)
    app.on_shutdown.append(signaling.close_all)
