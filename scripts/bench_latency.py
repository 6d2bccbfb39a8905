#!/usr/bin/env python3
"""Frame-to-screen latency in headless Chromium on loopback: p50/p95, without and with sound,
and without sound with adaptation off (video.adaptive: false), to show it costs nothing on a
good link.

The daemon runs in this process with the test pattern; the source notes the wall-clock time
each frame number was made. The page is the real web client: for every frame it presents
(requestVideoFrameCallback), it reads the frame number from the code band along the top edge
and notes when the frame is expected on screen. Latency = on screen - made, per frame.

    .venv/bin/python scripts/bench_latency.py [--seconds 10] [--rounds 3] [--width 640 --height 480 --fps 30]

The cases run in turn, round after round, and each row pools its rounds, so a machine that
slows down for a while weighs on every case alike. Headless Chromium composites at 60 Hz, so
single figures move in steps of about 17 ms.

Needs Debian's chromium and the test extras (Playwright). Loopback only: the daemon and the
browser gather 127.0.0.1 alone. Run it inside `unshare --net` (as scripts/test.sh does) to be
sure nothing else is touched.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from aiohttp import web  # noqa: E402

from robotcam.config import Config  # noqa: E402
from robotcam.service.daemon import Daemon  # noqa: E402
from robotcam.http.server import build_app  # noqa: E402
from robotcam.video.sources.testpattern import TestPatternSource  # noqa: E402

# Reads the frame number of every presented frame (the Python decode_frame_number, in JS).
JS_RECORD = """() => {
    window.__latency = [];
    const v = document.querySelector('video');
    const c = document.createElement('canvas');
    const g = c.getContext('2d', { willReadFrequently: true });
    const CELLS = 32;
    const checksum = (n) => (n ^ (n >> 8) ^ (n >> 16) ^ 0xA5) & 0xFF;
    const decode = (w, h) => {
        const cell = Math.floor(w / CELLS), band = Math.max(8, Math.floor(h / 24));
        const top = Math.floor(band / 4), bottom = Math.max(top + 1, band - Math.floor(band / 4));
        if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
        g.drawImage(v, 0, 0, w, h);
        const data = g.getImageData(0, 0, w, bottom).data;
        let value = 0;
        for (let i = 0; i < CELLS; i++) {
            const left = i * cell + Math.floor(cell / 4);
            const right = Math.max(left + 1, (i + 1) * cell - Math.floor(cell / 4));
            let sum = 0, count = 0;
            for (let y = top; y < bottom; y++) for (let x = left; x < right; x++) {
                const p = (y * w + x) * 4;
                sum += 0.299 * data[p] + 0.587 * data[p + 1] + 0.114 * data[p + 2];
                count++;
            }
            value = value * 2 + (sum / count > 128 ? 1 : 0);
        }
        const number = Math.floor(value / 256);
        return checksum(number) === value % 256 ? number : null;
    };
    const onFrame = (now, meta) => {
        const n = decode(meta.width, meta.height);
        if (n !== null) window.__latency.push([n, performance.timeOrigin + meta.expectedDisplayTime]);
        v.requestVideoFrameCallback(onFrame);
    };
    v.requestVideoFrameCallback(onFrame);
}"""


class StampedPattern(TestPatternSource):
    """The test pattern, noting when each frame number was made (wall clock, ms)."""

    def __init__(self, width: int, height: int, fps: float) -> None:
        super().__init__(width, height, fps)
        self.made: dict[int, float] = {}

    def emit(self, frame: Any) -> None:
        self.made[self.frame_number] = time.time() * 1000
        super().emit(frame)


class DaemonThread:
    """The daemon and its HTTP server in a thread with their own event loop (Playwright's sync
    API wants this thread's)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.source: StampedPattern | None = None
        self.ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    def factory(self, video: Any) -> tuple[StampedPattern, str]:
        self.source = StampedPattern(video.width, video.height, video.fps)
        return self.source, "latency benchmark"

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        daemon = Daemon(self.config, self.factory)
        await daemon.start()
        runner = web.AppRunner(build_app(daemon), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.config.server.port).start()
        await daemon.pipeline.first_frame.wait()
        self.ready.set()
        await self._stop.wait()
        await runner.cleanup()
        await daemon.stop()

    def __enter__(self) -> DaemonThread:
        self._thread.start()
        if not self.ready.wait(30):
            raise RuntimeError("the daemon did not start within 30 s")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(args: argparse.Namespace, sound: bool, adaptive: bool, port: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    from tests.test_browser import chromium_launch_options

    config = Config.model_validate({
        "server": {"host": "127.0.0.1", "port": port},
        "video": {"source": "testpattern", "width": args.width, "height": args.height, "fps": args.fps,
                  "adaptive": adaptive},
        "audio": {"source": "tone" if sound else "none"},
        "talkback": {"enabled": False},
        "webrtc": {"host_addresses": ["127.0.0.1"], "ice_servers": []},
        "auth": {"anonymous": ["view"]},
        "logging": {"level": "warning"},
    })
    with DaemonThread(config) as daemon, sync_playwright() as pw:
        browser = pw.chromium.launch(**chromium_launch_options())
        try:
            page = browser.new_context(permissions=["camera", "microphone"]).new_page()
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_function("() => window.robotcam && window.robotcam.state === 'live'", timeout=30_000)
            time.sleep(2)  # past the first frames' start-up
            page.evaluate(JS_RECORD)
            time.sleep(args.seconds)
            samples = page.evaluate("window.__latency")
        finally:
            browser.close()
        assert daemon.source is not None
        made = dict(daemon.source.made)
    latencies = [shown - made[number] for number, shown in samples if number in made]
    if not latencies:
        raise RuntimeError("no frame number could be read from the page")
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    print(f"frame made -> frame on screen, headless Chromium, {args.width}x{args.height} at {args.fps:g} fps, "
          f"{args.rounds} rounds of {args.seconds:g} s per case\n")
    cases = ((False, True), (False, False), (True, True))
    pooled: dict[tuple[bool, bool], list[float]] = {case: [] for case in cases}
    for _ in range(args.rounds):
        for case in cases:
            pooled[case] += measure(args, *case, args.port)
    print("| sound | adaptation | frames | p50 ms | p95 ms | max ms |\n| --- | --- | --- | --- | --- | --- |")
    for (sound, adaptive), values in pooled.items():
        print(f"| {'tone' if sound else 'none'} | {'on' if adaptive else 'off'} | {len(values)} | "
              f"{statistics.median(values):.1f} | {percentile(values, 0.95):.1f} | {max(values):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
