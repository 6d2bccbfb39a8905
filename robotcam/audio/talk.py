"""Talk-back: one viewer at a time is heard on the robot's speaker.

Every viewer's offer carries a sendrecv audio section from the start (see AudioExtension), with
no microphone attached, so holding the talk button needs no renegotiation: the page asks for
the line (`POST /api/talk`), then attaches its microphone with `replaceTrack`. The daemon reads
every viewer's incoming audio track (aiortc's receive queues are unbounded, so nothing may be
left unread) and passes on only the granted talker's frames. The line is released when the
talker lets go, when its connection ends, and after `talkback.max_talk_seconds`; everyone
sees busy/free live through the `talk` event on /api/events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import av
from aiortc import sdp as aiortc_sdp
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from robotcam.audio.devices import AudioUnavailable, find_device, load_portaudio
from robotcam.audio.speaker import Speaker
from robotcam.auth.audit import log as audit
from robotcam.auth.identity import Identity
from robotcam.config import Config, TalkbackConfig
from robotcam.http.events import EventHub
from robotcam.webrtc.peers import PeerSession
from robotcam.tasks import TaskSet

log = logging.getLogger(__name__)

SPEAKER_LINGER = 3.0  # seconds the speaker stays open after a talk, for the next press


class TalkError(Exception):
    """A talk request refused: status is the HTTP status."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


