"""One RTCPeerConnection per viewer: negotiate, watch, time out, close.

A viewer gets its own PeerVideoTrack per video section of its offer, each attached to the hub of
one camera for the codec the answer settled on (H.264 preferred, VP8 for browsers without it):
N receive-only video sections get the first N cameras in config order, or the ones the viewer
named. Its PLI/FIR requests reach the shared encoder: aiortc only forwards them to encoders it
runs itself, so the sender's hook is wrapped. A section can move to another camera later, at
that camera's next keyframe, without a new offer (`switch_camera`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from aiortc import (
    RTCConfiguration,
    RTCIceCandidate,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import InternalError, InvalidStateError, OperationError
from aiortc.rtp import RTCP_RTPFB_NACK, RtcpRtpfbPacket

from robotcam.auth.identity import OPEN, Identity
from robotcam.config import WebRTCConfig
from robotcam.video.hub import PeerVideoTrack
from robotcam.webrtc.ice import bound_gathering
from robotcam.webrtc.link import LinkEstimate, ResendPacer
from robotcam.video.cameras import Cameras, UnknownCamera
from robotcam.video.rungs import RungPolicy
from robotcam.video.pipeline import VideoPipeline
from robotcam.tasks import TaskSet
from robotcam.webrtc.turn import ice_servers

log = logging.getLogger(__name__)

SUPPORTED_CODECS = ("H264", "VP8")
_CLOSE_TASK = "robotcam-peer-close"
CLOSE_WAIT = 2.0  # seconds shutdown waits for closes already under way


class OfferError(Exception):
    """An offer we refuse: status is the HTTP status, the message says what to fix."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass(eq=False)
class PeerVideo:
    """One video section of a viewer's connection: the camera it shows, its track, and the
    link its own RTCP describes (each section has its own sender and SSRC)."""

    index: int  # the section's place among the offer's video sections
    pipeline: VideoPipeline  # the camera shown now
    track: PeerVideoTrack
    codec: str | None = None
    mid: str | None = None
    #: the link, from the RTCP the browser sends for this section, and its rung on the ladder
    link: LinkEstimate | None = None
    policy: RungPolicy | None = None
    pacer: asyncio.Task[None] | None = None  # resends NACKed packets at the link's pace

    @property
    def camera(self) -> str:
        return self.pipeline.name

    def describe(self) -> dict[str, Any]:
        policy = self.policy
        return {
            "camera": self.camera,
            "codec": self.codec,
            "packets_sent": self.track.packets_sent,
            "packets_dropped": self.track.packets_dropped,
            "keyframe_requests": self.track.keyframe_requests,
            "link": self.link.describe() if self.link else None,
            **({"rung": policy.rung, "rendition": policy.rungs[min(policy.rung, len(policy.rungs) - 1)].describe(),
                "rendition_why": policy.why, "rendition_moves": policy.moves} if policy else {}),
        }


@dataclass(eq=False)
class PeerSession:
    id: int  # for log lines and /health
    pc: RTCPeerConnection
    videos: list[PeerVideo]  # at least one: an offer needs a video section
    #: who opened it (the HTTP side decided): the talk line and the control channel check it
    identity: Identity = OPEN
    #: unguessable: names the session in URLs (WHEP resources, talk requests)
    key: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    created: float = field(default_factory=time.monotonic)
    expiry: asyncio.Task[None] | None = None
    #: what extensions keep per viewer (their own keys); scalars show in /health
    extras: dict[str, Any] = field(default_factory=dict)
    released: bool = False

    # The first video section, for everything that knew one camera only.
    @property
    def track(self) -> PeerVideoTrack:
        return self.videos[0].track

    @property
    def codec(self) -> str | None:
        return self.videos[0].codec

    @property
    def link(self) -> LinkEstimate | None:
        return self.videos[0].link

    @property
    def policy(self) -> RungPolicy | None:
        return self.videos[0].policy

    def describe(self) -> dict[str, Any]:
        first = self.videos[0].describe()
        return {
            "id": self.id,
            "state": self.pc.connectionState,
            **{k: v for k, v in first.items() if k != "camera"},
            "user": self.identity.label,
            "age": round(time.monotonic() - self.created, 1),
            "cameras": [video.camera for video in self.videos],
            **({"videos": [video.describe() for video in self.videos]} if len(self.videos) > 1 else {}),
            **{k: v for k, v in self.extras.items() if isinstance(v, (str, int, float, bool))},
        }


