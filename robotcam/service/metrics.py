"""GET /metrics: the daemon's state in the Prometheus text format, with prometheus-client.

The counters already live where the work happens (pipeline, encoders, peers, components), so a
collector reads them at scrape time instead of every hot path updating a second set. One
CollectorRegistry per Daemon, never the library's global one: tests run many daemons in one
process, and other components register their own metrics in `daemon.metrics.registry`.

WebRTC senders' statistics (bytes, packets, loss, round trip) come from aiortc's async
getStats(): refreshed before each scrape for live viewers, and folded into totals when a viewer
closes (a PeerExtension), so the byte and packet counters never go back.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from robotcam import __version__

if TYPE_CHECKING:
    from robotcam.auth.identity import Identity
    from robotcam.service.daemon import Daemon
    from robotcam.webrtc.peers import PeerSession

log = logging.getLogger(__name__)

AUDIO_STATES = ("starting", "running", "stalled", "failed", "off", "stopped")


@dataclass
class SenderStats:
    """What /metrics shows of one RTP sender of one viewer."""

    kind: str
    packets: int = 0
    bytes: int = 0
    packets_lost: int = 0
    fraction_lost: float | None = None
    round_trip: float | None = None


async def sender_stats(session: PeerSession) -> list[SenderStats]:
    """Each RTP sender's statistics (aiortc keeps them; getStats only assembles them)."""
    found = []
    for sender in session.pc.getSenders():
        stats = SenderStats(kind=sender.kind)
        try:
            report = await sender.getStats()
        except Exception:  # noqa: BLE001 - a sender closing under us: report nothing for it
            continue
        for entry in report.values():
            if entry.type == "outbound-rtp":
                stats.packets, stats.bytes = entry.packetsSent, entry.bytesSent
            elif entry.type == "remote-inbound-rtp":
                stats.packets_lost = entry.packetsLost
                stats.fraction_lost = entry.fractionLost / 256  # RTCP's 8-bit fixed point
                stats.round_trip = entry.roundTripTime
        found.append(stats)
    return found


class ViewerStats:
    """A PeerExtension: keeps live viewers' sender statistics fresh for the next scrape, and
    adds a closing viewer's final figures to the totals."""

    def __init__(self) -> None:
        self.answered_total = 0  # viewers answered since the start (offers that succeeded)
        self.live: dict[int, list[SenderStats]] = {}
        self.closed_packets: Counter[str] = Counter()  # per kind
        self.closed_bytes: Counter[str] = Counter()

    async def refresh(self, sessions: list[PeerSession]) -> None:
        fresh = {}
        for session in sessions:
            fresh[session.id] = await sender_stats(session)
        self.live = fresh

    # --- PeerExtension ----------------------------------------------------------------------

    def prepare(self, session: PeerSession, offer: Any) -> None: ...

    def answered(self, session: PeerSession) -> None:
        self.answered_total += 1

    async def closed(self, session: PeerSession) -> None:
        self.live.pop(session.id, None)
        for stats in await sender_stats(session):
            self.closed_packets[stats.kind] += stats.packets
            self.closed_bytes[stats.kind] += stats.bytes

    def client_config(self, identity: Identity) -> dict[str, Any]:
        return {}


