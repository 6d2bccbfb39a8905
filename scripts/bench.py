#!/usr/bin/env python3
"""Benchmark: what N viewers cost robotcam, next to the way aiortc's examples serve them.

For each viewer count (default 1, 4, 8, 16) and each server, the script starts a fresh server
on 127.0.0.1, connects N aiortc viewers from ONE separate load-client process, waits for
video, warms up, measures for a fixed window, and stops everything. Servers:

  robotcam        `python -m robotcam run` with the test pattern: encoded once, the same
                  H.264 packets fanned out to every viewer.
  aiortc-example  scripts/bench_baseline.py: examples/webcam/webcam.py's way, one shared source
                  through MediaRelay (buffered, i.e. unbounded queues) and aiortc's own encoder
                  per viewer. Same test pattern, size and rate.

Both answer H.264 (the viewers put it first with setCodecPreferences) at aiortc's 1 Mbit/s.

Measured, per run (only frames arriving inside the measurement window count):

  daemon CPU      server process user+system CPU time (psutil, all threads) over the window,
                  divided by the window's wall time: cores in use. The viewers run in a
                  different process and are not included; their own CPU is reported separately
                  (on a 2-core machine they compete with the server).
  fps/viewer      complete encoded frames per second each viewer received, min and mean.
                  Viewers do not decode: aiortc's receiver is cut at the decoder
                  (aiortc.rtcrtpreceiver.get_decoder is replaced by a stub that passes on, per
                  encoded frame out of the jitter buffer, its arrival time and RTP timestamp).
  offer->first    from POSTing the offer to the first complete frame, median and max over
                  viewers. Includes ICE, DTLS, waiting for a keyframe, and one frame interval
                  (aiortc's jitter buffer releases a frame when the next one starts).
  delay growth    per frame, d = arrival wall time - RTP timestamp / 90 kHz. The RTP
                  timestamp is the frame's capture time on the server (robotcam: the source's
                  monotonic clock; aiortc-example: the source's frame schedule), so d is the
                  end-to-end delay plus an unknown constant. Growth = mean d over the last
                  --segment seconds of the window minus mean d over the first --segment
                  seconds: about 0 when the server keeps up, hundreds of ms and rising when
                  queues build (aiortc's MediaRelay queues are unbounded, so an overloaded
                  server shows growing delay, not dropped frames). If a viewer got no frame in
                  the last segment, the age of its newest frame at the window's end is used,
                  a lower bound, shown with ">=". Reported as mean and worst over viewers.
  delay above     per viewer, d - min(d) over the window's frames (how much later than the
  best            window's quickest frame each frame was): p95 and max, worst viewer. This
                  catches delay spikes that drain again before the window ends.
  daemon RSS      server resident memory at the end of the window (queued frames show here).
  other CPU       the whole machine's busy CPU over the window minus the daemon and the load
                  client: other processes competing for the cores (the machine may be shared).

Usage:
    .venv/bin/python scripts/bench.py                      # full run, about 2 minutes
    .venv/bin/python scripts/bench.py --viewers 1 --duration 3 --warmup 2
    .venv/bin/python scripts/bench.py --cameras 2 --viewers 1,4    # what a second camera costs

Every wait is bounded; the servers and the load client are killed on exit, on errors and on
Ctrl-C (they also die with this process). Server and client logs go to a temporary directory
that is printed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

HERE = Path(__file__).resolve().parent
SERVERS = ("robotcam", "aiortc-example")
VIDEO_CLOCK = 90000
RESULT_PREFIX = "RESULT "

# ------------------------------------------------------------------------------------------
# Load client (runs in its own process: `bench.py --client ...`)
# ------------------------------------------------------------------------------------------


class Arrival:
    """What the stub decoder hands the track instead of a decoded picture."""

    __slots__ = ("at", "stamp")

    def __init__(self, at: float, stamp: int) -> None:
        self.at = at
        self.stamp = stamp


class CountingDecoder:
    """Stands in for aiortc's decoder: one Arrival per complete encoded frame, no decoding.

    Runs in the receiver's decoder thread, so the arrival time is taken as soon as the jitter
    buffer releases the frame, not when a busy event loop gets round to it. The timestamp is
    the RTP timestamp as aiortc's receiver maps it (relative to the stream's first frame,
    wrap-around removed), in 1/90000 s.
    """

    def decode(self, encoded_frame: Any) -> list[Arrival]:
        return [Arrival(time.time(), encoded_frame.timestamp)]


def _loopback_only(use_ipv4: bool = True, use_ipv6: bool = True) -> list[str]:
    return ["127.0.0.1"]


def _counting_decoder(codec: Any) -> Any:
    return CountingDecoder()


def _install_client_patches() -> None:
    import aioice.ice
    import aiortc.rtcrtpreceiver

    # aioice leaves 127.0.0.1 out of the host candidates; all traffic here is on loopback.
    aioice.ice.get_host_addresses = _loopback_only
    # decoder_worker looks get_decoder up in its module at run time.
    aiortc.rtcrtpreceiver.get_decoder = _counting_decoder


class Viewer:
    """One receive-only aiortc peer that records frame arrivals instead of decoding. With
    `sections` > 1 it watches that many cameras at once (one video section each); the first
    section's frames are the ones measured, the others' are counted."""

    def __init__(self, index: int, sections: int = 1) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpReceiver

        self.index = index
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        capabilities = RTCRtpReceiver.getCapabilities("video")
        assert capabilities is not None
        caps = capabilities.codecs
        self.transceivers = [self.pc.addTransceiver("video", direction="recvonly") for _ in range(sections)]
        for transceiver in self.transceivers:
            transceiver.setCodecPreferences(
                [c for c in caps if c.mimeType.lower() == "video/h264"]
                + [c for c in caps if c.mimeType.lower() not in ("video/h264", "video/rtx")]
                + [c for c in caps if c.mimeType.lower() == "video/rtx"]
            )
        self.posted_at: float | None = None
        self.codec: str | None = None
        self.error: str | None = None
        self.arrivals: list[float] = []
        self.stamps: list[int] = []
        self.other_arrivals: list[list[float]] = [[] for _ in range(sections - 1)]
        self.got_frame = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            section = next(i for i, t in enumerate(self.transceivers) if t.receiver.track is track)
            self._readers.append(asyncio.ensure_future(self._read(track, section)))

    async def _read(self, track: Any, section: int) -> None:
        from aiortc.mediastreams import MediaStreamError

        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                item = await track.recv()
                if section:
                    self.other_arrivals[section - 1].append(item.at)
                    continue
                self.arrivals.append(item.at)
                self.stamps.append(item.stamp)
                self.got_frame.set()

    async def connect(self, http: Any, url: str) -> None:
        from aiortc import RTCSessionDescription

        try:
            await self.pc.setLocalDescription(await self.pc.createOffer())
            offer = {"sdp": self.pc.localDescription.sdp, "type": self.pc.localDescription.type}
            self.posted_at = time.time()
            async with http.post(url, json=offer) as response:
                body = await response.json(content_type=None)
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {body}")
            for line in body["sdp"].splitlines():
                if line.startswith("a=rtpmap:"):
                    self.codec = line.split()[1].split("/")[0].upper()
                    break
            await self.pc.setRemoteDescription(RTCSessionDescription(**body))
        except Exception as exc:  # noqa: BLE001 - reported per viewer, the others go on
            self.error = f"{type(exc).__name__}: {exc}"

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pc.close()
        for reader in self._readers:
            reader.cancel()


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def delay_growth(
    arrivals: Sequence[float], stamps: Sequence[int], t0: float, t1: float, segment: float
) -> tuple[float, bool] | None:
    """(growth in ms, is_lower_bound) of d = arrival - stamp/90k over the window [t0, t1]."""
    if not arrivals:
        return None
    d = [a - s / VIDEO_CLOCK for a, s in zip(arrivals, stamps)]
    first = [x for a, x in zip(arrivals, d) if t0 <= a < t0 + segment]
    if first:
        start = _mean(first)
    else:  # nothing arrived early in the window: the last frame before it is the reference
        before = [x for a, x in zip(arrivals, d) if a < t0 + segment]
        start = before[-1] if before else d[0]
    last = [x for a, x in zip(arrivals, d) if t1 - segment <= a <= t1]
    if last:
        return (_mean(last) - start) * 1000, False
    in_window = [i for i, a in enumerate(arrivals) if a <= t1]
    newest = stamps[in_window[-1]] if in_window else stamps[0]
    return (t1 - newest / VIDEO_CLOCK - start) * 1000, True


def delay_excess(
    arrivals: Sequence[float], stamps: Sequence[int], t0: float, t1: float
) -> tuple[float, float] | None:
    """(p95, max) in ms of d - min(d) over the frames that arrived in [t0, t1]: how much later
    than the window's quickest frame the others were. Catches delay spikes that recover
    before the window ends, which growth (end minus start) does not."""
    d = [a - s / VIDEO_CLOCK for a, s in zip(arrivals, stamps) if t0 <= a <= t1]
    if not d:
        return None
    best = min(d)
    excess = sorted((x - best) * 1000 for x in d)
    return excess[min(len(excess) - 1, int(0.95 * len(excess)))], excess[-1]


def cpu_seconds(proc: Any) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def host_busy_seconds() -> float:
    """CPU seconds spent by the whole machine, all cores, on anything but idling."""
    import psutil

    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


async def run_clients(args: argparse.Namespace) -> dict[str, Any]:
    import aiohttp
    import psutil

    _install_client_patches()
    server = psutil.Process(args.server_pid)
    me = psutil.Process()
    viewers = [Viewer(i, args.client_sections) for i in range(args.client_viewers)]
    started = time.time()
    timeout = aiohttp.ClientTimeout(total=args.connect_timeout)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        tasks = [asyncio.ensure_future(v.connect(http, args.url)) for v in viewers]
        await asyncio.wait(tasks, timeout=args.connect_timeout)
        for v, task in zip(viewers, tasks):
            if not task.done():
                task.cancel()
                v.error = v.error or f"no answer within {args.connect_timeout:g} s"
        remaining = args.connect_timeout - (time.time() - started)
        waits = [asyncio.ensure_future(v.got_frame.wait()) for v in viewers if v.error is None]
        if waits and remaining > 0:
            await asyncio.wait(waits, timeout=remaining)
        for w in waits:
            w.cancel()
    connected_after = time.time() - started

    await asyncio.sleep(args.warmup)

    t0 = time.time()
    server_cpu0, client_cpu0, host0 = cpu_seconds(server), cpu_seconds(me), host_busy_seconds()
    peak_rss = 0
    while (now := time.time()) < t0 + args.duration:
        with contextlib.suppress(psutil.Error):
            peak_rss = max(peak_rss, server.memory_info().rss)
        await asyncio.sleep(min(0.5, t0 + args.duration - now))
    t1 = time.time()
    server_cpu1, client_cpu1, host1 = cpu_seconds(server), cpu_seconds(me), host_busy_seconds()
    end_rss = server.memory_info().rss
    window = t1 - t0

    per_viewer: list[dict[str, Any]] = []
    for v in viewers:
        arrivals, stamps = list(v.arrivals), list(v.stamps)  # snapshot: threads still append
        stamps = stamps[: len(arrivals)]
        arrivals = arrivals[: len(stamps)]
        in_window = sum(1 for a in arrivals if t0 <= a <= t1)
        growth = delay_growth(arrivals, stamps, t0, t1, min(args.segment, window / 3))
        excess = delay_excess(arrivals, stamps, t0, t1)
        per_viewer.append({
            "index": v.index,
            "error": v.error,
            "codec": v.codec,
            "frames_total": len(arrivals),
            "frames_window": in_window,
            "fps": in_window / window,
            "first_frame_ms": (arrivals[0] - v.posted_at) * 1000
            if arrivals and v.posted_at is not None else None,
            "growth_ms": growth[0] if growth else None,
            "growth_lower_bound": growth[1] if growth else False,
            "excess_p95_ms": excess[0] if excess else None,
            "excess_max_ms": excess[1] if excess else None,
            # the other cameras this viewer watches: the slowest one's frames per second
            "other_fps_min": min(
                (sum(1 for a in list(other) if t0 <= a <= t1) / window for other in v.other_arrivals),
                default=None),
        })
    return {
        "viewers": per_viewer,
        "window_s": window,
        "connect_s": connected_after,
        "server_cores": (server_cpu1 - server_cpu0) / window,
        "client_cores": (client_cpu1 - client_cpu0) / window,
        "other_cores": max(
            0.0, (host1 - host0 - (server_cpu1 - server_cpu0) - (client_cpu1 - client_cpu0)) / window
        ),
        "server_rss_mb": end_rss / 2**20,
        "server_peak_rss_mb": max(peak_rss, end_rss) / 2**20,
        "_viewer_objects": viewers,
    }


def client_entry(args: argparse.Namespace) -> int:
    """Connect, measure, print one RESULT line, then close (bounded) and exit hard: aiortc's
    decoder threads are not daemon threads and must not keep this process alive."""

    async def main() -> None:
        result = await run_clients(args)
        viewers: list[Viewer] = result.pop("_viewer_objects")
        sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
        sys.stdout.flush()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(v.close() for v in viewers)), timeout=5)

    code = 0
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        code = 130
    except Exception as exc:  # noqa: BLE001 - the parent reports it
        print(f"load client failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# ------------------------------------------------------------------------------------------
# Orchestrator
# ------------------------------------------------------------------------------------------

_children: list[subprocess.Popen[Any]] = []


def die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the benchmark process dies (Linux)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    proc = subprocess.Popen(
        cmd, preexec_fn=die_with_parent, start_new_session=True, **kwargs
    )
    _children.append(proc)
    return proc


def stop_process(proc: subprocess.Popen[Any], grace: float = 6.0) -> None:
    """SIGTERM (both servers shut down cleanly on it), then SIGKILL after `grace` seconds."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(3)
    if proc in _children:
        _children.remove(proc)


