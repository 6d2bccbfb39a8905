"""Signaling besides POST /offer: WHEP (the IETF's HTTP protocol every WHEP player speaks) at
/whep, and JSON over a WebSocket at /ws for front ends that trickle their ICE candidates.

Both open viewers through PeerManager.open_session, with the same offer checks and limits as
/offer; they differ only in how the SDP and the candidates travel.
"""

from __future__ import annotations

from aiohttp import web

from robotcam.service.daemon import Daemon
from robotcam.http.signaling import websocket, whep


def add_routes(app: web.Application, daemon: Daemon) -> None:
    """Register /whep, /whep/{session} and /ws (and close the WebSockets on shutdown)."""
    whep.add_routes(app, daemon)
    websocket.add_routes(app, daemon)