class PeerExtension(Protocol):
    """What a viewer's connection carries besides video (sound, talk-back, control channel).
    Extensions hook into every session's life instead of each editing the negotiation."""

    def prepare(self, session: PeerSession, offer: aiortc_sdp.SessionDescription) -> None:
        """Before the offer is applied: add tracks, set codec preferences, register pc events."""

    def answered(self, session: PeerSession) -> None:
        """After the answer is set: the session is about to be handed to the viewer."""

    async def closed(self, session: PeerSession) -> None:
        """The session ended: release what it held (never raises)."""

    def client_config(self, identity: Identity) -> dict[str, Any]:
        """What the web client needs to know (GET /api/config), merged at the top level; what
        `identity` may not use is shown as unavailable."""


def video_codec_preferences() -> list[Any]:
    """H.264 constrained baseline first (every browser decodes it, Pi cameras encode it),
    then VP8, each with its retransmission codec."""
    caps = RTCRtpSender.getCapabilities("video").codecs

    def rank(codec: Any) -> tuple[int, int]:
        name = codec.mimeType.split("/")[1].upper()
        order = {"H264": 0, "VP8": 1, "RTX": 2}.get(name, 3)
        constrained = 0 if codec.parameters.get("profile-level-id", "").lower() == "42e01f" else 1
        return order, constrained

    return sorted((c for c in caps if rank(c)[0] < 3), key=rank)


def forward_keyframe_requests(sender: RTCRtpSender, track: PeerVideoTrack) -> None:
    """Make the remote side's PLI/FIR reach the shared encoder behind `track`: aiortc only
    forwards them to encoders it runs itself, so the sender's hook is wrapped."""
    request_from_remote = sender._send_keyframe

    def on_picture_loss() -> None:
        request_from_remote()
        track.request_keyframe()

    sender._send_keyframe = on_picture_loss  # type: ignore[method-assign]


def candidate_problem(candidate: RTCIceCandidate) -> str | None:
    """Why aioice cannot use a remote candidate, or None. A port outside 1-65535 makes its
    connectivity check fail inside asyncio ("Fatal write error on datagram transport"), which
    closes that viewer's socket and logs an error."""
    if not 1 <= candidate.port <= 65535:
        return f"candidate port {candidate.port} is out of range (1-65535)"
    return None


