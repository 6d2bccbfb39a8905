"""The fuzz targets' shared parts: a real daemon served from a background thread (Hypothesis'
@given tests are synchronous), the contract every answer must keep, and the check that a real
viewer still plays after a target.

One daemon serves a whole target: it runs in its own thread and event loop; tests talk to it
over HTTP with http.client, or run coroutines (aiohttp WebSocket clients, aiortc viewers) in its
loop through `call`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import aiohttp
from aiohttp import web
from hypothesis import HealthCheck, settings

from robotcam.config import Config
from robotcam.http.server import build_app
from robotcam.service.runner import Service
from tests.conftest import free_port
from tests.viewer import Viewer

T = TypeVar("T")
CALL_TIMEOUT = 60.0  # s for any one coroutine run in the daemon's loop
# What aiohttp's HTTP parser answers (text/plain 400) to requests it cannot parse at all.
PARSER_ERRORS = (b"Can not decode content-encoding", b"Bad Request", b"Invalid header", b"Unsupported")
LONG = os.environ.get("ROBOTCAM_FUZZ") == "long"  # scripts/fuzz.sh --long


def fuzz_settings(examples: int) -> settings:
    """Bounded in the normal suite (derandomized: the same examples every run, no database);
    ROBOTCAM_FUZZ=long tries ten times as many, random ones, keeping failures in the database."""
    return settings(
        max_examples=examples * 10 if LONG else examples,
        deadline=None,
        derandomize=not LONG,
        database=settings.default.database if LONG else None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )


class ErrorLog(logging.Handler):
    """Every record at ERROR or above, and any record carrying a traceback, while attached."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.allowed: tuple[str, ...] = ()  # message prefixes a target expects (a refused reload)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if (record.levelno >= logging.ERROR or record.exc_info or "Traceback" in message) and not (
            record.levelno < logging.CRITICAL and not record.exc_info and message.startswith(self.allowed)
        ):
            self.records.append(record)

    def take(self) -> list[str]:
        found, self.records = self.records, []
        return [f"{r.levelname} {r.name}: {r.getMessage()}" + (" (with traceback)" if r.exc_info else "")
                for r in found]


class ServedDaemon:
    """A started daemon with its HTTP app on a loopback port, in a thread of its own."""

    def __init__(self, config: Config, config_path: Path | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzz-daemon", daemon=True)
        self.errors = ErrorLog()
        self.service: Service | None = None
        self.runner: web.AppRunner | None = None
        self.http: aiohttp.ClientSession | None = None

    @property
    def daemon(self) -> Any:
        assert self.service is not None
        return self.service.daemon

    def start(self) -> ServedDaemon:
        logging.getLogger().addHandler(self.errors)
        self.thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        # a Service (not run: signals belong to the main thread) so a target can call reload()
        self.service = Service(self.config, self.config_path)
        await self.daemon.start()
        self.runner = web.AppRunner(build_app(self.daemon))
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        self.http = aiohttp.ClientSession(f"http://127.0.0.1:{self.port}")
        await asyncio.wait_for(self.daemon.pipeline.first_frame.wait(), 20)

    def stop(self) -> None:
        try:
            self.call(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
            logging.getLogger().removeHandler(self.errors)

    async def _stop(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.runner is not None:
            await self.runner.cleanup()
        await self.daemon.stop()

    def call(self, coro: Awaitable[T], timeout: float = CALL_TIMEOUT) -> T:
        """Run a coroutine in the daemon's loop and wait (bounded) for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        """One raw HTTP request (any bytes, any headers), as a hostile client sends it."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_accept_encoding=True)
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            got = {k.lower(): v for k, v in response.getheaders()}
            if got.get("content-type", "").startswith("text/event-stream"):
                return response.status, got, b""  # /api/events streams until the client leaves
            return response.status, got, response.read()
        finally:
            conn.close()

    def close_sessions(self) -> int:
        """End the viewers an accepted fuzzed offer created (they would only wait to time out)."""
        async def close() -> int:
            sessions = list(self.daemon.peers.sessions.values())
            for session in sessions:
                await self.daemon.peers.close_session(session, "fuzz example done")
            return len(sessions)
        return self.call(close())

    async def post_offer(self, offer: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        assert self.http is not None
        async with self.http.post("/offer", json=offer, headers=headers) as response:
            return response.status, await response.json()

    def assert_serves_a_viewer(self, headers: dict[str, str] | None = None) -> None:
        """The contract's last clause: a real aiortc viewer connects and decodes frames."""
        async def watch() -> None:
            viewer = Viewer()
            try:
                await viewer.connect(lambda offer: self.post_offer(offer, headers))
                await viewer.wait_frames(5, timeout=30)
            finally:
                await viewer.close()
        self.call(watch())

    def run_target(self, target: Callable[[], None], headers: dict[str, str] | None = None) -> None:
        """A Hypothesis target, then: nothing logged at ERROR, no viewer left over, and a real
        viewer still plays."""
        self.errors.take()
        target()
        assert not self.errors.take(), "errors logged during the target"
        self.close_sessions()
        self.assert_serves_a_viewer(headers)
        assert not self.errors.take(), "errors logged while a real viewer played"

    def assert_no_errors_logged(self) -> None:
        """Per example, so Hypothesis shrinks to the input that made the daemon log an error."""
        logged = self.errors.take()
        assert not logged, logged


def assert_json_error(status: int, headers: dict[str, str], body: bytes, problem: bool = False) -> dict[str, Any]:
    """The contract for an HTTP answer to bad input: below 500; a 4xx is JSON (WHEP: problem
    details) with an `error` string saying what to fix."""
    assert status < 500, (status, body[:300])
    if status < 400:
        return {}
    content_type = headers.get("content-type", "")
    if status == 400 and content_type.startswith("text/plain") and body.startswith(PARSER_ERRORS):
        return {}  # HTTP's own error: aiohttp's parser refused the request before any route
    expected = "application/problem+json" if problem else "application/json"
    assert content_type.startswith(expected), (status, content_type, body[:300])
    data = json.loads(body)
    assert isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"], (status, data)
    return data
