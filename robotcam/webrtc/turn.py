"""ICE servers as handed out to viewers and to the daemon's own peer connections.

A TURN server that uses time-limited credentials (coturn's `use-auth-secret` with
`static-auth-secret`, the "TURN REST API" scheme) shares a secret with robotcam instead of a
password: robotcam mints, per request, `username = "<unix expiry>:<user>"` and
`credential = base64(HMAC-SHA1(secret, username))`, and the TURN server recomputes the HMAC and
checks the expiry. A browser then only ever holds a password that stops working after
`webrtc.turn_credential_ttl` seconds, never a long-lived one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from robotcam.config import IceServer, WebRTCConfig

DEFAULT_USER = "robotcam"


def turn_rest_credential(
    secret: str, ttl: int, user: str = DEFAULT_USER, now: float | None = None
) -> tuple[str, str]:
    """(username, credential) valid for ttl seconds from now, in the TURN REST scheme."""
    expiry = int(time.time() if now is None else now) + ttl
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode("utf-8"), username.encode("utf-8"), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def is_turn(server: IceServer) -> bool:
    return any(url.startswith(("turn:", "turns:")) for url in server.urls)


def ice_servers(webrtc: WebRTCConfig, user: str = DEFAULT_USER) -> list[dict[str, Any]]:
    """The configured servers as RTCIceServer-shaped dicts ({urls, username?, credential?}),
    with fresh credentials for every TURN server that has no username when a secret is set."""
    secret = webrtc.turn_secret.get_secret_value() if webrtc.turn_secret else ""
    minted: tuple[str, str] | None = None
    out: list[dict[str, Any]] = []
    for server in webrtc.ice_servers:
        entry: dict[str, Any] = {"urls": list(server.urls)}
        if server.username is None and secret and is_turn(server):
            if minted is None:
                minted = turn_rest_credential(secret, webrtc.turn_credential_ttl, user)
            entry["username"], entry["credential"] = minted
        else:
            if server.username is not None:
                entry["username"] = server.username
            if server.credential is not None:
                entry["credential"] = server.credential.get_secret_value()
        out.append(entry)
    return out