def check_offer(sdp: str) -> aiortc_sdp.SessionDescription:
    """Reject what aiortc would choke on, with a message a client author can act on."""
    if not sdp.lstrip().startswith("v=0"):
        raise OfferError(400, "invalid SDP: an SDP offer starts with 'v=0'")
    try:
        description = aiortc_sdp.SessionDescription.parse(sdp)
    except Exception as exc:  # noqa: BLE001 - aiortc's parser raises assorted types
        raise OfferError(400, f"invalid SDP: {exc or type(exc).__name__}") from None
    video = [m for m in description.media if m.kind == "video"]
    if not video:
        raise OfferError(
            400,
            "the offer has no video section: add a receive-only video transceiver "
            "(pc.addTransceiver('video', {direction: 'recvonly'}))",
        )
    for media in description.media:
        if media.kind not in ("audio", "video", "application"):  # aiortc's createAnswer fails on it
            raise OfferError(400, f"invalid SDP offer: unknown media kind {media.kind!r}")
        # RFC 3264 defaults a missing direction to sendrecv; aiortc's createAnswer fails on it
        if media.kind in ("audio", "video") and media.direction is None:
            raise OfferError(400, f"invalid SDP offer: {media.kind} section has no direction "
                                  "(a=recvonly, a=sendrecv, a=sendonly or a=inactive)")
    if video[0].direction not in ("recvonly", "sendrecv"):
        raise OfferError(
            400, f"the offer's video is {video[0].direction}: it must be recvonly or sendrecv"
        )
    for media in description.media:
        # aiortc accepts these missing, then fails in a background task after answering
        if not (media.ice and media.ice.usernameFragment and media.ice.password):
            raise OfferError(400, f"invalid SDP offer: {media.kind} section has no ICE ufrag/pwd")
        if not (media.dtls and media.dtls.fingerprints):
            raise OfferError(400, f"invalid SDP offer: {media.kind} section has no DTLS fingerprint")
        for candidate in media.ice_candidates:
            if problem := candidate_problem(candidate):
                raise OfferError(400, f"invalid SDP offer: {problem}")
        # aiortc's createAnswer fails without one (its transceiver gets no transport)
        if not media.rtp.muxId:
            raise OfferError(400, f"invalid SDP offer: {media.kind} section has no a=mid")
    mids = [media.rtp.muxId for media in description.media]
    if len(set(mids)) != len(mids):
        raise OfferError(400, "invalid SDP offer: two sections share one a=mid")
    for group in description.group:  # aiortc bundles onto the first mid's transport
        if group.semantic == "BUNDLE" and not set(group.items) <= set(mids):
            raise OfferError(400, "invalid SDP offer: a=group:BUNDLE names a mid no section has")
    names = {c.name.upper() for c in video[0].rtp.codecs}
    if not names & set(SUPPORTED_CODECS):
        raise OfferError(
            400, "the offer has no video codec robotcam sends: it needs H264 or VP8"
        )
    return description


def answer_codec(sdp: str) -> str | None:
    """The codec the answer's first video section settled on (the sender uses the first)."""
    return next(iter(answer_codecs(sdp).values()), None)


def answer_codecs(sdp: str) -> dict[str, str]:
    """mid -> the codec each of the answer's video sections settled on."""
    return {
        str(media.rtp.muxId): media.rtp.codecs[0].name.upper()
        for media in aiortc_sdp.SessionDescription.parse(sdp).media
        if media.kind == "video" and media.rtp.codecs
    }


