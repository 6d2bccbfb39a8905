"""One `publish` entry: a WHIP session fed from the shared hubs, kept up with capped backoff.

The publisher is one more reader of the pipeline's H.264 hub (and of the shared Opus hub), as
a viewer is: its own PeerVideoTrack, the sender's PLI/FIR hook wrapped so the media server's
keyframe requests reach the shared encoder. No second encoder, and never a PeerSession: it
does not count against webrtc.max_peers.

A session ends, and a new one is started after a backoff, when ICE/DTLS fails or does not
connect in time, the server answers an error, or no RTCP receiver report for our stream
arrives for `ack_timeout` seconds while sending (the server stopped acknowledging packets).
Backoff: 1 s doubling to 60 s, back to 1 s after a connection that lasted `stable_after`;
a 4xx other than 429 is a configuration problem (logged once, retried every 60 s); 429/503
wait what Retry-After says.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import aiohttp
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.rtp import RtcpRrPacket, RtcpSrPacket

from robotcam.audio.component import AudioComponent, opus_preferences
from robotcam.audio.fanout import PeerAudioTrack
from robotcam.config import PublishEntry, WebRTCConfig, mask_url
from robotcam.video.hub import PeerVideoTrack
from robotcam.webrtc.ice import bound_gathering
from robotcam.webrtc.peers import SUPPORTED_CODECS, answer_codec, forward_keyframe_requests, video_codec_preferences
from robotcam.video.pipeline import VideoPipeline
from robotcam.publish.whip import IceServerLink, WhipClient, WhipError, WhipResource
from robotcam.webrtc.turn import ice_servers as configured_ice_servers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishTiming:
    """How long a publisher waits for what (seconds). Tests shorten them."""

    backoff_first: float = 1.0
    backoff_max: float = 60.0
    config_error_backoff: float = 60.0  # after a 4xx other than 429: the config must change
    stable_after: float = 30.0  # a connection this long resets the backoff
    connect_timeout: float = 15.0  # answer to ICE+DTLS connected
    ack_timeout: float = 10.0  # sending without an RTCP receiver report this long: restart
    request_timeout: float = 10.0  # each WHIP HTTP request
    delete_timeout: float = 1.5  # DELETE on stop: within the service's shutdown budget
    check_interval: float = 1.0  # how often a connected session is looked at


@dataclass
class PublishMedia:
    """What a publisher reads from: the daemon's cameras and sound component."""

    camera: Callable[[str | None], VideoPipeline]  # name ("": the first) -> its pipeline
    audio: AudioComponent
    webrtc: WebRTCConfig


class SessionEnded(Exception):
    """A connected (or connecting) session ended; the message says why."""


def watch_receiver_reports(sender: RTCRtpSender, on_report: Callable[[], None]) -> None:
    """Call `on_report` for every RTCP RR/SR that reports on this sender's stream: the server
    acknowledging what it receives."""
    handle = sender._handle_rtcp_packet

    async def handle_and_note(packet: Any) -> None:
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)) and any(
            report.ssrc == sender._ssrc for report in packet.reports
        ):
            on_report()
        await handle(packet)

    sender._handle_rtcp_packet = handle_and_note  # type: ignore[method-assign]


def end_of_candidates(sdp: str) -> str:
    """A trickle-ice-sdpfrag (RFC 8840) saying our gathering is complete: aiortc gathers every
    candidate before the offer, so all of them are in it already. With BUNDLE the first media
    section's transport carries everything: its m-line, mid and ICE credentials."""
    credentials, section = [], []
    for line in sdp.splitlines():
        if line.startswith("m="):
            if section:
                break
            section.append(line)
        elif line.startswith(("a=ice-ufrag:", "a=ice-pwd:")) and line not in credentials:
            credentials.append(line)
        elif line.startswith("a=mid:") and section:
            section.append(line)
    return "\r\n".join(credentials + section + ["a=end-of-candidates"]) + "\r\n"


def remote_address(pc: RTCPeerConnection) -> str | None:
    """host:port of the ICE pair in use (aioice's nominated pair), if known."""
    for transceiver in pc.getTransceivers():
        ice = getattr(transceiver.sender.transport, "transport", None)
        connection = getattr(ice, "_connection", None)
        for pair in (getattr(connection, "_nominated", None) or {}).values():
            candidate = pair.remote_candidate
            return f"{candidate.host}:{candidate.port}"
    return None