def _stop_all() -> None:
    for proc in list(_children):
        stop_process(proc, grace=3.0)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"server not healthy after {timeout:g} s ({last})")


def server_command(kind: str, port: int, args: argparse.Namespace, workdir: Path) -> list[str]:
    if kind == "robotcam":
        config = workdir / f"robotcam-{port}.yaml"
        config.write_text(
            f"server: {{host: 127.0.0.1, port: {port}}}\n"
            f"video: {{source: testpattern, width: {args.width}, height: {args.height}, "
            f"fps: {args.fps:g}}}\n"
            "webrtc: {host_addresses: [127.0.0.1], ice_servers: [], max_peers: 1000}\n"
            "logging: {level: warning}\n"
            # access control stays on (its middleware is on every request) and lets the
            # benchmark's viewers in without signing in; no offer rate limit for the bursts
            "auth: {anonymous: [view], offers_per_minute: 0}\n"
            + ("cameras:\n" + "".join(f"  cam{i}: {{source: testpattern}}\n" for i in range(1, args.cameras + 1))
               if args.cameras > 1 else "")
        )
        return [sys.executable, "-m", "robotcam", "run", "--config", str(config)]
    return [
        sys.executable, str(HERE / "bench_baseline.py"), "--port", str(port),
        "--width", str(args.width), "--height", str(args.height), "--fps", f"{args.fps:g}",
    ]


