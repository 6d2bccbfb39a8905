#!/usr/bin/env python3
"""Benchmark: is encoding Opus once for every viewer worth it?

For each viewer count (default 1, 4, 8, 16) and each mode, the script starts a fresh robotcam
on 127.0.0.1 (test pattern at 320x240 / 15 fps and the 440 Hz test tone), connects N aiortc
viewers (video and audio, receive-only) from ONE separate load-client process, waits until
every viewer receives sound, warms up, and measures the daemon process's CPU over a window.
Modes:

  video-only  audio.source: none. The baseline: what the viewers cost without sound.
  per-viewer  the tone handed to aiortc as raw frames: every RTCRtpSender runs its own Opus
              encoder (aiortc's default: resample to 48 kHz stereo, 96 kbit/s, one hop to the
              default thread pool per 20 ms frame).
  shared      robotcam's way: one libopus encoder in its own thread; every viewer's track
              returns the same av.Packet, which aiortc's sender only packs.

Audio cost = mode's daemon CPU - video-only's, same N. The viewers count Opus packets without
decoding (aiortc's receiver is cut at the decoder), so the client stays light; it runs in its
own process and is not counted.

Usage:
    .venv/bin/python scripts/bench_audio.py                    # about 3 minutes
    .venv/bin/python scripts/bench_audio.py --viewers 1,8 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MODES = ("video-only", "per-viewer", "shared")
RESULT_PREFIX = "RESULT "


# --- the server: robotcam, in-process so the encoder mode can be chosen ----------------------


def server_entry(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO))
    from robotcam.config import Config
    from robotcam.service.logs import setup_logging
    from robotcam.service.runner import Service

    setup_logging("warning")
    config = Config.model_validate({
        "server": {"host": "127.0.0.1", "port": args.port},
        "video": {"source": "testpattern", "width": 320, "height": 240, "fps": 15},
        "audio": {"source": "none" if args.mode == "video-only" else "tone"},
        "talkback": {"enabled": False},
        "webrtc": {"host_addresses": ["127.0.0.1"], "ice_servers": [], "max_peers": 1000},
        "auth": {"anonymous": ["view"], "offers_per_minute": 0},  # viewers need no sign-in
    })
    service = Service(config)
    service.daemon.audio.shared_encoder = args.mode != "per-viewer"
    return asyncio.run(service.run())


# --- the load client ----------------------------------------------------------------------------


class CountingDecoder:
    """Stands in for aiortc's decoders: counts encoded frames, decodes nothing."""

    def decode(self, encoded_frame: Any) -> list[Any]:
        return [encoded_frame]


def client_entry(args: argparse.Namespace) -> int:
    import aioice.ice
    import aiohttp
    import aiortc.rtcrtpreceiver
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
    aiortc.rtcrtpreceiver.get_decoder = lambda codec: CountingDecoder()

    async def main() -> None:
        pcs: list[Any] = []
        counts: dict[int, dict[str, int]] = {}
        readers: list[asyncio.Task[None]] = []

        async def read(index: int, track: Any) -> None:
            with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
                while True:
                    await track.recv()
                    counts[index][track.kind] += 1

        async with aiohttp.ClientSession() as http:
            for index in range(args.client_viewers):
                pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
                pc.addTransceiver("video", direction="recvonly")
                pc.addTransceiver("audio", direction="recvonly")
                counts[index] = {"video": 0, "audio": 0}
                pc.on("track", lambda track, i=index: readers.append(asyncio.ensure_future(read(i, track))))
                await pc.setLocalDescription(await pc.createOffer())
                async with http.post(args.url + "/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
                    answer = await r.json()
                await pc.setRemoteDescription(RTCSessionDescription(**answer))
                pcs.append(pc)
            want = "video" if args.video_only else "audio"
            deadline = time.monotonic() + 30
            while any(c[want] == 0 for c in counts.values()) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            print("READY", flush=True)
            before = {i: dict(c) for i, c in counts.items()}
            await asyncio.sleep(args.warmup + args.duration)
            result = {
                "audio_packets_per_viewer": [counts[i]["audio"] - before[i]["audio"] for i in counts],
                "video_frames_per_viewer": [counts[i]["video"] - before[i]["video"] for i in counts],
            }
            print(RESULT_PREFIX + json.dumps(result), flush=True)
            for pc in pcs:
                await pc.close()
            for reader in readers:
                reader.cancel()

    asyncio.run(main())
    return 0


# --- the driver ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(url: str, proc: subprocess.Popen[Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(OSError, urllib.error.HTTPError):
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.2)
    raise RuntimeError("server not healthy")


def stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(8)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(3)


def run_one(mode: str, viewers: int, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    import psutil

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    me = [sys.executable, str(Path(__file__).resolve())]
    with (logs / f"server-{mode}-{viewers}.log").open("wb") as log:
        server = subprocess.Popen([*me, "--server", "--mode", mode, "--port", str(port)],
                                  stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    client = None
    try:
        wait_healthy(url, server)
        client = subprocess.Popen(
            [*me, "--client", "--url", url, "--client-viewers", str(viewers),
             "--warmup", str(args.warmup), "--duration", str(args.duration),
             *(["--video-only"] if mode == "video-only" else [])],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
        )
        assert client.stdout is not None
        line = client.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"client not ready: {line!r}")
        time.sleep(args.warmup)
        process = psutil.Process(server.pid)
        cpu0, t0 = sum(process.cpu_times()[:2]), time.monotonic()
        time.sleep(args.duration)
        cpu1, t1 = sum(process.cpu_times()[:2]), time.monotonic()
        out = client.stdout.read()
        client.wait(30)
        result = json.loads(next(l for l in out.splitlines() if l.startswith(RESULT_PREFIX))[len(RESULT_PREFIX):])
        result["cpu_cores"] = (cpu1 - cpu0) / (t1 - t0)
        return result
    finally:
        if client is not None and client.poll() is None:
            client.kill()
        stop(server)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", default="1,4,8,16", help="comma-separated viewer counts")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--client-viewers", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--video-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.server:
        return server_entry(args)
    if args.client:
        return client_entry(args)

    counts = [int(n) for n in args.viewers.split(",")]
    modes = [m for m in args.modes.split(",") if m]
    logs = Path(tempfile.mkdtemp(prefix="robotcam-bench-audio-"))
    table: dict[tuple[str, int], dict[str, Any]] = {}
    for n in counts:
        for mode in modes:
            result = run_one(mode, n, args, logs)
            table[(mode, n)] = result
            packets = result["audio_packets_per_viewer"]
            print(f"{mode:>10} {n:>3} viewers: daemon {result['cpu_cores']:.3f} cores, "
                  f"audio packets/viewer/s min {min(packets) / (args.warmup + args.duration):.1f}",
                  file=sys.stderr, flush=True)
    print(f"\n| viewers | {' | '.join(f'{m} (cores)' for m in modes)} | "
          + " | ".join(f"{m} audio cost" for m in modes if m != "video-only") + " |")
    print("|---" * (1 + len(modes) + len([m for m in modes if m != "video-only"])) + "|")
    for n in counts:
        cells = [f"{table[(m, n)]['cpu_cores']:.3f}" for m in modes]
        base = table.get(("video-only", n), {}).get("cpu_cores")
        costs = [f"{table[(m, n)]['cpu_cores'] - base:+.3f}" if base is not None else "-" for m in modes if m != "video-only"]
        print(f"| {n} | " + " | ".join(cells) + " | " + " | ".join(costs) + " |")
    print(f"\n{os.cpu_count()} CPUs; window {args.duration:g} s after {args.warmup:g} s warm-up; logs in {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
