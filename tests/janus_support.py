"""A real media server for the publishing tests and benchmark: Debian's Janus 1.1 (VideoRoom
plugin, HTTP transport), a small WHIP gateway in front of it (as meetecho's simple-whip-server
does: Janus 1.1 has no WHIP endpoint of its own), and aiortc subscribers through Janus's API.

Janus never uses loopback interfaces for ICE, so inside the loopback-only test namespace a veth
pair carries 127.0.0.2 (loopback_veth); every ICE participant uses that address. Traffic still
never leaves the namespace. See /work/shared/loopback-tests.md, "A real SFU (Janus)".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator

import aiohttp
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from robotcam.video.sources.testpattern import decode_frame_number
from tests.viewer import TrackReaders

JANUS_ADDRESS = "127.0.0.2"  # the veth's address: Janus's (and everyone's) ICE host candidate
ROOM = 1234
PLUGINS = Path("/usr/lib/x86_64-linux-gnu/janus")
VETH, VETH_PEER = "jv0", "jv1"


def janus_binary() -> str | None:
    return shutil.which("janus")


@contextlib.contextmanager
def loopback_veth() -> Iterator[None]:
    """A veth pair with 127.0.0.2 on one end (needs root in its own network namespace)."""
    commands = [
        ["ip", "link", "add", VETH, "type", "veth", "peer", "name", VETH_PEER],
        ["ip", "addr", "add", f"{JANUS_ADDRESS}/32", "dev", VETH],
        ["ip", "link", "set", VETH, "up"],
        ["ip", "link", "set", VETH_PEER, "up"],
    ]
    subprocess.run(["ip", "link", "del", VETH], capture_output=True)  # a leftover from a crash
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["ip", "link", "del", VETH], capture_output=True)


def _write_config(folder: Path, port: int) -> None:
    plugins = sorted(p.name for p in (PLUGINS / "plugins").glob("libjanus_*.so"))
    transports = sorted(p.name for p in (PLUGINS / "transports").glob("libjanus_*.so"))
    (folder / "janus.jcfg").write_text(f"""
general: {{
    configs_folder = "{folder}"
    plugins_folder = "{PLUGINS / 'plugins'}"
    transports_folder = "{PLUGINS / 'transports'}"
    events_folder = "{PLUGINS / 'events'}"
    loggers_folder = "{PLUGINS / 'loggers'}"
    debug_level = 4
    session_timeout = 0
}}
media: {{
    rtp_port_range = "20000-40000"
}}
nat: {{
    ice_enforce_list = "127.0.0."
    full_trickle = false
    ignore_mdns = true
}}
plugins: {{
    disable = "{','.join(p for p in plugins if p != 'libjanus_videoroom.so')}"
}}
transports: {{
    disable = "{','.join(t for t in transports if t != 'libjanus_http.so')}"
}}
events: {{
    broadcast = false
}}
""")
    (folder / "janus.transport.http.jcfg").write_text(f"""
general: {{
    json = "compact"
    base_path = "/janus"
    http = true
    port = {port}
    ip = "127.0.0.1"
    https = false
}}
admin: {{
    admin_http = false
}}
""")
    (folder / "janus.plugin.videoroom.jcfg").write_text(f"""
general: {{
}}
room-{ROOM}: {{
    description = "robot"
    publishers = 6
    bitrate = 4000000
    fir_freq = 10
    videocodec = "h264"
    h264_profile = "42e01f"
    audiocodec = "opus"
}}
""")


class Janus:
    """`janus -F DIR -C DIR/janus.jcfg` in the foreground; killed and restarted at will."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.url = f"http://127.0.0.1:{port}/janus"
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        folder.mkdir(parents=True, exist_ok=True)
        _write_config(folder, port)

    @property
    def log(self) -> Path:
        return self.folder / f"janus-{self.runs}.log"

    async def start(self, timeout: float = 20.0) -> None:
        self.runs += 1
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                ["janus", "-F", str(self.folder), "-C", str(self.folder / "janus.jcfg")],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"janus exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
                try:
                    async with http.get(self.url + "/info", timeout=aiohttp.ClientTimeout(total=1)) as response:
                        if response.status == 200 and "janus.plugin.videoroom" in await response.text():
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"janus did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")
                await asyncio.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


class JanusError(Exception):
    pass


