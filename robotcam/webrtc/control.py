"""Robot control: the viewers' `control` data channels, bridged to the robot program's socket.

The robot's own program (motors, sensors) listens on a Unix socket (`control.socket`) and
robotcam connects to it, so that program can be written in anything and restarted at will:
robotcam reconnects with backoff and /health says whether it is connected.

    viewer --(data channel "control", JSON)--> robotcam --(one JSON line + "viewer": id)--> program
    program --(JSON lines: telemetry)--> robotcam --(the same line)--> every viewer's channel

What a viewer sends is checked here, so the program only ever reads well-formed objects: at
most `control.max_message_bytes`, at most `control.max_messages_per_second` per viewer, a JSON
object; anything else is answered `{"type": "error", "error": "..."}` on that channel and the
viewer stays connected. Nothing is queued while the program is away (a drive command delivered
seconds late is worse than none): such messages are answered with an error instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from aiortc import RTCDataChannel
from aiortc import sdp as aiortc_sdp

from robotcam.auth.audit import Throttle
from robotcam.auth.audit import log as audit
from robotcam.auth.audit import suffix as audit_suffix
from robotcam.auth.identity import Identity
from robotcam.config import Config, ControlConfig
from robotcam.webrtc.peers import PeerSession

log = logging.getLogger(__name__)

CHANNEL_LABEL = "control"
LINE_LIMIT = 64 * 1024  # longest line accepted from the robot program, bytes
OUTBOX_SIZE = 256  # lines waiting for the program to read them; beyond that, refused
MAX_BUFFERED = 256 * 1024  # a viewer's channel holding this much unsent skips telemetry
BACKOFF_MIN, BACKOFF_MAX = 0.5, 5.0  # seconds between connection attempts


def error(message: str) -> str:
    return json.dumps({"type": "error", "error": message})


class RateLimiter:
    """Token bucket: `rate` messages per second, bursts of up to one second's worth."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = max(1.0, rate)
        self.stamp = time.monotonic()
        self._warned_at = -1e9

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(max(1.0, self.rate), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def should_warn(self) -> bool:
        """Say so at most once a second: the error replies must not become a flood too."""
        now = time.monotonic()
        if now - self._warned_at >= 1.0:
            self._warned_at = now
            return True
        return False


class ControlExtension:
    """The per-viewer side (a PeerExtension): accepts `control` channels, checks messages."""

    def __init__(self, bridge: ControlBridge) -> None:
        self.bridge = bridge
        self.channels: dict[int, set[RTCDataChannel]] = {}
        self.refusals = Throttle()  # audit lines for refused control messages, per viewer
        self.activity = Throttle()  # audit lines for driving, per viewer

    def prepare(self, session: PeerSession, offer: aiortc_sdp.SessionDescription) -> None:
        @session.pc.on("datachannel")
        def on_channel(channel: RTCDataChannel) -> None:
            if channel.label == CHANNEL_LABEL:
                self._attach(session, channel)

    def answered(self, session: PeerSession) -> None:
        pass

    async def closed(self, session: PeerSession) -> None:
        self.channels.pop(session.id, None)

    def client_config(self, identity: Identity) -> dict[str, Any]:
        config = self.bridge.config
        return {"control": {
            "enabled": config.enabled and identity.allows("control"),
            "permitted": identity.allows("control"),
            "label": CHANNEL_LABEL,
            "max_message_bytes": config.max_message_bytes,
            "max_messages_per_second": config.max_messages_per_second,
        }}

    def open_channels(self) -> list[RTCDataChannel]:
        return [c for group in self.channels.values() for c in group if c.readyState == "open"]

    def _attach(self, session: PeerSession, channel: RTCDataChannel) -> None:
        limiter = RateLimiter(self.bridge.config.max_messages_per_second)
        self.channels.setdefault(session.id, set()).add(channel)
        session.extras["control"] = True
        log.info("viewer %d: control channel open", session.id)

        @channel.on("message")
        def on_message(data: str | bytes) -> None:
            reply = self._check_and_forward(session, limiter, data)
            if reply is not None and channel.readyState == "open":
                channel.send(reply)

        @channel.on("close")
        def on_close() -> None:
            group = self.channels.get(session.id)
            if group is not None:
                group.discard(channel)

    def _check_and_forward(self, session: PeerSession, limiter: RateLimiter, data: str | bytes) -> str | None:
        """The error reply for a message we refuse, or None once it is on its way."""
        config = self.bridge.config
        if not config.enabled:
            return error("robot control is off on this robot (control.enabled: false)")
        identity = session.identity
        if not identity.allows("control"):
            held = self.refusals.allow(f"{session.id}")
            if held is not None:
                audit.warning("control refused: viewer %d (%s) lacks 'control'%s",
                              session.id, identity.label, audit_suffix(held))
            return error(f"{identity.label} may not drive this robot: it needs the 'control' permission")
        size = len(data) if isinstance(data, bytes) else len(data.encode("utf-8"))
        if size > config.max_message_bytes:
            return error(
                f"message too large ({size} bytes): the limit is {config.max_message_bytes} "
                "(control.max_message_bytes)"
            )
        if limiter.rate != config.max_messages_per_second:  # a reload changed the limit
            limiter.rate = config.max_messages_per_second
        if not limiter.allow():
            if limiter.should_warn():
                return error(
                    f"too many messages: at most {config.max_messages_per_second:g} per second "
                    "(control.max_messages_per_second); the excess is dropped"
                )
            return None
        try:
            message = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            return error(f"not valid JSON: {exc}")
        if not isinstance(message, dict):
            return error('a message must be a JSON object, e.g. {"type": "drive", "linear": 0.5, "angular": 0}')
        message["viewer"] = session.id  # the program knows who sent it; viewers cannot fake it
        if identity.kind in ("user", "token"):
            message["user"] = identity.name
        reply = self.bridge.forward(message)
        if reply is None:
            self._audit_driving(session)
        return reply

    def _audit_driving(self, session: PeerSession) -> None:
        """One audit line when a viewer starts driving, then at most one a minute, counting the
        messages in between."""
        held = self.activity.allow(f"{session.id}")
        if held is not None:
            audit.info("control: viewer %d (%s) is driving%s", session.id,
                       session.identity.label, audit_suffix(held))

    def broadcast(self, line: str) -> int:
        """Send one line from the program to every viewer's open channel; how many got it."""
        sent = 0
        for channel in self.open_channels():
            if channel.bufferedAmount > MAX_BUFFERED:  # that viewer is not keeping up
                continue
            channel.send(line)
            sent += 1
        return sent


class ControlBridge:
    """The robot program's socket (a daemon Component): connect, reconnect, pump lines."""

    name = "control"

    def __init__(self, config: ControlConfig) -> None:
        self.config = config
        self.extension = ControlExtension(self)
        self.connected = False
        self.reason: str | None = None  # why not connected, for /health
        self.to_robot = 0
        self.from_robot = 0
        self.bad_lines = 0
        self.connects = 0
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(OUTBOX_SIZE)
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- Component ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="robotcam-control")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.connected = False

    def health(self) -> dict[str, Any]:
        if not self.config.enabled:
            return {"enabled": False}
        return {
            "enabled": True,
            "ok": self.connected,
            "socket": self.config.socket,
            "connected": self.connected,
            "reason": None if self.connected else self.reason,
            "viewers": len(self.extension.open_channels()),
            "to_robot": self.to_robot,
            "from_robot": self.from_robot,
            "bad_lines": self.bad_lines,
            "connects": self.connects,
        }

    def apply_config(self, config: Config) -> None:
        if config.control != self.config:
            old, self.config = self.config, config.control
            if (old.enabled, old.socket) != (config.control.enabled, config.control.socket):
                self._changed.set()  # reconnect (or disconnect) with the new settings

    # --- viewers to program ------------------------------------------------------------------

    def forward(self, message: dict[str, Any]) -> str | None:
        """Queue one message for the program; the error reply if it cannot take it now."""
        if not self.connected:
            return error(f"the robot program is not connected ({self.reason or 'connecting'})")
        line = json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"
        try:
            self._outbox.put_nowait(line)
        except asyncio.QueueFull:
            return error("the robot program is not keeping up: message dropped")
        return None

    # --- the connection ----------------------------------------------------------------------

    async def _run(self) -> None:
        backoff = BACKOFF_MIN
        last_failure = ""
        while True:
            self._changed.clear()
            config = self.config
            if not config.enabled:
                self.reason = "control.enabled is false"
                await self._changed.wait()
                continue
            try:
                reader, writer = await asyncio.open_unix_connection(config.socket, limit=LINE_LIMIT)
            except OSError as exc:
                self.reason = f"cannot connect to {config.socket}: {exc.strerror or exc}"
                if self.reason != last_failure:  # once per kind of failure, not every retry
                    log.warning("control: %s (is the robot program running? retrying)", self.reason)
                    last_failure = self.reason
                await self._wait_changed(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff, last_failure = BACKOFF_MIN, ""
            self.connects += 1
            self._drain_outbox()  # nothing stale from before: only what viewers send from now
            self.connected, self.reason = True, None
            log.info("control: connected to the robot program at %s", config.socket)
            try:
                why = await self._serve(reader, writer)
            finally:
                self.connected = False
                writer.close()
                try:
                    await asyncio.wait_for(writer.wait_closed(), 1.0)
                except (OSError, asyncio.TimeoutError):
                    pass
            self.reason = why
            log.warning("control: %s; reconnecting", why)

    async def _wait_changed(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def _drain_outbox(self) -> None:
        while not self._outbox.empty():
            self._outbox.get_nowait()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> str:
        """Pump both ways until the program goes or the config changes; says why it ended."""
        tasks = {
            asyncio.create_task(self._read(reader)): "read",
            asyncio.create_task(self._write(writer)): "write",
            asyncio.create_task(self._changed.wait()): "changed",
        }
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        task = next(iter(done))
        if tasks[task] == "changed":
            return "the control settings changed"
        exc = task.exception()
        if exc is not None:
            return f"the connection to the robot program failed ({exc})"
        return "the robot program closed the connection"

    async def _read(self, reader: asyncio.StreamReader) -> None:
        warned = False
        while True:
            try:
                raw = await reader.readline()
            except ValueError:  # longer than LINE_LIMIT: skipped, the stream goes on
                self.bad_lines += 1
                log.warning("control: the robot program sent a line over %d bytes: skipped", LINE_LIMIT)
                continue
            if not raw:
                return
            text = raw.decode("utf-8", errors="replace").strip()
            if not text:
                continue
            try:
                valid = isinstance(json.loads(text), dict)
            except ValueError:
                valid = False
            if not valid:
                self.bad_lines += 1
                if not warned:  # once per connection; /health counts the rest
                    log.warning("control: the robot program sent a line that is not a JSON object: %.80r", text)
                    warned = True
                continue
            self.from_robot += 1
            self.extension.broadcast(text)

    async def _write(self, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await self._outbox.get()
            writer.write(line)
            await writer.drain()
            self.to_robot += 1
