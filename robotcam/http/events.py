"""Server-sent events: named events pushed to every open page (`GET /api/events`).

Generic on purpose: any component publishes `(name, data)`; the page listens with
`new EventSource('/api/events?session=KEY')` and `addEventListener(name, ...)`. An event can be
*retained* (the latest value is sent to every client when it connects, so a page that
reconnects sees the current state at once), and its data can be a function of the client's
session key, for the parts that differ per viewer ("you hold the line").

Each client has a small bounded queue. A client that cannot keep up is disconnected (its
EventSource reconnects and gets the retained state) rather than buffered without limit. Each
client's task is owned here: shutdown ends every stream, and cancels one stuck in a write.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from robotcam.config import Config

log = logging.getLogger(__name__)

QUEUE_SIZE = 32  # events waiting for one client
HEARTBEAT = 15.0  # seconds between comments: finds dead clients, keeps proxies from timing out
RETRY_MS = 2000  # what EventSource waits before reconnecting
CLOSE_GRACE = 1.0  # seconds streams get to end by themselves on shutdown before cancellation

Data = Any  # JSON-able, or a function of the client's session key returning it


@dataclass(eq=False)
class _Client:
    session: str | None
    task: asyncio.Task[Any] | None
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    closing: bool = False


def _render(event: str, data: Data, session: str | None) -> str:
    value = data(session) if callable(data) else data
    payload = json.dumps(value, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n"


class EventHub:
    """Component protocol, so the daemon owns it and stops it; add `handle` as a GET route
    and `close_clients` to the app's on_shutdown."""

    name = "events"

    def __init__(self, heartbeat: float = HEARTBEAT) -> None:
        self.heartbeat = heartbeat
        self._clients: set[_Client] = set()
        self._retained: dict[str, Data] = {}
        self.closed = False
        self.published = 0
        self.disconnected_slow = 0

    def __len__(self) -> int:
        return len(self._clients)

    # --- publishing (event loop) ------------------------------------------------------------

    def publish(self, event: str, data: Data, retain: bool = False) -> None:
        if retain:
            self._retained[event] = data
        self.published += 1
        for client in tuple(self._clients):
            self._send(client, _render(event, data, client.session))

    def _send(self, client: _Client, text: str | None) -> None:
        if client.closing:
            # Asked to go, yet still here a whole event later: stuck writing to a client that
            # does not read. Its task is ours to end.
            if client.task is not None:
                client.task.cancel()
            return
        try:
            client.queue.put_nowait(text)
        except asyncio.QueueFull:
            self.disconnected_slow += 1
            log.info("events: a client fell %d events behind: disconnecting it", QUEUE_SIZE)
            self._end(client)

    def _end(self, client: _Client) -> None:
        """Ask a client's stream to finish (its EventSource will reconnect); one stuck in a
        write to a client that does not read is cancelled after CLOSE_GRACE."""
        if client.closing:
            return
        while not client.queue.empty():
            client.queue.get_nowait()
        client.queue.put_nowait(None)
        client.closing = True
        asyncio.get_running_loop().call_later(CLOSE_GRACE, self._cancel_if_stuck, client)

    def _cancel_if_stuck(self, client: _Client) -> None:
        if client in self._clients and client.task is not None:
            client.task.cancel()

    # --- the stream (one aiohttp handler per client) ----------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /api/events[?session=KEY]: text/event-stream until the client or we go."""
        if self.closed:
            return web.json_response({"error": "robotcam is shutting down"}, status=503)
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx in front: do not buffer the stream
        })
        await response.prepare(request)
        client = _Client(session=request.query.get("session") or None, task=asyncio.current_task())
        self._clients.add(client)
        try:
            await response.write(f"retry: {RETRY_MS}\n\n".encode())
            for event, data in list(self._retained.items()):
                await response.write(_render(event, data, client.session).encode())
            while True:
                try:
                    text = await asyncio.wait_for(client.queue.get(), self.heartbeat)
                except asyncio.TimeoutError:
                    text = ": ping\n\n"
                if text is None:
                    break
                await response.write(text.encode())
        except (ConnectionError, RuntimeError):
            pass  # the client went away (aiohttp raises ClientConnectionResetError/RuntimeError)
        finally:
            self._clients.discard(client)
        return response

    async def close_clients(self, app: web.Application | None = None) -> None:
        """End every stream: first politely, then by cancelling what is stuck in a write."""
        self.closed = True
        clients = list(self._clients)
        for client in clients:
            self._end(client)
        tasks = [c.task for c in clients if c.task is not None and not c.task.done()]
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=CLOSE_GRACE)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_GRACE)

    # --- Component protocol -----------------------------------------------------------------

    async def start(self) -> None:
        self.closed = False

    async def stop(self) -> None:
        await self.close_clients()

    def apply_config(self, config: Config) -> None:
        """Nothing to change."""

    def health(self) -> dict[str, Any]:
        return {"clients": len(self._clients), "published": self.published}