class TalkbackComponent:
    """The speaker and the line (Component protocol), plus the per-viewer readers."""

    name = "talkback"

    def __init__(self, config: Config, events: EventHub) -> None:
        self.talkback: TalkbackConfig = config.talkback
        self.events = events
        self.extension = TalkExtension(self)
        self.state = "stopped"  # disabled | unavailable | idle | talking | failed
        self.reason: str | None = None
        self.speaker: Speaker | None = None
        self.talker: PeerSession | None = None
        self.talk_started = 0.0
        self.talks = 0
        self.frames_received = 0  # from the talker, passed to the speaker
        self._sd: Any = None
        self._device_spec: str | None = None
        self._speaker_lock = asyncio.Lock()
        self.tasks = TaskSet()  # speaker linger, talk limit, re-probes, per-viewer readers
        self._expiry: asyncio.Task[None] | None = None
        self._linger: asyncio.Task[None] | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self._probe()
        self._publish()

    async def _probe(self) -> None:
        """Find the speaker (blocking PortAudio work in a thread); never raises: a robot
        without one streams anyway, and says why talking is off."""
        self._device_spec = self.talkback.device
        if not self.talkback.enabled:
            self.state, self.reason = "disabled", "talk-back is disabled (talkback.enabled: false)"
            log.info("talk-back: disabled (talkback.enabled: false)")
            return

        def probe() -> tuple[Any, Any]:
            sd = load_portaudio()
            return sd, find_device(sd, self.talkback.device, "output", "talkback.device")

        try:
            self._sd, device = await asyncio.to_thread(probe)
        except Exception as exc:  # noqa: BLE001 - no speaker must never keep video from starting
            why = str(exc) if isinstance(exc, AudioUnavailable) else repr(exc)
            self.state, self.reason = "unavailable", f"talk-back is unavailable: {why}"
            log.warning("%s; the talk button is disabled", self.reason)
            return
        self.speaker = Speaker(self._sd, device, self.talkback.volume)
        self.state, self.reason = "idle", None
        log.info("talk-back: speaker %s (%d Hz)", device.name, self.speaker.rate)

    async def stop(self) -> None:
        if self.talker is not None:
            self._release("shutting down")
        await self.tasks.close()
        await self._close_speaker()
        self.state = "stopped"

    def apply_config(self, config: Config) -> None:
        """Volume and the time limit apply at once; enabling, disabling or another device
        takes effect when nobody is talking."""
        old, self.talkback = self.talkback, config.talkback
        if self.speaker is not None:
            self.speaker.volume = config.talkback.volume
        if (old.enabled, old.device) != (config.talkback.enabled, config.talkback.device):
            self.tasks.spawn(self._reprobe())

    async def _reprobe(self) -> None:
        if self.talker is not None:
            self._release("talk-back settings changed")
        await self._close_speaker()
        self.speaker = None
        await self._probe()
        self._publish()

    # --- the line ---------------------------------------------------------------------------

    async def request(self, session: PeerSession) -> dict[str, Any]:
        """Grant the line to `session` or raise TalkError (403 off, 409 busy, 503 speaker)."""
        if not session.identity.allows("talk"):
            raise TalkError(403, f"{session.identity.label} may not talk: it needs the 'talk' permission")
        if self.state in ("disabled", "unavailable", "stopped"):
            raise TalkError(403, self.reason or "talk-back is not running")
        if self.talker is not None and self.talker is not session:
            raise TalkError(409, "line busy", talker=self.talker.id)
        if self.talker is None:
            self.talker, self.talk_started = session, time.monotonic()
            self.talks += 1
            self.state = "talking"
            self._expiry = self.tasks.spawn(self._expire(session), "robotcam-talk-limit")
            audit.info("talk line taken: viewer %d (%s)", session.id, session.identity.label)
            self._publish()
            try:
                await self._open_speaker()
            except AudioUnavailable as exc:
                self._release("speaker failed")
                self.state, self.reason = "failed", str(exc)
                self._publish()
                log.error("talk-back: %s", exc)
                raise TalkError(503, f"the robot's speaker cannot be used: {exc}") from None
            self.reason = None
        return {"talking": True, "max_seconds": self.talkback.max_talk_seconds,
                "remaining": round(self.talkback.max_talk_seconds - (time.monotonic() - self.talk_started), 1)}

    def release(self, session: PeerSession, why: str) -> bool:
        """Free the line if `session` holds it."""
        if self.talker is session:
            self._release(why)
            return True
        return False

    def _release(self, why: str) -> None:
        session, self.talker = self.talker, None
        if self._expiry is not None and self._expiry is not asyncio.current_task():
            self._expiry.cancel()
        self._expiry = None
        if self.state == "talking":
            self.state = "idle"
        if session is not None:
            audit.info("talk line released: viewer %d (%s): %s", session.id, session.identity.label, why)
        self._publish()
        if self._linger is not None:
            self._linger.cancel()
        self._linger = self.tasks.spawn(self._close_speaker_later())

    async def _expire(self, session: PeerSession) -> None:
        await asyncio.sleep(self.talkback.max_talk_seconds)
        if self.talker is session:
            self._release(f"talkback.max_talk_seconds ({self.talkback.max_talk_seconds:g} s) reached")

    def _publish(self) -> None:
        """The retained `talk` event: busy for everyone, `you` for the talker's own page."""
        talker = self.talker
        available = self.state in ("idle", "talking", "failed")

        def render(session_key: str | None) -> dict[str, Any]:
            return {
                "busy": talker is not None,
                "you": talker is not None and session_key == talker.key,
                "available": available,
                "reason": self.reason,
            }

        self.events.publish("talk", render, retain=True)

    # --- the speaker: opened on the first press, closed a while after the last --------------

    async def _open_speaker(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        async with self._speaker_lock:
            speaker = self.speaker
            if speaker is None:
                raise AudioUnavailable("no speaker")
            if speaker.error:  # it failed while open: start afresh
                await asyncio.to_thread(speaker.close)
            if not speaker.is_open:
                await asyncio.to_thread(speaker.open)
            if self.state == "failed":
                self.state, self.reason = ("talking" if self.talker else "idle"), None

    async def _close_speaker_later(self) -> None:
        await asyncio.sleep(SPEAKER_LINGER)
        if self.talker is None:
            await self._close_speaker()

    async def _close_speaker(self) -> None:
        async with self._speaker_lock:
            if self.speaker is not None and self.speaker.is_open:
                await asyncio.to_thread(self.speaker.close)

    # --- per-viewer readers -----------------------------------------------------------------

    async def read(self, session: PeerSession, track: MediaStreamTrack) -> None:
        """Drain one viewer's incoming audio; only the talker's reaches the speaker."""
        try:
            while True:
                frame = await track.recv()
                speaker = self.speaker
                if (self.talker is session and speaker is not None and speaker.is_open
                        and isinstance(frame, av.AudioFrame)):
                    self.frames_received += 1
                    speaker.feed(frame)
        except MediaStreamError:
            pass

    # --- /health ----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        speaker = self.speaker
        return {
            "enabled": self.talkback.enabled,
            "state": self.state,
            "reason": self.reason,
            "ok": self.state != "failed" and not (speaker is not None and speaker.error),
            "talker": self.talker.id if self.talker is not None else None,
            "talks": self.talks,
            "frames_received": self.frames_received,
            **(
                {**speaker.describe(), "speaker_open": speaker.is_open,
                 "samples_played": speaker.samples_played, "underruns": speaker.underruns}
                if speaker is not None else {}
            ),
        }


class TalkExtension:
    """The per-viewer side (PeerExtension): read each viewer's incoming audio track."""

    def __init__(self, component: TalkbackComponent) -> None:
        self.component = component
        self.readers: dict[int, asyncio.Task[None]] = {}

    def prepare(self, session: PeerSession, offer: aiortc_sdp.SessionDescription) -> None:
        @session.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and session.id not in self.readers:
                self.readers[session.id] = self.component.tasks.spawn(self.component.read(session, track))

    def answered(self, session: PeerSession) -> None:
        """Nothing: the reader started with the track."""

    async def closed(self, session: PeerSession) -> None:
        self.component.release(session, "viewer left")
        reader = self.readers.pop(session.id, None)
        if reader is not None:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    def client_config(self, identity: Identity) -> dict[str, Any]:
        component = self.component
        permitted = identity.allows("talk")
        return {
            "talkback": {
                "enabled": component.talkback.enabled,
                "permitted": permitted,
                "available": permitted and component.state in ("idle", "talking", "failed"),
                "reason": component.reason if permitted else f"{identity.label} may not talk (the 'talk' permission)",
                "max_seconds": component.talkback.max_talk_seconds,
            }
        }