class DaemonCollector(Collector):
    """Reads one daemon's counters at scrape time."""

    def __init__(self, daemon: Daemon, viewers: ViewerStats) -> None:
        self.daemon = daemon
        self.viewers = viewers

    def collect(self) -> Iterator[Any]:
        yield from self._video()
        yield from self._viewers()
        yield from self._components()

    def _video(self) -> Iterator[Any]:
        cameras = list(self.daemon.cameras)
        info = InfoMetricFamily("robotcam", "robotcam's version and video source (the first camera's)")
        info.add_metric([], {"version": __version__, "source": cameras[0].source_name})
        yield info
        produced = CounterMetricFamily(
            "robotcam_frames_produced", "Frames the camera delivered", labels=["camera"])
        up = GaugeMetricFamily(
            "robotcam_source_up", "1 while the camera delivers frames, 0 when stalled or failed",
            labels=["camera"])
        fps = GaugeMetricFamily(
            "robotcam_frames_per_second", "Frame rate measured over the last 2 s", labels=["camera"])
        restarts = CounterMetricFamily(
            "robotcam_source_restarts", "Camera restarts after a failure or stall", labels=["camera"])
        families = {
            "frames_encoded": CounterMetricFamily(
                "robotcam_frames_encoded", "Frames encoded, per codec (once for every viewer)",
                labels=["camera", "codec"]),
            "frames_skipped": CounterMetricFamily(
                "robotcam_frames_skipped",
                "Frames the encoder skipped because it was still busy with the previous one",
                labels=["camera", "codec"]),
            "keyframes_forced": CounterMetricFamily(
                "robotcam_keyframes_forced",
                "Keyframes forced for joining viewers and picture-loss reports (for the Pi "
                "camera: requests passed to it)", labels=["camera", "codec"]),
        }
        for pipeline in cameras:
            camera = pipeline.name
            produced.add_metric([camera], pipeline.frames_produced)
            up.add_metric([camera], 1 if pipeline.healthy() else 0)
            fps.add_metric([camera], pipeline.measured_fps())
            restarts.add_metric([camera], pipeline.restarts)
            for codec, counts in sorted(pipeline.encoder_totals().items()):
                for name, family in families.items():
                    family.add_metric([camera, codec], counts[name])
        yield from (produced, up, fps, restarts)
        yield from families.values()

    def _viewers(self) -> Iterator[Any]:
        sessions = list(self.daemon.peers.sessions.values())
        by_path: Counter[str] = Counter({"offer": 0, "whep": 0, "websocket": 0})
        for session in sessions:
            by_path[str(session.extras.get("signaling", "offer"))] += 1
        viewers = GaugeMetricFamily(
            "robotcam_viewers", "WebRTC viewers connected, by signaling path", labels=["path"])
        for path, count in sorted(by_path.items()):
            viewers.add_metric([path], count)
        yield viewers
        answered = CounterMetricFamily(
            "robotcam_viewers_answered", "Viewers' offers answered since the start (a camera "
            "switch needs none)")
        answered.add_metric([], self.viewers.answered_total)
        yield answered
        watching = self.daemon.peers.viewers_by_camera()
        per_camera = GaugeMetricFamily(
            "robotcam_camera_viewers", "Viewers' video sections showing each camera", labels=["camera"])
        for camera, count in watching.items():
            per_camera.add_metric([camera], count)
        yield per_camera

        packets = CounterMetricFamily(
            "robotcam_rtp_packets_sent", "RTP packets sent to viewers", labels=["kind"])
        sent = CounterMetricFamily(
            "robotcam_rtp_sent_bytes", "RTP payload bytes sent to viewers", labels=["kind"])
        rtt = GaugeMetricFamily(
            "robotcam_viewer_round_trip_seconds",
            "Each viewer's round-trip time, from its RTCP receiver reports",
            labels=["viewer", "kind"])
        lost_fraction = GaugeMetricFamily(
            "robotcam_viewer_fraction_lost",
            "Each viewer's fraction of packets lost (last RTCP receiver report)",
            labels=["viewer", "kind"])
        lost = CounterMetricFamily(
            "robotcam_viewer_packets_lost", "Each viewer's packets lost, from RTCP receiver reports",
            labels=["viewer", "kind"])
        total_packets = Counter(self.viewers.closed_packets)
        total_bytes = Counter(self.viewers.closed_bytes)
        for kind in ("video", "audio"):
            total_packets.setdefault(kind, 0)
            total_bytes.setdefault(kind, 0)
        for session_id, senders in sorted(self.viewers.live.items()):
            for stats in senders:
                total_packets[stats.kind] += stats.packets
                total_bytes[stats.kind] += stats.bytes
                labels = [str(session_id), stats.kind]
                if stats.round_trip is not None:
                    rtt.add_metric(labels, stats.round_trip)
                if stats.fraction_lost is not None:
                    lost_fraction.add_metric(labels, stats.fraction_lost)
                    lost.add_metric(labels, max(0, stats.packets_lost))
        for kind in sorted(total_packets):
            packets.add_metric([kind], total_packets[kind])
            sent.add_metric([kind], total_bytes[kind])
        yield from (packets, sent, rtt, lost_fraction, lost)

    def _components(self) -> Iterator[Any]:
        daemon = self.daemon
        audio = daemon.audio.health()
        state = GaugeMetricFamily(
            "robotcam_audio_state", "1 for the microphone's current state", labels=["state"])
        current = audio.get("state") or "off"
        for name in sorted(set(AUDIO_STATES) | {current}):
            state.add_metric([name], 1 if name == current else 0)
        yield state
        listeners = GaugeMetricFamily("robotcam_audio_listeners", "Viewers receiving the robot's sound")
        listeners.add_metric([], audio.get("listeners", 0))
        yield listeners

        control = CounterMetricFamily(
            "robotcam_control_messages", "Control channel messages, by direction",
            labels=["direction"])
        control.add_metric(["to_robot"], daemon.control.to_robot)
        control.add_metric(["from_robot"], daemon.control.from_robot)
        yield control
        snapshots, mjpeg, recorder = daemon.snapshots, daemon.mjpeg, daemon.recorder
        for family, name, documentation, value in (
            (CounterMetricFamily, "robotcam_talk_sessions", "Times a viewer took the talk-back line",
             daemon.talkback.talks),
            (CounterMetricFamily, "robotcam_logins", "Successful sign-ins", daemon.access.logins),
            (CounterMetricFamily, "robotcam_login_failures", "Failed sign-ins (wrong user name or password)",
             daemon.access.failed_logins),
            (GaugeMetricFamily, "robotcam_sessions", "Sign-in sessions alive", len(daemon.access.sessions)),
            (CounterMetricFamily, "robotcam_snapshots", "Snapshots answered", snapshots.served),
            (CounterMetricFamily, "robotcam_snapshot_failures",
             "Snapshot requests refused (no current picture)", snapshots.failures),
            (CounterMetricFamily, "robotcam_snapshot_encode_seconds",
             "Time spent making snapshot JPEGs", snapshots.encode_seconds),
            (GaugeMetricFamily, "robotcam_mjpeg_clients", "MJPEG clients connected", len(mjpeg)),
            (CounterMetricFamily, "robotcam_mjpeg_frames_encoded",
             "MJPEG frames encoded (once for all clients)", mjpeg.frames_encoded),
            (GaugeMetricFamily, "robotcam_recording_up", "1 while recording, 0 when failed or off",
             1 if recorder.state == "recording" else 0),
            (CounterMetricFamily, "robotcam_recording_bytes", "Bytes of recorded segments finished",
             recorder.bytes_written),
            (CounterMetricFamily, "robotcam_recording_segments", "Recorded segments finished",
             recorder.segments_written),
            (CounterMetricFamily, "robotcam_recording_segments_deleted",
             "Segments deleted to stay within the budget", recorder.segments_deleted),
            (CounterMetricFamily, "robotcam_recording_failures",
             "Recording failures (full disk, unwritable folder)", recorder.failures),
        ):
            yield family(name, documentation, value=value)


class Metrics:
    """The daemon's registry, and what feeds it."""

    def __init__(self, daemon: Daemon) -> None:
        self.registry = CollectorRegistry()
        self.viewers = ViewerStats()
        self.registry.register(DaemonCollector(daemon, self.viewers))
        self._daemon = daemon

    async def render(self) -> bytes:
        """The text exposition, after refreshing the viewers' sender statistics."""
        await self.viewers.refresh(list(self._daemon.peers.sessions.values()))
        return generate_latest(self.registry)