@dataclass
class Row:
    server: str
    viewers: int
    cameras: int = 1  # each viewer watches this many cameras at once (robotcam only)
    result: dict[str, Any] | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def run_one(kind: str, n: int, args: argparse.Namespace, workdir: Path) -> Row:
    row = Row(kind, n, args.cameras)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    tag = f"{kind}-{n}"
    with open(workdir / f"{tag}-server.log", "w") as server_log, \
            open(workdir / f"{tag}-client.log", "w") as client_log:
        server = _spawn(
            server_command(kind, port, args, workdir), stdout=server_log, stderr=subprocess.STDOUT,
            cwd=HERE.parent,
        )
        try:
            wait_healthy(base + "/health", server, timeout=30)
            client = _spawn(
                [
                    sys.executable, str(Path(__file__).resolve()), "--client",
                    "--url", base + "/offer", "--server-pid", str(server.pid),
                    "--client-viewers", str(n), "--warmup", f"{args.warmup:g}",
                    "--duration", f"{args.duration:g}", "--segment", f"{args.segment:g}",
                    "--connect-timeout", f"{args.connect_timeout:g}",
                    "--client-sections", str(args.cameras),
                ],
                stdout=subprocess.PIPE, stderr=client_log, text=True,
            )
            budget = args.connect_timeout + args.warmup + args.duration + 20
            try:
                out, _ = client.communicate(timeout=budget)
            except subprocess.TimeoutExpired:
                stop_process(client, grace=2)
                out, _ = client.communicate()
                row.error = f"load client gave no result within {budget:g} s"
            finally:
                stop_process(client, grace=2)
            for line in (out or "").splitlines():
                if line.startswith(RESULT_PREFIX):
                    row.result = json.loads(line[len(RESULT_PREFIX):])
            if row.result is None and row.error is None:
                row.error = f"load client exited {client.returncode} without a result"
            if server.poll() is not None:
                row.notes.append(f"server exited with code {server.returncode} during the run")
        except Exception as exc:  # noqa: BLE001 - one failed run must not end the benchmark
            row.error = f"{type(exc).__name__}: {exc}"
        finally:
            stop_process(server)
    return row