class Publisher:
    """One publish entry's life: connect, watch, end, back off, again, until stopped."""

    def __init__(
        self, entry: PublishEntry, index: int, media: PublishMedia, http: aiohttp.ClientSession,
        timing: PublishTiming,
    ) -> None:
        self.entry = entry
        self.index = index
        self.media = media
        self.timing = timing
        self.client = WhipClient(
            http, entry.url, entry.token.get_secret_value() if entry.token else None,
            timing.request_timeout,
        )
        self.label = f"publish[{index}] {entry.masked_url}"
        self.state = "stopped"
        self.reason: str | None = None
        self.reconnects = 0
        self.connected_at: float | None = None
        self.server: str | None = None
        self.bitrate_kbps = 0.0
        self.next_attempt_at: float | None = None
        self.attempts = 0
        self.codec: str | None = None
        self._last_report_at = 0.0  # the server's latest RTCP report on our video
        self._video: PeerVideoTrack | None = None
        self._server_ice: list[IceServerLink] = []
        self._logged_config_error: str | None = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"robotcam-publish-{self.index}")

    async def stop(self) -> None:
        """End the session (DELETE on the server, bounded) and the loop."""
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            grace = self.timing.delete_timeout + 1.0
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.state, self.connected_at, self.bitrate_kbps = "stopped", None, 0.0

    async def _pause(self, seconds: float) -> bool:
        """Sleep, unless stopped first (then True)."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    async def _run(self) -> None:
        backoff = self.timing.backoff_first
        while not self._stopping.is_set():
            self.attempts += 1
            try:
                await self._session()
                return  # only returns when stopping
            except SessionEnded as exc:
                kind, message, retry_after = "transient", str(exc), None
            except WhipError as exc:
                kind, message, retry_after = exc.kind, exc.message, exc.retry_after
            except Exception as exc:  # noqa: BLE001 - a bug must not end publishing for good
                log.exception("%s: unexpected error", self.label)
                kind, message, retry_after = "transient", f"internal error: {exc!r}", None
            if self._stopping.is_set():
                return
            if self.connected_at is not None and time.monotonic() - self.connected_at >= self.timing.stable_after:
                backoff = self.timing.backoff_first
            self.connected_at, self.bitrate_kbps = None, 0.0
            self.reconnects += 1
            if kind == "config":
                wait = self.timing.config_error_backoff
                self.state = "failed"
                first = message != self._logged_config_error
                self._logged_config_error = message
                log.log(
                    logging.ERROR if first else logging.DEBUG,
                    "%s: %s; a configuration problem: retrying every %.0f s until it is fixed",
                    self.label, message, wait,
                )
            else:
                if kind == "busy" and retry_after is not None:
                    wait = retry_after
                else:
                    wait, backoff = backoff, min(backoff * 2, self.timing.backoff_max)
                self.state = "backoff"
                log.warning("%s: %s; reconnecting in %.1f s", self.label, message, wait)
            self.reason = message
            self.next_attempt_at = time.monotonic() + wait
            if await self._pause(wait):
                return
            self.next_attempt_at = None

    # --- one session --------------------------------------------------------------------------

    def _rtc_configuration(self) -> RTCConfiguration:
        """The server's ICE servers (its Link headers) when it named any, else ours."""
        if self._server_ice:
            servers = [RTCIceServer(urls=s.url, username=s.username, credential=s.credential) for s in self._server_ice]
        else:
            servers = [
                RTCIceServer(urls=s["urls"], username=s.get("username"), credential=s.get("credential"))
                for s in configured_ice_servers(self.media.webrtc)
            ]
        return RTCConfiguration(iceServers=servers)  # [] never means Google's STUN server

    async def _session(self) -> None:
        """One WHIP session from POST to its end; raises why it ended (returns when stopped)."""
        self.state, self.server = "connecting", None
        if not self._server_ice:
            self._server_ice = await self.client.ice_servers()
        pc = RTCPeerConnection(self._rtc_configuration())
        pipeline = self.media.camera(self.entry.camera)  # looked up per session: reloads replace cameras
        video = PeerVideoTrack(pipeline.queue_size(), -1 - self.index)
        audio: PeerAudioTrack | None = None
        resource: WhipResource | None = None
        try:
            transceiver = pc.addTransceiver(video, direction="sendonly")
            transceiver.setCodecPreferences(video_codec_preferences())
            forward_keyframe_requests(transceiver.sender, video)
            self._last_report_at = 0.0
            watch_receiver_reports(transceiver.sender, self._heard_report)
            if self.entry.audio and self.media.audio.active:
                audio = PeerAudioTrack(-1 - self.index)
                pc.addTransceiver(audio, direction="sendonly").setCodecPreferences(opus_preferences())
            bound_gathering(pc, self.media.webrtc.gather_timeout)
            await pc.setLocalDescription(await pc.createOffer())
            resource = await self.client.publish(pc.localDescription.sdp)
            if resource.ice_servers:
                self._server_ice = resource.ice_servers  # for the next session
            await self._apply_answer(pc, resource, pipeline, video, audio)
            self._video = video
            if resource.trickle:
                try:
                    await self.client.trickle(resource, end_of_candidates(pc.localDescription.sdp))
                except WhipError as exc:
                    log.info("%s: trickle PATCH refused (%s); carrying on without", self.label, exc)
            await self._wait_connected(pc)
            if self._stopping.is_set():
                return
            self.state, self.reason, self.connected_at = "connected", None, time.monotonic()
            self.server = remote_address(pc) or self.client.url
            self._logged_config_error = None
            log.info("%s: publishing %s%s to %s", self.label, self.codec, " + Opus" if audio else "", self.server)
            await self._watch(pc)
        finally:
            self._video = None
            video.stop()
            if audio is not None:
                audio.stop()
            await pc.close()
            if resource is not None:
                await self._delete(resource)

    async def _apply_answer(
        self, pc: RTCPeerConnection, resource: WhipResource, pipeline: VideoPipeline, video: PeerVideoTrack,
        audio: PeerAudioTrack | None,
    ) -> None:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=resource.answer, type="answer"))
            codec = answer_codec(resource.answer)
        except Exception as exc:  # noqa: BLE001 - aiortc's parser raises assorted types
            raise WhipError(f"the server's SDP answer cannot be used: {exc or type(exc).__name__}") from None
        if codec not in SUPPORTED_CODECS:
            raise WhipError(f"the server accepts neither H264 nor VP8 (its answer: {codec})", "config")
        self.codec = codec
        pipeline.attach(video, codec)  # one more reader of the shared encoder
        if audio is not None:
            self.media.audio.hub.subscribe(audio)

    async def _wait_connected(self, pc: RTCPeerConnection) -> None:
        deadline = time.monotonic() + self.timing.connect_timeout
        while pc.connectionState != "connected":
            if pc.connectionState in ("failed", "closed"):
                raise SessionEnded(f"ICE/DTLS {pc.connectionState} before connecting")
            if time.monotonic() > deadline:
                raise SessionEnded(
                    f"not connected {self.timing.connect_timeout:.0f} s after the answer "
                    f"(ICE {pc.iceConnectionState}): the server's media address is unreachable?"
                )
            if await self._pause(0.05):
                return

    def _heard_report(self) -> None:
        self._last_report_at = time.monotonic()

    async def _watch(self, pc: RTCPeerConnection) -> None:
        """Until the connection fails or the server stops acknowledging; measures the bitrate."""
        senders = [t.sender for t in pc.getTransceivers()]
        sent_before, measured_at = await _bytes_sent(senders), time.monotonic()
        while not await self._pause(self.timing.check_interval):
            if pc.connectionState in ("failed", "closed"):
                raise SessionEnded(f"the connection {pc.connectionState}")
            now = time.monotonic()
            heard = max(self._last_report_at, self.connected_at or now)
            if now - heard > self.timing.ack_timeout:
                raise SessionEnded(
                    f"no RTCP receiver report from the server for {now - heard:.0f} s: it stopped acknowledging"
                )
            sent = await _bytes_sent(senders)
            if now - measured_at >= 1.0:
                self.bitrate_kbps = round((sent - sent_before) * 8 / (now - measured_at) / 1000, 1)
                sent_before, measured_at = sent, now

    async def _delete(self, resource: WhipResource) -> None:
        try:
            await asyncio.wait_for(self.client.delete(resource), self.timing.delete_timeout)
            log.info("%s: session ended on the server (DELETE %s)", self.label, mask_url(resource.url))
        except (WhipError, asyncio.TimeoutError) as exc:
            log.info("%s: DELETE %s did not complete (%s)", self.label, mask_url(resource.url), exc or "timeout")

    # --- reporting ----------------------------------------------------------------------------

    @property
    def ok(self) -> bool:
        return self.state not in ("backoff", "failed")

    def health(self) -> dict[str, Any]:
        now = time.monotonic()
        video = self._video
        return {
            "url": self.entry.masked_url,
            "camera": self.entry.camera or self.media.camera(None).name,
            "state": self.state,
            "ok": self.ok,
            "reason": self.reason,
            "reconnects": self.reconnects,
            "codec": self.codec if self.state == "connected" else None,
            "bitrate_kbps": self.bitrate_kbps,
            "uptime": round(now - self.connected_at, 1) if self.connected_at else None,
            "server": self.server,
            "retry_in": round(max(self.next_attempt_at - now, 0.0), 1) if self.next_attempt_at else None,
            "packets_sent": video.packets_sent if video else 0,
            "keyframe_requests": video.keyframe_requests if video else 0,
        }


async def _bytes_sent(senders: list[RTCRtpSender]) -> int:
    total = 0
    for sender in senders:
        for stats in (await sender.getStats()).values():
            if getattr(stats, "type", "") == "outbound-rtp":
                total += getattr(stats, "bytesSent", 0) or 0
    return total

