#!/usr/bin/env python3
"""Benchmark: what GET /snapshot.jpg costs, in answer time and in the daemon's CPU.

Starts `python -m robotcam run` with the test pattern on 127.0.0.1 and measures two cases:
with no viewer (nothing is encoded between requests), and with one aiortc viewer watching (the
H.264 encoder runs anyway; the viewer lives in this process and does not decode).

Measured, per case:
  answer time        from sending the request to having the whole JPEG (client side, one
                     request at a time): median, p95 and max over the requests.
  CPU per snapshot   the daemon process's user+system CPU time while the requests run, minus
                     what it spends in the same time without requests (measured just before,
                     over as long a window), divided by the number of snapshots.
  JPEG size          mean bytes.

Requests are --interval apart so each one finds a new frame (a snapshot of a frame already
encoded is answered from a cache and costs next to nothing; that would flatter the figure).

Usage:
    .venv/bin/python scripts/bench_snapshot.py                 # 640x480, 60 snapshots per case
    .venv/bin/python scripts/bench_snapshot.py --width 1280 --height 720 --count 30
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import Viewer, _cpu_seconds, _install_client_patches, _spawn, _stop_all, free_port, wait_healthy


async def snapshots(http: Any, url: str, count: int, interval: float) -> tuple[list[float], list[int]]:
    times, sizes = [], []
    for _ in range(count):
        started = time.perf_counter()
        async with http.get(url) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"snapshot: HTTP {response.status}: {body[:200]!r}")
        times.append(time.perf_counter() - started)
        sizes.append(len(body))
        await asyncio.sleep(interval)
    return times, sizes


async def measure(proc: Any, http: Any, base: str, args: argparse.Namespace) -> dict[str, float]:
    window = args.count * args.interval
    idle_start = _cpu_seconds(proc)
    await asyncio.sleep(window)  # the same time, no requests: the daemon's baseline
    idle = _cpu_seconds(proc) - idle_start
    busy_start = _cpu_seconds(proc)
    wall_start = time.monotonic()
    times, sizes = await snapshots(http, f"{base}/snapshot.jpg", args.count, args.interval)
    wall = time.monotonic() - wall_start
    busy = _cpu_seconds(proc) - busy_start
    extra = busy - idle * wall / window
    ordered = sorted(times)
    return {
        "median_ms": statistics.median(times) * 1000,
        "p95_ms": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000,
        "max_ms": ordered[-1] * 1000,
        "cpu_ms": max(0.0, extra) / args.count * 1000,
        "idle_cores": idle / window,
        "bytes": statistics.mean(sizes),
    }


async def run(args: argparse.Namespace, workdir: Path) -> list[tuple[str, dict[str, float]]]:
    import aiohttp
    import psutil

    port = free_port()
    config = workdir / "robotcam.yaml"
    config.write_text(
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
        f"video: {{source: testpattern, width: {args.width}, height: {args.height}, fps: {args.fps:g}}}\n"
        "audio: {source: none}\n"
        "webrtc: {host_addresses: [127.0.0.1], ice_servers: []}\n"
        f"snapshot: {{quality: {args.quality}}}\n"
        "logging: {level: warning}\n"
    )
    log = open(workdir / "daemon.log", "w")
    server = _spawn([sys.executable, "-m", "robotcam", "run", "--config", str(config)],
                    stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    wait_healthy(f"{base}/health", server, 30)
    proc = psutil.Process(server.pid)
    results = []
    async with aiohttp.ClientSession() as http:
        await snapshots(http, f"{base}/snapshot.jpg", 3, 0.1)  # warm up (imports, first context)
        results.append(("no viewer", await measure(proc, http, base, args)))
        _install_client_patches()
        viewer = Viewer(0)
        try:
            await viewer.connect(http, f"{base}/offer")
            if viewer.error:
                raise RuntimeError(f"viewer: {viewer.error}")
            await asyncio.wait_for(viewer.got_frame.wait(), 20)
            await asyncio.sleep(2)  # settle
            results.append(("one viewer", await measure(proc, http, base, args)))
        finally:
            await viewer.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=float, default=30)
    parser.add_argument("--quality", type=int, default=85, help="snapshot.quality")
    parser.add_argument("--count", type=int, default=60, help="snapshots per case")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between requests")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="robotcam-bench-snapshot-"))
    try:
        results = asyncio.run(run(args, workdir))
    finally:
        _stop_all()
    print("| case | answer time median / p95 / max (ms) | daemon CPU per snapshot (ms) | daemon CPU between requests (cores) | JPEG (KB) |")
    print("|---|---|---|---|---|")
    for case, r in results:
        print(f"| {case} | {r['median_ms']:.1f} / {r['p95_ms']:.1f} / {r['max_ms']:.1f} | "
              f"{r['cpu_ms']:.1f} | {r['idle_cores']:.2f} | {r['bytes'] / 1000:.0f} |")
    print(f"\n{args.width}x{args.height} @ {args.fps:g} fps test pattern, quality {args.quality}, "
          f"{args.count} snapshots {args.interval:g} s apart per case; daemon log in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
