#!/usr/bin/env python3
"""Soak: the real daemon for a long time under the mix a deployment sees, watching for leaks.

The daemon runs as `python -m robotcam run` (test pattern, a test tone, the control channel
bridged to a robot program this script serves on a Unix socket, access control on with a token
this script uses). In this process, aiortc viewers come and go:

  offer      POST /offer with a `control` data channel and an audio transceiver; sends drive
             messages, asks for the talk line, then closes.
  vanish     like offer, but disappears without closing: its ICE stops and nothing is said,
             as a phone walking out of Wi-Fi does. The daemon must notice (ICE consent) and
             clean up by itself.
  whep       POST /whep, PATCH a candidate, watch, DELETE.
  ws         WebSocket signaling with trickled candidates, watch, then `bye` or just closing.

Meanwhile: a SIGHUP reload every --reload-every seconds (alternating two valid configs), the
camera stalls for a few seconds every --fault-every seconds (tests/hooks/sitecustomize.py:
the test pattern delivers nothing while a file exists; the daemon restarts its source), and
the robot program sends telemetry once a second.

Once a second it samples /proc/<pid> (RSS, fds, threads) and /health (peers, encoders, asyncio
tasks). After a warm-up (default: the first sixth of the run) it takes the idle baseline; at
the end the last viewers must be playing, then all leave and fds/tasks/threads must come back
to the baseline (within a small slack), and RSS must not grow faster than --rss-mb-per-hour.
It prints a summary table and exits 1 when a bound is broken or the daemon crashed.

    .venv/bin/python scripts/soak.py               # 60 minutes
    .venv/bin/python scripts/soak.py --minutes 3   # what tests/test_soak.py runs
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import aiohttp  # noqa: E402
import aioice.ice  # noqa: E402
from aiortc import RTCSessionDescription  # noqa: E402

from tests.conftest import free_port  # noqa: E402
from tests.daemon_process import DaemonProcess  # noqa: E402
from tests.signaling_support import RobotProgram, sdpfrag, split_candidates  # noqa: E402
from tests.viewer import Viewer  # noqa: E402

TOKEN = "soak-admin-token-0123456789abcdef"
START_TIMEOUT = 30.0
IDLE_TIMEOUT = 60.0  # s for peers to reach 0 and counts to settle after the last viewer
KINDS = ("offer", "offer", "vanish", "whep", "ws")


def config_text(port: int, workdir: Path, variant: int) -> str:
    """Two valid configs that differ in keys a reload applies live."""
    return (
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
        "video: {source: testpattern, width: 320, height: 240, fps: 15, stall_timeout: 2}\n"
        f"webrtc: {{host_addresses: [127.0.0.1], ice_servers: [], max_peers: {24 + variant}, connect_timeout: 15}}\n"
        "audio: {source: tone}\n"
        f"talkback: {{volume: {1.0 + variant / 2}}}\n"
        f"control: {{enabled: true, socket: {workdir / 'robot.sock'}, max_messages_per_second: {40 + variant * 10}}}\n"
        "logging: {level: info}\n"
        "auth:\n"
        "  enabled: true\n"
        "  offers_per_minute: 0\n"
        f"  state_directory: {workdir / 'state'}\n"
        "  tokens:\n"
        f"    - {{name: soak, sha256: {hashlib.sha256(TOKEN.encode()).hexdigest()}, permissions: [admin]}}\n"
    )


@dataclass
class Sample:
    t: float  # s since start
    rss: int
    fds: int
    threads: int
    tasks: int | None
    peers: int | None
    encoders: int | None
    status: str | None


@dataclass
class Tally:
    viewers_started: dict[str, int] = field(default_factory=dict)
    viewers_played: int = 0
    viewers_failed: list[str] = field(default_factory=list)
    faults: int = 0
    reloads: int = 0
    control_sent: int = 0
    talk_requests: int = 0
    telemetry_sent: int = 0


def read_proc(pid: int) -> tuple[int, int, int]:
    """RSS bytes, open fds, OS threads of a process, from procfs."""
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            fields[key] = value.split()
    return int(fields["VmRSS"][0]) * 1024, len(os.listdir(f"/proc/{pid}/fd")), int(fields["Threads"][0])


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.stall = workdir / "stall"
        self.daemon: DaemonProcess | None = None  # the daemon's config file, log and process
        self.config = workdir / "robotcam.yaml"
        self.log = workdir / "daemon-1.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None
        self.samples: list[Sample] = []
        self.tally = Tally()
        self.t0 = time.monotonic()
        self.duration = args.minutes * 60.0
        self.warmup = args.warmup if args.warmup is not None else self.duration / 6
        self.load_ends = self.duration
        self.active: set[Viewer] = set()
        self.crashed: str | None = None
        self.http: aiohttp.ClientSession | None = None
        self.program = RobotProgram(workdir / "robot.sock")

    # --- the daemon -------------------------------------------------------------------------

    def launch(self) -> None:
        self.daemon = DaemonProcess(
            self.workdir, config_text=config_text(self.port, self.workdir, 0), port=self.port,
            env={"ROBOTCAM_TEST_STALL_FILE": str(self.stall), "PYTHONPATH": str(REPO / "tests" / "hooks")},
        ).launch()
        self.config, self.log, self.proc = self.daemon.config, self.daemon.log, self.daemon.proc
        self.pid = self.proc.pid if self.proc else None

    async def health(self) -> dict[str, Any] | None:
        assert self.http is not None
        try:
            async with self.http.get(self.url + "/health", timeout=aiohttp.ClientTimeout(total=5)) as r:
                return await r.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None

    async def wait_started(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"the daemon exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            report = await self.health()
            if report and report.get("status") in ("ok", "degraded"):
                return
            await asyncio.sleep(0.2)
        raise SystemExit(f"the daemon did not start within {START_TIMEOUT} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop_daemon(self) -> int | None:
        """SIGTERM (then SIGKILL if it hangs); the exit code, None if it was not running."""
        return self.daemon.stop() if self.daemon is not None and self.daemon.proc is not None else None

    def alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None and self.crashed is None:
            self.crashed = f"the daemon exited with {self.proc.returncode}"
        return self.crashed is None

    # --- sampling ----------------------------------------------------------------------------

    async def sampler(self) -> None:
        while self.alive():
            await self.sample()
            await asyncio.sleep(1.0)

    async def sample(self) -> Sample | None:
        assert self.proc is not None
        try:
            rss, fds, threads = read_proc(self.proc.pid)
        except (OSError, KeyError, IndexError):
            return None
        report = await self.health() or {}
        encoders = report.get("video", {}).get("encoders")
        sample = Sample(
            t=time.monotonic() - self.t0, rss=rss, fds=fds, threads=threads,
            tasks=report.get("process", {}).get("tasks"), peers=report.get("peers", {}).get("count"),
            encoders=len(encoders) if isinstance(encoders, dict) else None, status=report.get("status"),
        )
        self.samples.append(sample)
        return sample

    # --- viewers -----------------------------------------------------------------------------

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}", **extra}

    async def run_viewer(self, kind: str, watch: float, final: bool = False) -> Viewer | None:
        """One viewer's life; a `final` one is left playing and returned (None if it failed)."""
        self.tally.viewers_started[kind] = self.tally.viewers_started.get(kind, 0) + 1
        viewer = Viewer()
        viewer.pc.addTransceiver("audio", direction="recvonly")
        channel = viewer.pc.createDataChannel("control") if kind in ("offer", "vanish") else None
        self.active.add(viewer)
        try:
            closer = await asyncio.wait_for(self.connect(kind, viewer), 30)
            await viewer.wait_frames(3, timeout=30)
            self.tally.viewers_played += 1
            if final:
                return viewer  # the end check watches it, then closes it
            deadline = time.monotonic() + watch
            while time.monotonic() < deadline and self.alive():
                if channel is not None and channel.readyState == "open":
                    channel.send(json.dumps({"type": "drive", "linear": random.uniform(-1, 1),
                                             "angular": random.uniform(-1, 1)}))
                    self.tally.control_sent += 1
                await asyncio.sleep(0.2)
            if kind == "offer":
                await self.talk(viewer)
            if kind == "vanish":
                await self.vanish(viewer)
            else:
                await closer()
        except Exception as exc:  # noqa: BLE001 - a failed viewer is a finding, not a script crash
            if self.alive():
                self.tally.viewers_failed.append(f"{kind} at {time.monotonic() - self.t0:.0f} s: {exc!r}")
        finally:
            if not final or viewer.first_frame_at is None:
                self.active.discard(viewer)
                await self.close_viewer(viewer)
        return None

    async def connect(self, kind: str, viewer: Viewer) -> Any:
        """Negotiate through `kind`'s signaling; returns how to leave politely."""
        assert self.http is not None
        if kind in ("offer", "vanish"):
            offer = await viewer.offer()
            async with self.http.post(self.url + "/offer", json=offer, headers=self.headers()) as r:
                answer = await r.json()
                assert r.status == 200, (r.status, answer)
                viewer.session_key = r.headers.get("X-Robotcam-Session")  # type: ignore[attr-defined]
            await viewer.pc.setRemoteDescription(RTCSessionDescription(**answer))

            async def leave() -> None:
                await viewer.pc.close()
            return leave
        if kind == "whep":
            offer = await viewer.offer()
            stripped, candidates = split_candidates(offer["sdp"])
            async with self.http.post(self.url + "/whep", data=stripped,
                                      headers=self.headers(**{"Content-Type": "application/sdp"})) as r:
                text = await r.text()
                assert r.status == 201, (r.status, text)
                location, etag = r.headers["Location"], r.headers["ETag"]
            await viewer.pc.setRemoteDescription(RTCSessionDescription(text, "answer"))
            async with self.http.patch(self.url + location, data=sdpfrag(stripped, candidates), headers=self.headers(
                    **{"Content-Type": "application/trickle-ice-sdpfrag", "If-Match": etag})) as r:
                assert r.status == 204, (r.status, await r.text())

            async def delete() -> None:
                assert self.http is not None
                async with self.http.delete(self.url + location, headers=self.headers()) as r:
                    assert r.status == 200, r.status
                await viewer.pc.close()
            return delete
        ws = await self.http.ws_connect(self.url + "/ws", headers=self.headers())
        answers: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def read() -> None:
            """Keep reading: aiohttp answers the server's pings only while someone reads."""
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    answers.put_nowait(json.loads(message.data))
        reader = asyncio.create_task(read())
        viewer.keep = (ws, reader)  # type: ignore[attr-defined]  # alive as long as the viewer
        offer = await viewer.offer()
        stripped, candidates = split_candidates(offer["sdp"])
        await ws.send_json({"type": "offer", "sdp": stripped})
        for mid, index, candidate in candidates:
            await ws.send_json({"type": "candidate", "candidate": {"candidate": candidate, "sdpMid": mid,
                                                                   "sdpMLineIndex": index}})
        await ws.send_json({"type": "candidate", "candidate": None})
        message = await asyncio.wait_for(answers.get(), 30)
        assert message.get("type") == "answer", message
        await viewer.pc.setRemoteDescription(RTCSessionDescription(message["sdp"], "answer"))

        async def bye() -> None:
            if random.random() < 0.5:
                await ws.send_json({"type": "bye"})
            await ws.close()
            await reader
            await viewer.pc.close()
        return bye

    async def close_viewer(self, viewer: Viewer) -> None:
        """Its peer connection and, for a WebSocket viewer, its socket and reader."""
        await viewer.close()
        ws, reader = getattr(viewer, "keep", (None, None))
        if ws is not None:
            await ws.close()
            await reader

    async def talk(self, viewer: Viewer) -> None:
        """Take and release the talk line (403 without a speaker is an answer too)."""
        assert self.http is not None
        key = getattr(viewer, "session_key", None)
        for action in ("start", "stop"):
            async with self.http.post(self.url + "/api/talk", json={"session": key, "action": action},
                                      headers=self.headers()) as r:
                body = await r.json()
                assert r.status < 500 and (r.status == 200 or "error" in body), (r.status, body)
                self.tally.talk_requests += 1

    async def vanish(self, viewer: Viewer) -> None:
        """Stop answering without a word: the ICE transports stop, no DTLS close, no RTCP BYE."""
        for transceiver in viewer.pc.getTransceivers():
            await transceiver.receiver.transport.transport.stop()
        if viewer.pc.sctp is not None:
            await viewer.pc.sctp.transport.transport.stop()

    async def load(self) -> None:
        """Keep --viewers viewers coming and going until the load phase ends."""
        async def slot(index: int) -> None:
            await asyncio.sleep(index * 1.5)
            while self.alive() and time.monotonic() - self.t0 < self.load_ends - 45:
                kind = random.choice(KINDS)
                await self.run_viewer(kind, watch=random.uniform(5, self.args.max_watch))
                await asyncio.sleep(random.uniform(0.5, 3))
        await asyncio.gather(*(slot(i) for i in range(self.args.viewers)))

    # --- faults, reloads, the robot program -------------------------------------------------

    async def faults(self) -> None:
        await asyncio.sleep(min(self.args.fault_every, self.duration / 3))
        while self.alive() and time.monotonic() - self.t0 < self.load_ends - 60:
            self.stall.touch()
            self.tally.faults += 1
            await asyncio.sleep(self.args.fault_seconds)
            self.stall.unlink()
            await asyncio.sleep(self.args.fault_every)

    async def reloads(self) -> None:
        variant = 0
        while self.alive():
            await asyncio.sleep(min(self.args.reload_every, self.duration / 4))
            if not self.alive() or time.monotonic() - self.t0 > self.load_ends - 30:
                return
            variant ^= 1
            self.config.write_text(config_text(self.port, self.workdir, variant))
            assert self.proc is not None
            self.proc.send_signal(signal.SIGHUP)
            self.tally.reloads += 1

    async def telemetry(self) -> None:
        while self.alive():
            if self.program.send({"type": "telemetry", "battery": round(random.uniform(11, 13), 2)}):
                self.tally.telemetry_sent += 1
            self.program.drain()
            await asyncio.sleep(1.0)

    # --- the run -----------------------------------------------------------------------------

    async def settle_idle(self) -> Sample | None:
        """Wait (bounded) until no peer is left and the counts stop falling; the last sample."""
        deadline = time.monotonic() + IDLE_TIMEOUT
        last: Sample | None = None
        steady = 0
        while time.monotonic() < deadline and self.alive():
            sample = await self.sample()
            if sample and sample.peers == 0 and sample.encoders == 0:
                if last and (sample.fds, sample.threads, sample.tasks) == (last.fds, last.threads, last.tasks):
                    steady += 1
                    if steady >= 5:
                        return sample
                else:
                    steady = 0
                last = sample
            await asyncio.sleep(1.0)
        return last

    async def run(self) -> int:
        aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
        self.program.start()
        self.launch()
        background: list[asyncio.Task[Any]] = []
        try:
            async with aiohttp.ClientSession(headers=self.headers()) as self.http:
                await self.wait_started()
                self.t0 = time.monotonic()
                # Warm-up: one viewer of each kind, so lazily made things (thread pools, encoders,
                # the audio encoder) exist before the idle baseline is taken.
                await asyncio.gather(*(self.run_viewer(kind, watch=3) for kind in ("offer", "whep", "ws")))
                baseline = await self.settle_idle()
                background = [asyncio.create_task(c) for c in (self.sampler(), self.telemetry(),
                                                               self.faults(), self.reloads())]
                await self.load()
                # The end: a last set of viewers must all be playing, then everyone leaves.
                final_kinds = [("offer", "whep", "ws")[i % 3] for i in range(self.args.viewers)]
                finals = await asyncio.gather(*(self.final_viewer(k) for k in final_kinds))
                playing_at_end = sum(1 for ok in finals if ok)
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                background = []
                for viewer in list(self.active):
                    await self.close_viewer(viewer)
                self.active.clear()
                idle = await self.settle_idle()
                if self.alive():
                    code = self.stop_daemon()
                    self.proc = None  # stopped on purpose
                    if code != 0:
                        self.crashed = f"the daemon exited with {code} on SIGTERM"
                return self.report(baseline, idle, playing_at_end, len(final_kinds))
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            self.stop_daemon()
            self.program.stop()

    async def final_viewer(self, kind: str) -> bool:
        viewer = await self.run_viewer(kind, watch=0, final=True)
        if viewer is None:
            return False
        count = len(viewer.numbers)
        with suppress(AssertionError):
            await viewer.wait_frames(count + 15, timeout=20)
            return True
        return False

    # --- the summary -------------------------------------------------------------------------

    def report(self, baseline: Sample | None, idle: Sample | None, playing: int, final: int) -> int:
        args = self.args
        problems: list[str] = []
        loaded = [s for s in self.samples if self.warmup <= s.t <= self.load_ends]
        text = self.log.read_text(errors="replace")
        logged = [l for l in text.splitlines() if " ERROR " in l or " CRITICAL " in l or "Traceback" in l]
        # the injected camera stalls are meant to be logged as errors; everything else is a finding
        fault_lines = [l for l in logged if "source produced no frame" in l]
        error_lines = [l for l in logged if l not in fault_lines]
        hours = max((self.samples[-1].t if self.samples else 1) / 3600, 1e-6)

        def growth(values: list[tuple[float, float]]) -> float | None:
            """Least-squares slope per hour."""
            if len(values) < 10:
                return None
            slope = statistics.linear_regression([t for t, _ in values], [v for _, v in values]).slope
            return slope * 3600

        rss_growth = growth([(s.t, s.rss / 2**20) for s in loaded])
        rows = []
        for name, unit in (("rss", "MB"), ("fds", ""), ("threads", ""), ("tasks", ""), ("peers", ""), ("encoders", "")):
            scale = 2**20 if name == "rss" else 1
            values = [(s.t, getattr(s, name) / scale) for s in self.samples if getattr(s, name) is not None]
            first = values[0][1] if values else None
            last = values[-1][1] if values else None
            g = growth([v for v in values if self.warmup <= v[0] <= self.load_ends])
            peak = max(v for _, v in values) if values else None
            base = getattr(baseline, name) / scale if baseline and getattr(baseline, name) is not None else None
            end = getattr(idle, name) / scale if idle and getattr(idle, name) is not None else None
            rows.append((name + (f" ({unit})" if unit else ""), first, base, peak, last, end, g))

        if rss_growth is not None:
            window_hours = max((loaded[-1].t - loaded[0].t) / 3600, 1e-6)
            allowed = args.rss_mb_per_hour + args.rss_noise_mb / window_hours
            if rss_growth > allowed:
                problems.append(f"RSS grew {rss_growth:.1f} MB/h after warm-up (bound {allowed:.1f} MB/h)")
        else:
            problems.append("too few samples after warm-up to measure RSS growth")
        if baseline is None or idle is None:
            problems.append("the daemon never went idle (peers and encoders at 0)")
        else:
            for name, slack in (("fds", args.fd_slack), ("tasks", args.task_slack), ("threads", args.thread_slack)):
                b, e = getattr(baseline, name), getattr(idle, name)
                if b is None or e is None or e > b + slack:
                    problems.append(f"{name} not back to the idle baseline: {b} -> {e} (slack {slack})")
        if playing < final:
            problems.append(f"only {playing} of the {final} viewers present at the end are playing")
        if self.crashed:
            problems.append(self.crashed)
        if error_lines:
            problems.append(f"{len(error_lines)} error lines logged")
        if self.tally.viewers_failed:
            problems.append(f"{len(self.tally.viewers_failed)} viewers failed")

        def fmt(v: float | None, digits: int = 1) -> str:
            return "-" if v is None else f"{v:.{digits}f}"

        print(f"\nsoak: {self.samples[-1].t / 60 if self.samples else 0:.1f} min, warm-up {self.warmup / 60:.1f} min, "
              f"{len(self.samples)} samples, daemon pid {self.pid}, {self.workdir}")
        print("| measure | start | idle baseline | peak | last under load | idle at end | growth/h after warm-up |")
        print("|---|---|---|---|---|---|---|")
        for name, first, base, peak, last, end, g in rows:
            print(f"| {name} | {fmt(first)} | {fmt(base)} | {fmt(peak)} | {fmt(last)} | {fmt(end)} | {fmt(g)} |")
        t = self.tally
        started = sum(t.viewers_started.values())
        print(f"\nviewers started {started} ({', '.join(f'{k} {v}' for k, v in sorted(t.viewers_started.items()))}), "
              f"played {t.viewers_played}, failed {len(t.viewers_failed)}; playing at the end {playing}/{final}")
        print(f"faults injected {t.faults} (camera stalled {args.fault_seconds:.0f} s each), reloads {t.reloads}, "
              f"control messages {t.control_sent}, talk requests {t.talk_requests}, telemetry lines {t.telemetry_sent}")
        print(f"crashes {0 if not self.crashed else 1}{': ' + self.crashed if self.crashed else ''}; "
              f"error lines logged {len(error_lines)} (per hour {len(error_lines) / hours:.1f}) besides "
              f"{len(fault_lines)} for the injected stalls")
        for line in error_lines[:20]:
            print("  log:", line)
        for line in t.viewers_failed[:20]:
            print("  viewer:", line)
        if problems:
            print("\nFAIL: " + "; ".join(problems))
            return 1
        print("\nPASS: within bounds")
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=60.0, help="length of the run (default 60)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before growth counts (default: a sixth of the run)")
    parser.add_argument("--viewers", type=int, default=4, help="viewers at a time (default 4)")
    parser.add_argument("--max-watch", type=float, default=40.0, help="longest a viewer stays, s")
    parser.add_argument("--reload-every", type=float, default=180.0, help="s between SIGHUP reloads (at most a quarter of the run)")
    parser.add_argument("--fault-every", type=float, default=300.0, help="s between camera stalls (at most a third of the run)")
    parser.add_argument("--fault-seconds", type=float, default=6.0, help="how long each stall lasts")
    parser.add_argument("--rss-mb-per-hour", type=float, default=20.0, help="RSS growth bound after warm-up")
    parser.add_argument("--rss-noise-mb", type=float, default=4.0,
                        help="allowance for RSS noise over the measured window (matters for short runs)")
    parser.add_argument("--fd-slack", type=int, default=3)
    parser.add_argument("--task-slack", type=int, default=3)
    parser.add_argument("--thread-slack", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the daemon's config and log here")
    args = parser.parse_args()
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return asyncio.run(Soak(args, args.workdir).run())
    with tempfile.TemporaryDirectory(prefix="robotcam-soak-") as tmp:
        return asyncio.run(Soak(args, Path(tmp)).run())


if __name__ == "__main__":
    sys.exit(main())