# ------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 0, sign: bool = False) -> str:
    if value is None:
        return "-"
    value = round(value, digits) + 0.0  # no "-0"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


TABLE_HEADER = (
    "| server | viewers | got video | daemon CPU (cores) | fps/viewer min | fps/viewer mean "
    "| offer→first frame median / max (ms) | delay growth mean / worst (ms) "
    "| delay above best p95 / max (ms) | daemon RSS (MB) | load-client CPU (cores) "
    "| other processes' CPU (cores) |"
)


def table_row(row: Row) -> str:
    if row.result is None:
        return f"| {row.server} | {row.viewers} | failed: {row.error} | | | | | | | | | |"
    r = row.result
    viewers = r["viewers"]
    got = sum(1 for v in viewers if v["frames_window"] > 0)
    fps = [v["fps"] for v in viewers]
    firsts = [v["first_frame_ms"] for v in viewers if v["first_frame_ms"] is not None]
    first = (
        f"{_fmt(statistics.median(firsts))} / {_fmt(max(firsts))}"
        + (f" ({len(viewers) - len(firsts)} never)" if len(firsts) < len(viewers) else "")
        if firsts else "never"
    )
    growths = [v for v in viewers if v["growth_ms"] is not None]
    if growths:
        worst = max(growths, key=lambda v: v["growth_ms"])
        bound = any(v["growth_lower_bound"] for v in growths)
        mean_growth = _mean([v["growth_ms"] for v in growths])
        growth = (
            f"{'≥' if bound else ''}{_fmt(mean_growth, sign=True)} / "
            f"{'≥' if worst['growth_lower_bound'] else ''}{_fmt(worst['growth_ms'], sign=True)}"
        )
    else:
        growth = "-"
    p95s = [v["excess_p95_ms"] for v in viewers if v["excess_p95_ms"] is not None]
    maxes = [v["excess_max_ms"] for v in viewers if v["excess_max_ms"] is not None]
    excess = f"{max(p95s):.0f} / {max(maxes):.0f}" if p95s else "-"
    server = row.server if row.cameras == 1 else f"{row.server}, {row.cameras} cameras"
    return (
        f"| {server} | {row.viewers} | {got}/{len(viewers)} | {r['server_cores']:.2f} "
        f"| {min(fps):.1f} | {_mean(fps):.1f} | {first} | {growth} | {excess} "
        f"| {r['server_rss_mb']:.0f} | {r['client_cores']:.2f} | {r['other_cores']:.2f} |"
    )


