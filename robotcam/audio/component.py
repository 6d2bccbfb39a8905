"""The robot's sound as a daemon component: one source, one encoder, one hub, a supervisor.

What `audio.source` means:
  none        no sound; viewers get video only
  tone        a test tone (audio.tone_frequency), for machines without a microphone
  microphone  the PortAudio input audio.device names; if it cannot be opened the component
              stays `failed` (/health degraded) and keeps retrying: video is unaffected
  auto        the microphone when PortAudio and an input device exist, else none; the log
              and /health say which and why

A source that records its own failure, or delivers no block for `audio.stall_timeout`, is
stopped and reopened with capped backoff (1 s doubling to 30 s), as the video source is; one
log line per failure and one per recovery. Viewers stay connected and hear the sound again
when it returns: their tracks simply wait.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any, Callable

import av
import numpy as np
from aiortc import RTCRtpSender
from aiortc import sdp as aiortc_sdp

from robotcam.audio.base import AudioSource
from robotcam.auth.identity import Identity
from robotcam.audio.clock import AudioClock
from robotcam.audio.devices import AudioUnavailable, find_device, load_portaudio
from robotcam.audio.fanout import AudioHub, PeerAudioTrack
from robotcam.audio.microphone import MicrophoneSource
from robotcam.audio.opus import SharedOpusEncoder
from robotcam.audio.tone import ToneSource
from robotcam.config import AudioConfig, Config
from robotcam.webrtc.peers import PeerSession

log = logging.getLogger(__name__)

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 30.0
TRACK_KEY = "audio_track"  # PeerSession.extras key holding the viewer's PeerAudioTrack


def choose_source(audio: AudioConfig) -> tuple[AudioSource | None, str, str]:
    """(source or None, its name, why) for `audio.source`. Blocking (PortAudio probing);
    raises AudioUnavailable for an explicit `microphone` that cannot be found."""
    if audio.source == "none":
        return None, "none", "audio.source is none"
    if audio.source == "tone":
        return ToneSource(audio), "tone", f"audio.source is tone: a {audio.tone_frequency:g} Hz test tone"
    try:
        sd = load_portaudio()
        device = find_device(sd, audio.device, "input", "audio.device")
    except AudioUnavailable as exc:
        if audio.source == "microphone":
            raise AudioUnavailable(f"audio.source is microphone, but {exc}") from None
        return None, "none", f"audio.source is auto: {exc}; no sound"
    why = f"audio.source is {audio.source}: {device.name}"
    return MicrophoneSource(sd, device, audio), "microphone", why


def _source_settings(audio: AudioConfig) -> tuple[Any, ...]:
    """What needs the source reopened when a reload changes it."""
    return (audio.source, audio.device, audio.sample_rate, audio.channels, audio.block_size)


class AudioComponent:
    """The sound singleton (Component protocol). Event-loop side; the source and the encoder
    run in their own threads."""

    name = "audio"

    def __init__(self, config: Config) -> None:
        self.audio = config.audio
        self.hub = AudioHub(on_empty=self._last_listener_left)
        self.extension = AudioExtension(self)
        #: Opus encoded once for all viewers (see opus.py for the measurement). False hands
        #: aiortc raw frames to encode per viewer: only for measuring the difference.
        self.shared_encoder = True
        self.clock = AudioClock(self.audio.sample_rate)
        self.source: AudioSource | None = None
        self.source_name = "none"
        self.reason = "not started"
        self.state = "stopped"
        self.problem: str | None = None
        self.restarts = 0
        self.blocks = 0
        self.last_block_at: float | None = None
        self._run_started_at = 0.0
        self._encoder: SharedOpusEncoder | None = None
        self._encoder_started_at = 0.0
        self._retired: list[SharedOpusEncoder] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._opened_settings: tuple[Any, ...] | None = None

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Choose and open the source; never raises for a missing or broken device (video
        must start anyway): the supervisor keeps trying and /health says why."""
        self._loop = asyncio.get_running_loop()
        await self._open()
        self._supervisor = asyncio.create_task(self._supervise(), name="robotcam-audio")

    async def stop(self) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            await asyncio.gather(self._supervisor, return_exceptions=True)
            self._supervisor = None
        self.hub.close()  # stops every track; the last one stops the encoder
        self._stop_encoder()
        await self._close_source()
        retired, self._retired = self._retired, []

        def join_all() -> None:
            for encoder in retired:
                encoder.join()

        await asyncio.to_thread(join_all)
        self.state = "stopped"

    async def _open(self) -> None:
        """(Re)choose the source from the current config and start it."""
        audio = self.audio
        self._opened_settings = _source_settings(audio)
        try:
            source, name, why = await asyncio.to_thread(choose_source, audio)
            if source is not None:
                await asyncio.to_thread(source.open)
        except Exception as exc:  # noqa: BLE001 - sound must never keep video from starting
            message = str(exc) if isinstance(exc, AudioUnavailable) else f"cannot open the sound source: {exc!r}"
            self.source, self.source_name = None, "microphone"
            self.state, self.problem = "failed", message
            self.reason = message
            log.error("sound: %s", message)
            return
        self.source_name, self.reason = name, why
        if source is None:
            self.state, self.problem = "off", None
            log.info("sound: none (%s)", why)
            return
        self.clock.begin_run(source.sample_rate)
        self.source = source
        self._run_started_at = time.monotonic()
        self.state, self.problem = "starting", None
        source.start(functools.partial(self._deliver, source))
        log.info("sound: %s (%s)", name, why)

    async def _close_source(self) -> None:
        source, self.source = self.source, None
        if source is not None:
            await asyncio.to_thread(source.stop)

    # --- blocks: source thread -> event loop ------------------------------------------------

    def _deliver(self, source: AudioSource, block: np.ndarray) -> None:
        """Called on the source's thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            loop.call_soon_threadsafe(self._on_block, source, block)
        except RuntimeError:  # the loop closed between the check and the call: shutting down
            pass

    def _on_block(self, source: AudioSource, block: np.ndarray) -> None:
        if source is not self.source:
            return  # a straggler from a source already stopped
        self.blocks += 1
        self.last_block_at = time.monotonic()
        if self.state != "running":
            if self.restarts:
                log.info("sound: %s recovered: blocks flowing again", self.source_name)
            self.state, self.problem = "running", None
        frame = self.clock.frame(block)
        if not len(self.hub):
            return
        if self.shared_encoder:
            encoder = self._encoder
            if encoder is None or not encoder.alive:
                if encoder is not None and encoder.error and time.monotonic() - self._encoder_started_at < 5:
                    return  # it just failed (and said so): not a new thread per block
                encoder = self._start_encoder(block.shape[1])
            encoder.submit(frame)
        else:
            self.hub.publish(frame)

    # --- the shared encoder: only while someone listens; it starts with the first block
    # that has a listener (it needs the block's channel count) and stops with the last one.

    def _start_encoder(self, channels: int) -> SharedOpusEncoder:
        self._stop_encoder()
        encoder = SharedOpusEncoder(channels, self._publisher())
        encoder.start()
        self._encoder, self._encoder_started_at = encoder, time.monotonic()
        log.info("sound: %s started for the first listener", encoder.implementation)
        return encoder

    def _publisher(self) -> Callable[[av.Packet], None]:
        def publish(packet: av.Packet) -> None:  # encoder thread
            loop = self._loop
            if loop is None or loop.is_closed():
                return
            try:
                loop.call_soon_threadsafe(self.hub.publish, packet)
            except RuntimeError:
                pass
        return publish

    def _last_listener_left(self) -> None:
        if self._encoder is not None:
            self._stop_encoder()
            log.info("sound: Opus encoder stopped, no listeners left")

    def _stop_encoder(self) -> None:
        encoder, self._encoder = self._encoder, None
        if encoder is not None:
            encoder.close()  # the thread ends by itself; stop() joins it
            self._retired = [e for e in self._retired if e.alive] + [encoder]

    # --- supervision ------------------------------------------------------------------------

    def _source_problem(self) -> str | None:
        source = self.source
        if source is None:
            return self.problem if self.state == "failed" else None
        if source.error:
            return f"{source.name}: {source.error}"
        last = max(self.last_block_at or 0.0, self._run_started_at)
        idle = time.monotonic() - last
        if idle > self.audio.stall_timeout:
            return f"{source.name} delivered no sound for {idle:.1f} s"
        return None

    async def _supervise(self) -> None:
        """Restart a failed or silent source with capped backoff; reopen on changed settings."""
        backoff = BACKOFF_FIRST
        while True:
            await asyncio.sleep(min(0.5, self.audio.stall_timeout / 4))
            if _source_settings(self.audio) != self._opened_settings:
                log.info("sound: settings changed: reopening the source")
                await self._close_source()
                await self._open()
                backoff = BACKOFF_FIRST
                continue
            problem = self._source_problem()
            if problem is None:
                if self.state == "running":
                    backoff = BACKOFF_FIRST
                continue
            self.state = "stalled" if self.source is not None and not self.source.error else "failed"
            self.problem = problem
            self.restarts += 1
            log.error("sound: %s; restarting it in %.0f s (video is not affected)", problem, backoff)
            await self._close_source()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            await self._open()
            if self.state == "failed":
                self.problem = f"cannot reopen: {self.problem}"

    # --- Component protocol -----------------------------------------------------------------

    def apply_config(self, config: Config) -> None:
        """tone_frequency and stall_timeout apply at once; source, device and format changes
        make the supervisor reopen the source."""
        self.audio = config.audio
        if isinstance(self.source, ToneSource):
            self.source.frequency = config.audio.tone_frequency

    @property
    def active(self) -> bool:
        """Whether viewers get a sound track (a failed microphone counts: it may come back)."""
        return self.source_name != "none"

    def health(self) -> dict[str, Any]:
        age = None if self.last_block_at is None else round(time.monotonic() - self.last_block_at, 3)
        encoder = self._encoder
        return {
            "source": self.source_name,
            "reason": self.reason,
            "state": self.state,
            "ok": self.state not in ("failed", "stalled"),
            "problem": self.problem,
            "restarts": self.restarts,
            "sample_rate": self.clock.sample_rate,
            "channels": self.audio.channels,
            "blocks": self.blocks,
            "last_block_age": age,
            **(self.source.describe() if self.source is not None else {}),
            "listeners": len(self.hub),
            "encoder": (
                encoder.implementation if encoder is not None
                else "aiortc, per viewer" if not self.shared_encoder else None
            ),
            "packets_encoded": encoder.packets if encoder is not None else 0,
        }


def opus_preferences() -> list[Any]:
    """Opus only: the shared encoder's packets are Opus, whatever else a browser offers."""
    return [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType.lower() == "audio/opus"]


