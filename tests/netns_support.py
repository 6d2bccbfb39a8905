"""Viewers behind a shaped link, shared by tests/test_weak_link.py and scripts/bench_network.py.

A child network namespace joined to ours by a veth pair, whose side in our namespace can be
shaped with `tc` (this kernel has no netem: tbf for a rate cap, an htb with a blackhole class
picked by a BPF classifier for random loss); a Chromium whose every packet goes through it;
camera-like content (a noise clip the encoder cannot shrink below its bitrate) and the page
probe that records every presented frame. Addresses are in 127.0.0.0/8 (route_localnet), so
nothing leaves the loopback-only namespace the suite runs in.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import shutil

import av
import numpy as np
import pytest
from playwright.sync_api import Browser, Playwright

from tests.test_browser import CHROMIUM, chromium_launch_options

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or not CHROMIUM.exists()
    or not all(shutil.which(tool) for tool in ("ip", "tc", "nsenter", "unshare")),
    reason="needs root, Chromium, ip, tc, nsenter and unshare (scripts/test.sh runs the suite so)",
)


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=10)


def noise_clip(path: Path, seconds: float = 3.0, fps: int = 30, width: int = 320, height: int = 240) -> Path:
    """Camera-like content for rate control: every frame fresh noise over a moving gradient."""
    rng = np.random.default_rng(7)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"qscale": "3"}
        for n in range(int(seconds * fps)):
            base = (np.arange(width)[None, :] + 4 * n) % 256
            picture = np.clip(base + rng.integers(-60, 60, (height, width)), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(np.stack([picture] * 3, axis=-1), format="rgb24")
            frame.pts = n
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


class ShapedLink:
    """A child network namespace joined to ours by a veth pair; our side (`server_if`, what we
    send to the viewers in there) can be capped or made lossy. The namespace lives as long as
    a process holding it, which ends after `lifetime` seconds even if we are killed first."""

    def __init__(self, server: str = "127.0.1.1", viewer: str = "127.0.1.2", name: str = "v",
                 lifetime: float = 600) -> None:
        self.server, self.viewer = server, viewer
        self.server_if, viewer_if = f"{name}S", f"{name}W"
        self.holder = subprocess.Popen(["unshare", "--net", "sleep", f"{lifetime:.0f}"])
        try:
            self._wait_for_namespace()
            pid = str(self.holder.pid)
            self.inside = ("nsenter", "-t", pid, "-n")
            run("ip", "link", "add", self.server_if, "type", "veth", "peer", "name", viewer_if, "netns", pid)
            run("ip", "addr", "add", f"{server}/24", "dev", self.server_if)
            run("ip", "link", "set", self.server_if, "up")
            run("sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1")
            run(*self.inside, "ip", "link", "set", "lo", "up")
            run(*self.inside, "ip", "addr", "add", f"{viewer}/24", "dev", viewer_if)
            run(*self.inside, "ip", "link", "set", viewer_if, "up")
            run(*self.inside, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1")
        except BaseException:
            self.close()
            raise

    def _wait_for_namespace(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        own = os.readlink("/proc/self/ns/net")
        while os.readlink(f"/proc/{self.holder.pid}/ns/net") == own:
            if time.monotonic() > deadline:
                raise RuntimeError("the child network namespace did not appear")
            time.sleep(0.01)

    def cap(self, rate: str) -> None:
        """tbf on what we send to the viewer (aiortc does not pace: the burst must hold a
        keyframe, and Wi-Fi queues are deep: a second of it here)."""
        run("tc", "qdisc", "replace", "dev", self.server_if, "root", "tbf", "rate", rate,
            "burst", "128kbit", "latency", "1s")

    def lose(self, share: float) -> None:
        """Drop a random share of what we send to the viewer (no netem here: an htb with a
        blackhole class, and a classic BPF filter on a random number choosing it)."""
        threshold, dev = int(share * 2**32), ("dev", self.server_if)
        run("tc", "qdisc", "replace", *dev, "root", "handle", "1:", "htb", "default", "1")
        run("tc", "class", "add", *dev, "parent", "1:", "classid", "1:1", "htb", "rate", "1gbit")
        run("tc", "class", "add", *dev, "parent", "1:", "classid", "1:2", "htb", "rate", "1gbit")
        run("tc", "qdisc", "add", *dev, "parent", "1:2", "handle", "20:", "blackhole")
        run("tc", "filter", "add", *dev, "parent", "1:", "protocol", "all", "bpf", "bytecode",
            f"4,32 0 0 4294963256,53 1 0 {threshold},6 0 0 4294967295,6 0 0 0", "flowid", "1:2")

    def lift(self) -> None:
        """Back to an unshaped link (no error when it was not shaped)."""
        subprocess.run(["tc", "qdisc", "del", "dev", self.server_if, "root"], capture_output=True, timeout=10)

    def close(self) -> None:
        subprocess.run(["ip", "link", "del", self.server_if], capture_output=True, timeout=10)
        self.holder.kill()
        self.holder.wait(5)


def browser_behind(link: ShapedLink, playwright: Playwright, workdir: Path) -> Browser:
    """A Chromium whose every packet goes through the link (Playwright talks to it over a pipe,
    which the namespace does not touch)."""
    wrapper = workdir / f"chromium-behind-{link.server_if}"
    wrapper.write_text(f"#!/bin/sh\nexec {' '.join(link.inside)} {CHROMIUM} \"$@\"\n")
    wrapper.chmod(0o755)
    return playwright.chromium.launch(**{**chromium_launch_options(), "executable_path": str(wrapper)})


# Every presented frame, as the page shows it: wall-clock time and width.
JS_RECORD_FRAMES = """() => {
    window.__frames = [];
    const v = document.querySelector('video');
    const record = (now, meta) => { window.__frames.push([Date.now() / 1000, meta.width]); v.requestVideoFrameCallback(record); };
    v.requestVideoFrameCallback(record);
}"""


def longest_gap(times: list[float], start: float, end: float) -> float:
    """The longest time without a frame between start and end (the edges count as frames)."""
    window = [t for t in times if start <= t <= end]
    edges = [start, *window, end]
    return max(b - a for a, b in zip(edges, edges[1:]))