class PeerManager:
    """Owns every viewer's connection and the tasks watching them."""

    def __init__(
        self, cameras: Cameras, webrtc: WebRTCConfig,
        extensions: list[PeerExtension] | None = None,
    ) -> None:
        self.cameras = cameras
        self.webrtc = webrtc
        self.extensions: list[PeerExtension] = list(extensions or [])
        self.sessions: dict[int, PeerSession] = {}
        self._pending = 0  # offers being negotiated, counted against max_peers
        self._last_id = 0
        self._tasks = TaskSet()  # connect timeouts and closes, ended on shutdown
        self.closed = False

    def __len__(self) -> int:
        return len(self.sessions)

    def rtc_configuration(self) -> RTCConfiguration:
        # An explicit empty list: aiortc adds Google's STUN server when given None. TURN
        # servers without a username get freshly minted credentials (webrtc.turn_secret).
        return RTCConfiguration(iceServers=[
            RTCIceServer(
                urls=server["urls"],
                username=server.get("username"),
                credential=server.get("credential"),
            )
            for server in ice_servers(self.webrtc)
        ])

    async def handle_offer(self, sdp: str, identity: Identity = OPEN) -> str:
        """Answer a viewer's offer (the answer SDP); see open_session for the session too."""
        _, answer = await self.open_session(sdp, identity)
        return answer

    def assign_cameras(self, sections: int, wanted: list[str] | None = None) -> list[VideoPipeline]:
        """The camera for each of an offer's video sections: the ones `wanted` names first, in
        order, then the others in config order; sections beyond the cameras get none (they are
        answered inactive). An unknown name is an OfferError 404 listing the names."""
        chosen: list[VideoPipeline] = []
        for name in (wanted or [])[:sections]:
            try:
                chosen.append(self.cameras.get(name))
            except UnknownCamera as exc:
                raise OfferError(404, str(exc), cameras=exc.known) from None
        rest = [p for p in self.cameras if p not in chosen]
        return chosen + rest[:max(0, sections - len(chosen))]

    async def open_session(
        self, sdp: str, identity: Identity = OPEN, cameras: list[str] | None = None,
    ) -> tuple[PeerSession, str]:
        """Answer a viewer's offer; the session lives on until it fails, closes or times out.
        `identity` is who asked (OPEN: access control is off); `cameras` names the cameras
        for its video sections in order (None: config order)."""
        if self.closed:
            raise OfferError(503, "robotcam is shutting down")
        if len(self.sessions) + self._pending >= self.webrtc.max_peers:
            raise OfferError(
                503, f"viewer limit reached ({self.webrtc.max_peers}): try again later",
                max_peers=self.webrtc.max_peers,
            )
        description = check_offer(sdp)
        sections = [m for m in description.media if m.kind == "video"]
        pipelines = self.assign_cameras(len(sections), cameras)
        self._pending += 1
        self._last_id += 1
        pc = RTCPeerConnection(self.rtc_configuration())
        videos = [
            PeerVideo(index, pipeline, PeerVideoTrack(pipeline.queue_size(), self._last_id))
            for index, pipeline in enumerate(pipelines)
        ]
        session = PeerSession(self._last_id, pc, videos, identity)
        try:
            for extension in self.extensions:
                extension.prepare(session, description)
            answer = await self._negotiate(session, sdp)
            for extension in self.extensions:
                extension.answered(session)
        except BaseException:
            for video in videos:
                video.track.stop()
            try:
                await pc.close()
            except Exception as exc:  # noqa: BLE001 - half-built by an odd offer; the cause is raised below
                log.debug("viewer %d: closing the refused peer connection failed: %r", session.id, exc)
            session.released = True
            await self._extensions_closed(session)
            raise
        finally:
            self._pending -= 1
        if self.closed:  # shutdown began while we negotiated
            await self._close(session, "shutting down")
            raise OfferError(503, "robotcam is shutting down")
        self.sessions[session.id] = session
        self._watch(session)
        shown = "" if len(self.cameras) == 1 else f", camera {', '.join(v.camera for v in videos)}"
        log.info("viewer %d: answered (%s%s) for %s, %d viewer(s)", session.id, session.codec,
                 shown, identity.label, len(self.sessions))
        return session, answer

    def switch_camera(self, session: PeerSession, index: int, camera: str) -> PeerVideo:
        """Show `camera` in the session's video section `index`, from that camera's next
        keyframe (asked for at once); the section's picture holds still until then. No new
        offer: same codec and payload type, the browser sees a new picture (and size)."""
        if not 0 <= index < len(session.videos):
            raise OfferError(404, f"the viewer has no video section {index} "
                                  f"(it has {len(session.videos)}: 0-{len(session.videos) - 1})")
        video = session.videos[index]
        try:
            pipeline = self.cameras.get(camera)
        except UnknownCamera as exc:
            raise OfferError(404, str(exc), cameras=exc.known) from None
        if video.track.readyState != "live":
            raise OfferError(409, f"video section {index} has ended (its camera was removed): connect again")
        if pipeline is not video.pipeline:
            rung = video.policy.rung if video.policy else 0
            log.info("viewer %d: video %d: camera %s -> %s", session.id, index, video.camera, camera)
            video.pipeline = pipeline
            pipeline.switch(video.track, rung)
        return video

    def by_key(self, key: str) -> PeerSession | None:
        """The live session a URL or request names, or None."""
        for session in self.sessions.values():
            if secrets.compare_digest(session.key, key):
                return session
        return None

    def owned_by(self, key: str, asking: Identity) -> PeerSession | None:
        """The live session a request names, if the one asking opened it (or is admin): a
        session key reaching another user must not let them talk or read its link."""
        session = self.by_key(key)
        if session is None or not (asking.allows("admin") or session.identity.name == asking.name):
            return None
        return session

    async def close_session(self, session: PeerSession, why: str) -> None:
        """End a session on the viewer's request (WHEP DELETE, WebSocket bye)."""
        await self._close(session, why)

    def revoke(self, keep: Callable[[Identity], bool], why: str) -> int:
        """Close (in the background) every viewer whose identity `keep` rejects: a reload removed
        or changed its user or token, or its sign-in ended. How many are closing."""
        gone = [s for s in self.sessions.values() if not keep(s.identity)]
        for session in gone:
            log.info("viewer %d: closing: %s (%s)", session.id, why, session.identity.label)
            self._tasks.spawn(self._close(session, why), _CLOSE_TASK)
        return len(gone)

    async def _extensions_closed(self, session: PeerSession) -> None:
        for extension in self.extensions:
            try:
                await extension.closed(session)
            except Exception:  # noqa: BLE001 - one extension must not keep another's resources
                log.exception("viewer %d: releasing %s failed", session.id, type(extension).__name__)

    async def _negotiate(self, session: PeerSession, sdp: str) -> str:
        pc = session.pc
        transceivers = []
        for video in session.videos:  # matched to the offer's video sections in order
            sender = pc.addTrack(video.track)
            transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
            transceiver.setCodecPreferences(video_codec_preferences())
            forward_keyframe_requests(sender, video.track)
            self._watch_link(session, video, sender)
            transceivers.append(transceiver)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        except OperationError:
            raise OfferError(
                400, "no video codec in common: robotcam sends H264 (packetization-mode=1) or VP8"
            ) from None
        except (ValueError, KeyError, IndexError, InternalError, InvalidStateError) as exc:
            raise OfferError(400, f"invalid SDP offer: {exc}") from None
        if any(transceiver.mid is None for transceiver in transceivers):
            raise OfferError(400, "the offer's video section could not be matched")
        bound_gathering(pc, self.webrtc.gather_timeout)  # a dead STUN server must not stall us
        try:
            await pc.setLocalDescription(await pc.createAnswer())
        except (AttributeError, ValueError, KeyError, IndexError, TypeError) as exc:
            # check_offer refuses the shapes known to break aiortc; this catches the rest
            raise OfferError(400, f"invalid SDP offer: it cannot be answered ({type(exc).__name__}: {exc})") from None
        codecs = answer_codecs(pc.localDescription.sdp)
        for video, transceiver in zip(session.videos, transceivers):
            codec = codecs.get(str(transceiver.mid))
            if codec not in SUPPORTED_CODECS:
                raise OfferError(400, "no video codec in common: robotcam sends H264 or VP8")
            video.codec, video.mid = codec, transceiver.mid
        for video in session.videos:
            video.pipeline.attach(video.track, str(video.codec))
        return pc.localDescription.sdp

    def _watch_link(self, session: PeerSession, video: PeerVideo, sender: RTCRtpSender) -> None:
        """Every RTCP packet the viewer sends for this video passes the link estimate first,
        which also paces resends (NACKed packets over its budget are not sent again) and moves
        the viewer along the rendition ladder of the camera it shows."""
        link = video.link = LinkEstimate(sender._ssrc, video.pipeline.video.bitrate)
        policy = video.policy = RungPolicy(lambda: video.pipeline.rungs, link)
        pacer = ResendPacer(link, sender._retransmit)
        video.pacer = self._tasks.spawn(pacer.run(), "robotcam-peer-resends")
        handle = sender._handle_rtcp_packet
        named = "" if len(session.videos) == 1 else f" video {video.index}"

        async def on_rtcp(packet: Any) -> None:
            link.observe(packet, video.track.bytes_sent)
            rung = policy.decide()
            if rung is not None:
                log.info("viewer %d%s: moving to %s (%s): %s%s", session.id, named,
                         "the full stream" if rung == 0 else f"rung {rung}", policy.rungs[rung].describe(),
                         policy.why, f"; after {policy.drain:.1f} s for its queue to drain" if policy.drain else "")
                video.pipeline.switch(video.track, rung, policy.drain)
            if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                pacer.add(packet.lost)
                return
            await handle(packet)

        sender._handle_rtcp_packet = on_rtcp  # type: ignore[method-assign]

    def _watch(self, session: PeerSession) -> None:
        pc = session.pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            log.info("viewer %d: connection %s", session.id, pc.connectionState)
            if pc.connectionState == "connected" and session.expiry is not None:
                session.expiry.cancel()
            if pc.connectionState in ("failed", "closed"):
                self._tasks.spawn(self._close(session, pc.connectionState), _CLOSE_TASK)

        session.expiry = self._tasks.spawn(self._expire(session), "robotcam-peer-expiry")

    async def _expire(self, session: PeerSession) -> None:
        """Forget a viewer that never connects (closed tab mid-handshake, blocked UDP)."""
        await asyncio.sleep(self.webrtc.connect_timeout)
        if session.id in self.sessions and session.pc.connectionState != "connected":
            log.warning(
                "viewer %d: not connected after %.0f s (state %s): closing",
                session.id, self.webrtc.connect_timeout, session.pc.connectionState,
            )
            # From here this task is the one closing: a _close that the state change below
            # triggers must not cancel it halfway through pc.close() (that close would never
            # finish, and every later pc.close() would wait on it forever).
            session.expiry = None
            await self._close(session, "connect timeout")

    async def _close(self, session: PeerSession, why: str) -> None:
        if self.sessions.pop(session.id, None) is not None:
            log.info("viewer %d: closed (%s), %d viewer(s) left", session.id, why, len(self.sessions))
        if session.expiry is not None and session.expiry is not asyncio.current_task():
            session.expiry.cancel()
        for video in session.videos:
            if video.pacer is not None:
                video.pacer.cancel()
            video.track.stop()
        await session.pc.close()
        if not session.released:
            session.released = True
            await self._extensions_closed(session)

    @property
    def tasks(self) -> int:
        """Watcher tasks alive (tests check that none outlive their viewers)."""
        return len(self._tasks)

    async def close_all(self) -> None:
        """Shutdown: refuse new offers, close every viewer, end every watcher task."""
        self.closed = True
        await asyncio.gather(
            *(self._close(s, "shutting down") for s in list(self.sessions.values())),
            return_exceptions=True,
        )
        # Closes already under way (a viewer that left just now) get to finish: cancelling one
        # inside pc.close() cancels aiortc's shared close future and that close never ends.
        # Only what is still waiting after the bound (connect timeouts asleep) is cancelled.
        closing = [t for t in self._tasks if t.get_name() == _CLOSE_TASK]
        await self._tasks.close(CLOSE_WAIT, finish=closing)

    def viewers_by_camera(self) -> dict[str, int]:
        """Per camera (every one, in config order, then any a reload removed that a section
        still names): the viewers' video sections showing it."""
        counts = {pipeline.name: 0 for pipeline in self.cameras}
        for session in self.sessions.values():
            for video in session.videos:
                counts[video.camera] = counts.get(video.camera, 0) + 1
        return counts

    def snapshot(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.sessions.values()]

    def client_config(self, identity: Identity = OPEN) -> dict[str, Any]:
        """GET /api/config: what the web client needs (ICE servers, what extensions offer to
        this identity)."""
        config: dict[str, Any] = {"iceServers": ice_servers(self.webrtc), "cameras": self.cameras.names}
        for extension in self.extensions:
            config.update(extension.client_config(identity))
        return config