class AudioExtension:
    """The per-viewer side (PeerExtension): a PeerAudioTrack on the offer's audio section.

    The transceiver is sendrecv, so the same section also carries the viewer's voice when it
    holds the talk button (see talk.py): no renegotiation is ever needed."""

    def __init__(self, component: AudioComponent) -> None:
        self.component = component

    def prepare(self, session: PeerSession, offer: aiortc_sdp.SessionDescription) -> None:
        if not self.component.active:
            return
        media = next((m for m in offer.media if m.kind == "audio"), None)
        if media is None or media.direction not in (None, "sendrecv", "recvonly"):
            return
        if not any(c.name.lower() == "opus" for c in media.rtp.codecs):
            log.info("viewer %d: offers no Opus, so it gets no sound", session.id)
            return
        track = PeerAudioTrack(session.id)
        transceiver = session.pc.addTransceiver(track, direction="sendrecv")
        transceiver.setCodecPreferences(opus_preferences())
        session.extras[TRACK_KEY] = track

    def answered(self, session: PeerSession) -> None:
        track = session.extras.get(TRACK_KEY)
        if isinstance(track, PeerAudioTrack):
            self.component.hub.subscribe(track)
            session.extras["audio"] = "opus"

    async def closed(self, session: PeerSession) -> None:
        track = session.extras.get(TRACK_KEY)
        if isinstance(track, PeerAudioTrack):
            track.stop()

    def client_config(self, identity: Identity) -> dict[str, Any]:
        component = self.component
        return {"audio": {"source": component.source_name, "available": component.active}}