def report(rows: list[Row], args: argparse.Namespace, workdir: Path, elapsed: float) -> str:
    lines = [TABLE_HEADER, "|" + "---|" * 12]
    lines += [table_row(row) for row in rows]
    lines.append("")
    lines.append(
        f"{args.width}x{args.height} @ {args.fps:g} fps test pattern, H.264, warmup "
        f"{args.warmup:g} s, window {args.duration:g} s, {os.cpu_count()} CPU(s), "
        f"Python {platform.python_version()}, {_versions()}; total {elapsed:.0f} s."
    )
    notes: list[str] = []
    for row in rows:
        notes += [f"{row.server} x{row.viewers}: {note}" for note in row.notes]
        if row.result is None:
            continue
        codecs = {v["codec"] for v in row.result["viewers"]}
        if codecs != {"H264"}:
            notes.append(f"{row.server} x{row.viewers}: codecs answered {sorted(map(str, codecs))}")
        others = [v["other_fps_min"] for v in row.result["viewers"] if v.get("other_fps_min") is not None]
        if others:
            notes.append(f"{row.server} x{row.viewers}: every viewer also watched {row.cameras - 1} more "
                         f"camera(s): their fps/viewer min {min(others):.1f}, mean {_mean(others):.1f}")
        errors = [v["error"] for v in row.result["viewers"] if v["error"]]
        if errors:
            notes.append(f"{row.server} x{row.viewers}: {len(errors)} viewer(s) failed: {errors[0]}")
    lines += [f"- {note}" for note in notes]
    lines.append(f"Logs: {workdir}")
    return "\n".join(lines)


