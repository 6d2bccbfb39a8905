"""The server-sent events hub on its own: retained and per-client events, slow clients, shutdown."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from robotcam.http.events import EventHub
from tests.audio_support import EventReader, wait_until


async def serve(hub: EventHub) -> TestClient:
    app = web.Application()
    app.router.add_get("/events", hub.handle)
    app.on_shutdown.append(hub.close_clients)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def test_named_retained_and_per_client_events() -> None:
    hub = EventHub()
    hub.publish("talk", lambda session: {"busy": True, "you": session == "alice"}, retain=True)
    hub.publish("note", {"text": "not retained"})
    client = await serve(hub)
    try:
        alice = EventReader(await client.get("/events", params={"session": "alice"}))
        anonymous = EventReader(await client.get("/events"))
        # on connect: the retained state at once, rendered for each client
        assert await alice.wait_for("talk", lambda d: True) == {"busy": True, "you": True}
        assert await anonymous.wait_for("talk", lambda d: True) == {"busy": True, "you": False}
        assert anonymous.last("note") is None
        hub.publish("note", {"text": "live"})
        await alice.wait_for("note", lambda d: d == {"text": "live"})
        await anonymous.wait_for("note", lambda d: d == {"text": "live"})
        assert hub.health()["clients"] == 2
        await alice.close()
        await anonymous.close()
    finally:
        await client.close()
    assert len(hub) == 0


async def test_a_client_that_does_not_read_is_disconnected_not_buffered() -> None:
    hub = EventHub()
    client = await serve(hub)
    try:
        stuck = await client.get("/events")  # never read: its queue fills
        await wait_until(lambda: len(hub) == 1, 5, "the client registered")
        reader = EventReader(await client.get("/events"))
        await wait_until(lambda: len(hub) == 2, 5, "the second client")
        # 16 MB of events, paced so that the reader keeps up: the other one's TCP buffers
        # fill, then its queue, and it is let go; the reader loses nothing
        count = 800
        for number in range(count):
            hub.publish("n", {"n": number, "pad": "x" * 20000})
            await asyncio.sleep(0.002)
        await wait_until(lambda: hub.disconnected_slow == 1, 10, "the stuck client let go")
        await wait_until(lambda: len(hub) == 1, 10, "only the reading client left")
        await reader.wait_for("n", lambda d: d["n"] == count - 1)
        assert [d["n"] for e, d in reader.events if e == "n"] == list(range(count))
        stuck.close()
        await reader.close()
    finally:
        await client.close()


async def test_shutdown_ends_every_stream() -> None:
    hub = EventHub(heartbeat=60)
    client = await serve(hub)
    readers = [EventReader(await client.get("/events")) for _ in range(4)]
    await wait_until(lambda: len(hub) == 4, 5, "four clients")
    await client.close()  # aiohttp's shutdown calls on_shutdown: hub.close_clients
    for reader in readers:
        await asyncio.wait_for(reader.ended.wait(), 5)
        await reader.close()
    assert len(hub) == 0 and hub.closed
    response = await hub.handle(None)  # type: ignore[arg-type]
    assert response.status == 503
