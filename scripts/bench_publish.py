#!/usr/bin/env python3
"""Benchmark: what publishing to a media server costs the robot, next to 2 local viewers alone.

Runs in its own loopback-only network namespace (it re-executes itself under `unshare --net`
as root, like scripts/test.sh), with Janus 1.1 behind a WHIP gateway on a 127.0.0.2 veth
(tests/janus_support.py, the same setup the tests use). For each scenario a fresh
`python -m robotcam run` (test pattern 640x480 at 30 fps, 1 Mbit/s, no sound) serves 2 aiortc
viewers from this process; `publish` adds one publish entry to Janus. After a warmup it
measures over a window:

  daemon CPU   the robotcam process's user+system CPU time over the window / wall time (cores)
  uplink       bytes sent through the namespace's interfaces per second (/proc/net/dev, lo
               and the veth): robotcam is the only media sender here (the viewers receive
               only, Janus has no subscriber), so this is robotcam's uplink plus the RTCP
               reports and HTTP polling that come back, a few kbit/s
  viewer fps   frames each local viewer decoded per second over the window (min)

Usage:
    .venv/bin/python scripts/bench_publish.py                 # about 1.5 minutes
    .venv/bin/python scripts/bench_publish.py --rounds 1 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
INSIDE = "--inside-namespace"


def net_bytes_sent() -> int:
    total = 0
    for line in Path("/proc/net/dev").read_text().splitlines()[2:]:
        name, data = line.split(":", 1)
        if name.strip() in ("lo", "jv0"):
            total += int(data.split()[8])
    return total


def config_text(port: int, publish_url: str | None) -> str:
    text = (
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
        "video: {source: testpattern, width: 640, height: 480, fps: 30, bitrate: 1000000}\n"
        "audio: {source: none}\n"
        "webrtc: {host_addresses: [127.0.0.2], ice_servers: []}\n"
        "logging: {level: info}\n"
        "auth: {enabled: false}\n"
    )
    if publish_url:
        text += f"publish: [{{url: '{publish_url}'}}]\n"
    return text


async def run_scenario(name: str, publish_url: str | None, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    import aiohttp
    import psutil

    from tests.conftest import free_port
    from tests.daemon_process import DaemonProcess, get_json
    from tests.viewer import Viewer

    port = free_port()
    folder = workdir / f"{name}-{time.monotonic_ns()}"
    folder.mkdir()
    daemon = DaemonProcess(folder, config_text=config_text(port, publish_url), port=port)
    await asyncio.to_thread(daemon.start)
    viewers = [Viewer() for _ in range(2)]
    try:
        async with aiohttp.ClientSession() as http:
            async def post(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
                async with http.post(daemon.url + "/offer", json=body) as response:
                    return response.status, await response.json()

            for viewer in viewers:
                await viewer.connect(post)
            await asyncio.gather(*(v.wait_frames(30) for v in viewers))
        if publish_url:
            deadline = time.monotonic() + 30
            while True:
                _, health = await asyncio.to_thread(get_json, daemon.url + "/health")
                if health and health["publish"]["publishers"][0]["state"] == "connected":
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not publishing after 30 s: {health}\n{daemon.log_tail()}")
                await asyncio.sleep(0.2)
        await asyncio.sleep(args.warmup)
        assert daemon.proc is not None
        proc = psutil.Process(daemon.proc.pid)
        cpu0, bytes0, t0 = sum(proc.cpu_times()[:2]), net_bytes_sent(), time.monotonic()
        frames0 = [len(v.numbers) for v in viewers]
        await asyncio.sleep(args.duration)
        cpu1, bytes1, t1 = sum(proc.cpu_times()[:2]), net_bytes_sent(), time.monotonic()
        elapsed = t1 - t0
        _, health = await asyncio.to_thread(get_json, daemon.url + "/health")
        publishers = health["publish"]["publishers"] if health else []
        return {
            "scenario": name,
            "cpu": (cpu1 - cpu0) / elapsed,
            "uplink_kbps": (bytes1 - bytes0) * 8 / elapsed / 1000,
            "fps_min": min((len(v.numbers) - f0) / elapsed for v, f0 in zip(viewers, frames0)),
            "publish_kbps": publishers[0]["bitrate_kbps"] if publishers else None,
        }
    finally:
        await asyncio.gather(*(v.close() for v in viewers))
        await asyncio.to_thread(daemon.stop)


async def bench(args: argparse.Namespace) -> int:
    import aioice.ice

    from tests.conftest import free_port
    from tests.janus_support import JANUS_ADDRESS, can_run_janus, janus_with_whip, loopback_veth

    problem = can_run_janus()
    if problem:
        print(f"bench_publish: {problem}", file=sys.stderr)
        return 1
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: [JANUS_ADDRESS]
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp, loopback_veth():
        workdir = Path(tmp)
        async with janus_with_whip(workdir / "janus", free_port()) as (_, gateway):
            for _ in range(args.rounds):
                rows.append(await run_scenario("2 viewers", None, args, workdir))
                rows.append(await run_scenario("2 viewers + publishing to Janus", gateway.url, args, workdir))
    print("| scenario | daemon CPU (cores) | uplink (kbit/s) | publisher bitrate (kbit/s) | local viewer fps (min) |")
    print("|---|---|---|---|---|")
    for row in rows:
        publish = f"{row['publish_kbps']:.0f}" if row["publish_kbps"] is not None else "-"
        print(f"| {row['scenario']} | {row['cpu']:.3f} | {row['uplink_kbps']:.0f} | {publish} | {row['fps_min']:.1f} |")
    import aiortc
    import av

    print(
        f"\n640x480 @ 30 fps test pattern, 1 Mbit/s H.264, no sound, warmup {args.warmup:.0f} s, "
        f"window {args.duration:.0f} s, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"aiortc {aiortc.__version__}, PyAV {av.__version__}, Janus 1.1; total {time.monotonic() - started:.0f} s."
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs of both scenarios")
    parser.add_argument("--duration", type=float, default=15.0, help="measurement window, seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument(INSIDE, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.inside_namespace:
        if os.geteuid() != 0:
            print("bench_publish: run as root (it needs its own network namespace with a veth)", file=sys.stderr)
            return 1
        command = [sys.executable, __file__, INSIDE, *sys.argv[1:]]
        return subprocess.call(["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *command])
    return asyncio.run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