def _versions() -> str:
    try:
        import aiortc
        import av

        return f"aiortc {aiortc.__version__}, PyAV {av.__version__}"
    except Exception:  # noqa: BLE001
        return "aiortc/PyAV versions unknown"


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def _viewer_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    if not counts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError("viewer counts must be positive integers")
    return counts


def _servers(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in SERVERS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"servers are {', '.join(SERVERS)} (got {text!r})")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(
            "Benchmark robotcam (encode once, fan out packets) against aiortc's webcam-example "
            "way (MediaRelay + one encoder per viewer): daemon CPU, fps per viewer, offer to "
            "first frame, and delay growth, for N aiortc viewers in a separate process. "
            "Prints a markdown table. Everything runs on 127.0.0.1."
        ),
        epilog="Example: bench.py --viewers 1 --duration 3 --warmup 2   (a quick smoke run)",
    )
    parser.add_argument("--viewers", type=_viewer_counts, default=[1, 4, 8, 16],
                        metavar="N,N,...", help="viewer counts to run (default: 1,4,8,16)")
    parser.add_argument("--servers", type=_servers, default=list(SERVERS), metavar="NAME,...",
                        help=f"servers to run, from {','.join(SERVERS)} (default: both)")
    parser.add_argument("--warmup", type=float, default=3.0, metavar="S",
                        help="seconds between all viewers having video (or --connect-timeout) "
                        "and the measurement window (default: 3)")
    parser.add_argument("--duration", type=float, default=10.0, metavar="S",
                        help="measurement window, seconds (default: 10)")
    parser.add_argument("--segment", type=float, default=2.0, metavar="S",
                        help="delay growth compares the mean delay of the window's last S "
                        "seconds with its first S seconds (default: 2; at most a third of "
                        "the window)")
    parser.add_argument("--connect-timeout", type=float, default=20.0, metavar="S",
                        help="longest wait for all viewers to get their first frame; the "
                        "run goes on with those that did (default: 20)")
    parser.add_argument("--width", type=int, default=640, help="picture width (default: 640)")
    parser.add_argument("--height", type=int, default=480, help="picture height (default: 480)")
    parser.add_argument("--fps", type=float, default=30.0, help="source frame rate (default: 30)")
    parser.add_argument("--cameras", type=int, default=1, metavar="N",
                        help="robotcam only: N test-pattern cameras, every viewer watching all of "
                        "them in one connection (one video section each); fps and delay are the "
                        "first camera's, the others' fps is in the notes (default: 1)")
    # load-client mode, started by the benchmark itself
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client-viewers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--client-sections", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0 or args.segment <= 0 or args.connect_timeout <= 0:
        parser.error("--duration, --segment and --connect-timeout must be > 0, --warmup >= 0")
    if args.width % 2 or args.height % 2:
        parser.error("--width and --height must be even")
    if args.cameras < 1:
        parser.error("--cameras must be at least 1")
    if args.cameras > 1 and not args.client:
        if "aiortc-example" in args.servers and args.servers != list(SERVERS):
            parser.error("--cameras: the aiortc example serves one camera; use --servers robotcam")
        args.servers = ["robotcam"]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        return client_entry(args)
    try:
        import psutil  # noqa: F401 - needed by the load client; fail early and clearly
    except ImportError:
        print("bench.py needs psutil: run scripts/bootstrap.sh --test (or pip install psutil)", file=sys.stderr)
        return 2

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with it ignored
    workdir = Path(tempfile.mkdtemp(prefix="robotcam-bench-"))
    rows: list[Row] = []
    started = time.monotonic()
    interrupted = False
    try:
        for n in args.viewers:
            for kind in args.servers:
                print(f"[bench] {kind}: {n} viewer(s)...", file=sys.stderr, flush=True)
                row = run_one(kind, n, args, workdir)
                rows.append(row)
                print(f"[bench]   {table_row(row)}", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("[bench] interrupted: stopping servers and clients", file=sys.stderr, flush=True)
    finally:
        _stop_all()
    print(report(rows, args, workdir, time.monotonic() - started))
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
