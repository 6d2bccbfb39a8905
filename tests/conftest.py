"""Shared fixtures: a daemon on loopback with the test pattern, and an HTTP client for it.

All traffic stays on 127.0.0.1: the daemon pins its ICE host candidates there through
`webrtc.host_addresses` (aioice leaves loopback out otherwise), and so do the test viewers.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import aioice.ice
import pytest
from aiohttp.test_utils import TestClient, TestServer

from robotcam.config import Config
from robotcam.service.daemon import Daemon
from robotcam.http.server import build_app

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"


def make_config(**sections: Any) -> Config:
    """A small, fast test config on loopback; override any section's keys (a list section,
    such as publish, is replaced whole)."""
    base: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": 8080},
        "video": {"source": "testpattern", "width": 320, "height": 240, "fps": 30},
        "webrtc": {"host_addresses": ["127.0.0.1"], "ice_servers": []},
        "logging": {"level": "debug"},
        # the tests of other features run without access control; tests/test_auth*.py turn it on
        "auth": {"enabled": False},
    }
    for name, values in sections.items():
        if isinstance(values, list):
            base[name] = values
        else:
            base.setdefault(name, {}).update(values)
    return Config.model_validate(base)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    """Poll (bounded) until predicate() is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


@pytest.fixture(autouse=True)
def loopback_candidates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Test viewers gather only 127.0.0.1 (aioice skips loopback by default)."""
    monkeypatch.setattr(
        aioice.ice, "get_host_addresses", lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
    )


class Robot:
    """A started Daemon plus an HTTP client for its app."""

    def __init__(self, daemon: Daemon, http: TestClient) -> None:
        self.daemon = daemon
        self.http = http

    async def post_offer(self, body: Any) -> tuple[int, dict[str, Any]]:
        response = await self.http.post("/offer", json=body)
        return response.status, await response.json()

    async def health(self) -> tuple[int, dict[str, Any]]:
        response = await self.http.get("/health")
        return response.status, await response.json()


@pytest.fixture
async def robot_factory() -> AsyncIterator[Callable[..., Any]]:
    """Start daemons (with their own config or source factory); all are stopped afterwards."""
    started: list[tuple[Daemon, TestClient]] = []

    async def start(config: Config | None = None, **kwargs: Any) -> Robot:
        daemon = Daemon(config or make_config(), **kwargs)
        await daemon.start()
        http = TestClient(TestServer(build_app(daemon), host="127.0.0.1"))
        await http.start_server()
        started.append((daemon, http))
        await asyncio.wait_for(daemon.pipeline.first_frame.wait(), 10)
        return Robot(daemon, http)

    yield start
    for daemon, http in reversed(started):
        await http.close()
        await daemon.stop()


@pytest.fixture
async def robot(robot_factory: Callable[..., Any]) -> Robot:
    return await robot_factory()
