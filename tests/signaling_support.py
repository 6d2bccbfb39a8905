"""Helpers for the signaling tests: SDP candidate handling for trickling aiortc clients, the
TURN REST check, a closed loopback UDP port, and a stand-in for the robot's own program."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import queue
import socket
import socketserver
import threading
import time
from pathlib import Path
from typing import Any


def split_candidates(sdp: str) -> tuple[str, list[tuple[str, int, str]]]:
    """The SDP without candidate lines (an offer to trickle from), and the candidates of its
    first media section as (mid, m-line index, "candidate:..."): with BUNDLE those are all."""
    kept: list[str] = []
    candidates: list[tuple[str, int, str]] = []
    mline, mid = -1, ""
    for line in sdp.splitlines():
        if line.startswith("m="):
            mline += 1
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:"):]
        if line.startswith("a=candidate:"):
            if mline == 0:
                candidates.append((mid, mline, line[2:]))
            continue
        if line == "a=end-of-candidates":
            continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", candidates


def ice_credentials(sdp: str) -> tuple[str, str]:
    ufrag = next(l.split(":", 1)[1] for l in sdp.splitlines() if l.startswith("a=ice-ufrag:"))
    pwd = next(l.split(":", 1)[1] for l in sdp.splitlines() if l.startswith("a=ice-pwd:"))
    return ufrag, pwd


def sdpfrag(sdp: str, candidates: list[tuple[str, int, str]], end: bool = True,
            ufrag: str | None = None) -> str:
    """An application/trickle-ice-sdpfrag body (RFC 8840) for these candidates."""
    own_ufrag, pwd = ice_credentials(sdp)
    lines = [f"a=ice-ufrag:{ufrag or own_ufrag}", f"a=ice-pwd:{pwd}",
             "m=video 9 UDP/TLS/RTP/SAVPF 0", f"a=mid:{candidates[0][0] if candidates else '0'}"]
    lines += [f"a={c}" for _, _, c in candidates]
    if end:
        lines.append("a=end-of-candidates")
    return "\r\n".join(lines) + "\r\n"


def verify_turn_rest(username: str, credential: str, secret: str, ttl: int) -> None:
    """The TURN server's check (coturn use-auth-secret): HMAC-SHA1 of the username, and an
    expiry ttl seconds from now (allowing for the test's own duration)."""
    expected = base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()
    assert credential == expected, (username, credential)
    expiry, _, user = username.partition(":")
    assert user.startswith("robotcam"), username
    now = time.time()
    assert now + ttl - 120 <= int(expiry) <= now + ttl + 1, (username, now, ttl)


def closed_udp_port() -> int:
    """A loopback UDP port nothing listens on (a STUN server that never answers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RobotProgram:
    """The robot's own program: listens on a Unix socket, collects the JSON lines robotcam
    forwards, writes lines back. Threads, so async and sync (browser) tests both use it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.received: queue.Queue[dict[str, Any]] = queue.Queue()
        self.connected = threading.Event()
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        program = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                with program._lock:
                    program._clients.append(self.connection)
                program.connected.set()
                try:
                    for line in self.rfile:
                        if line.strip():
                            program.received.put(json.loads(line))
                except (OSError, ValueError):
                    pass
                finally:
                    with program._lock:
                        if self.connection in program._clients:
                            program._clients.remove(self.connection)
                        if not program._clients:
                            program.connected.clear()

        if self.path.exists():
            self.path.unlink()
        server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        server.daemon_threads = True
        os.chmod(self.path, 0o660)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """The program exits: its listening socket and every connection go."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            clients, self._clients = list(self._clients), []
        for client in clients:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            client.close()
        self.connected.clear()
        if self._thread is not None:
            self._thread.join(5)
        if self.path.exists():
            self.path.unlink()

    def send(self, message: dict[str, Any]) -> int:
        """Write one JSON line to every connection; how many got it."""
        data = json.dumps(message).encode() + b"\n"
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.sendall(data)
        return len(clients)

    def send_raw(self, data: bytes) -> None:
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.sendall(data)

    def next_message(self, timeout: float = 10.0) -> dict[str, Any]:
        try:
            return self.received.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the robot program got nothing within {timeout} s") from None

    def drain(self) -> list[dict[str, Any]]:
        out = []
        while True:
            try:
                out.append(self.received.get_nowait())
            except queue.Empty:
                return out