class JanusSession:
    """One Janus API session with one VideoRoom handle, over the HTTP transport."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.session_id: int | None = None
        self.handle_id: int | None = None
        self._transactions = (f"t{n}-{secrets.token_hex(4)}" for n in itertools.count())

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "transaction": next(self._transactions)}
        async with self.http.post(self.url + path, json=body, timeout=aiohttp.ClientTimeout(total=10)) as response:
            reply = await response.json(content_type=None)
        if reply.get("janus") == "error":
            raise JanusError(reply["error"]["reason"])
        return {**reply, "transaction": body["transaction"]}

    async def attach(self) -> None:
        self.session_id = (await self._post("", {"janus": "create"}))["data"]["id"]
        reply = await self._post(f"/{self.session_id}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        self.handle_id = reply["data"]["id"]

    async def message(self, body: dict[str, Any], jsep: dict[str, Any] | None = None, timeout: float = 15.0) -> dict[str, Any]:
        """Send a plugin request; the event that answers it (long-polled)."""
        request: dict[str, Any] = {"janus": "message", "body": body}
        if jsep is not None:
            request["jsep"] = jsep
        reply = await self._post(f"/{self.session_id}/{self.handle_id}", request)
        if reply.get("janus") == "success":
            return reply
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            async with self.http.get(
                f"{self.url}/{self.session_id}?maxev=1", timeout=aiohttp.ClientTimeout(total=35)
            ) as response:
                event = await response.json(content_type=None)
            if event.get("transaction") == reply["transaction"] and event.get("janus") == "event":
                data = event["plugindata"]["data"]
                if "error" in data:
                    raise JanusError(data["error"])
                return event
        raise JanusError(f"no answer to {body.get('request')} within {timeout} s")

    async def destroy(self) -> None:
        if self.session_id is not None:
            with contextlib.suppress(Exception):
                await self._post(f"/{self.session_id}", {"janus": "destroy"})
            self.session_id = None


class WhipGateway:
    """WHIP in front of Janus's VideoRoom: POST /whip -> create session, attach, join as a
    publisher and configure with the offer (joinandconfigure), Janus's answer as the 201 body;
    DELETE /whip/resource/{id} -> destroy the session. Janus down: 503."""

    def __init__(self, janus_url: str, token: str | None = None) -> None:
        self.janus_url = janus_url
        self.token = token
        self.sessions: dict[str, JanusSession] = {}
        self.feeds: dict[str, int] = {}  # resource id -> the publisher's feed id in the room
        self.posts = 0
        self.deletes: list[str] = []
        self._http: aiohttp.ClientSession | None = None
        app = web.Application()
        app.router.add_post("/whip", self._publish)
        app.router.add_delete("/whip/resource/{id}", self._delete)
        self.app = app
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        self._http = aiohttp.ClientSession()
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}/whip"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    @property
    def feed(self) -> int:
        """The latest publisher's feed id."""
        return list(self.feeds.values())[-1]

    async def _publish(self, request: web.Request) -> web.Response:
        assert self._http is not None
        self.posts += 1
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.Response(status=401, text="wrong token")
        offer = await request.text()
        janus = JanusSession(self._http, self.janus_url)
        try:
            await janus.attach()
            event = await janus.message(
                {"request": "joinandconfigure", "ptype": "publisher", "room": ROOM, "display": "robotcam"},
                {"type": "offer", "sdp": offer},
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, JanusError, OSError) as exc:
            await janus.destroy()
            return web.Response(status=503, text=f"media server unavailable: {exc}")
        resource = secrets.token_hex(8)
        self.sessions[resource] = janus
        self.feeds[resource] = event["plugindata"]["data"]["id"]
        return web.Response(
            status=201, text=event["jsep"]["sdp"], content_type="application/sdp",
            headers={"Location": f"/whip/resource/{resource}"},
        )

    async def _delete(self, request: web.Request) -> web.Response:
        resource = request.match_info["id"]
        janus = self.sessions.pop(resource, None)
        if janus is None:
            return web.Response(status=404)
        self.deletes.append(resource)
        await janus.destroy()
        return web.Response(status=200)


class Subscriber:
    """An aiortc viewer of one VideoRoom feed through Janus: decodes the test pattern."""

    def __init__(self, http: aiohttp.ClientSession, janus_url: str) -> None:
        self.janus = JanusSession(http, janus_url)
        self.pc: RTCPeerConnection | None = None
        self.numbers: list[int | None] = []
        self.times: list[float] = []
        self.readers: TrackReaders | None = None

    async def subscribe(self, feed: int) -> None:
        await self.janus.attach()
        event = await self.janus.message(
            {"request": "join", "ptype": "subscriber", "room": ROOM, "streams": [{"feed": feed}]}
        )
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.readers = TrackReaders(self.pc, self._on_frame)

        await self.pc.setRemoteDescription(RTCSessionDescription(**event["jsep"]))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        await self.janus.message(
            {"request": "start", "room": ROOM}, {"type": "answer", "sdp": self.pc.localDescription.sdp}
        )

    def _on_frame(self, track: Any, frame: Any) -> None:
        if track.kind == "video":
            self.numbers.append(decode_frame_number(frame))
            self.times.append(time.monotonic())

    def fps(self, seconds: float = 2.0) -> float:
        """Decoded frames per second over the last `seconds`."""
        now = time.monotonic()
        return sum(1 for t in self.times if t > now - seconds) / seconds

    async def close(self) -> None:
        if self.pc is not None:
            await self.pc.close()
        if self.readers is not None:
            await self.readers.close()
        await self.janus.destroy()


@contextlib.asynccontextmanager
async def janus_with_whip(folder: Path, port: int, token: str | None = None) -> AsyncIterator[tuple[Janus, WhipGateway]]:
    """Janus running behind a WHIP gateway; both stopped afterwards. Needs loopback_veth()."""
    janus = Janus(folder, port)
    await janus.start()
    gateway = WhipGateway(janus.url, token)
    await gateway.start()
    try:
        yield janus, gateway
    finally:
        await gateway.stop()
        janus.stop()


def can_run_janus() -> str | None:
    """Why the Janus tests cannot run here, or None."""
    if janus_binary() is None:
        return "the janus binary is missing (Debian package janus; scripts/bootstrap.sh --test installs it)"
    if os.geteuid() != 0:
        return "needs root in a network namespace (scripts/test.sh) to add the 127.0.0.2 veth"
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout.splitlines()
    names = {line.split(": ")[1].split("@")[0] for line in links if ": " in line}
    if names - {"lo", VETH, VETH_PEER}:
        return "not in a loopback-only network namespace (run it through scripts/test.sh)"
    return None
