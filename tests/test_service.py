"""The real `robotcam run` process: sd_notify, watchdog, reload on SIGHUP, exit on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from tests.conftest import REPO, free_port
from tests.daemon_process import DaemonProcess

HOOKS = REPO / "tests" / "hooks"


class NotifySocket:
    """The service manager's end of NOTIFY_SOCKET, owned by the test."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[tuple[float, str]] = []

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                break
            for line in data.decode().splitlines():
                self.messages.append((time.monotonic(), line))

    def drain(self) -> None:
        """Take what is already queued, so the next timestamps are arrival times."""
        self.sock.setblocking(False)
        try:
            while True:
                data = self.sock.recv(4096)
                self.messages += [(time.monotonic(), line) for line in data.decode().splitlines()]
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def wait_for(self, line: str, timeout: float = 30, after: float = 0.0) -> float:
        """Receive until `line` arrives (after time `after`); return when it came."""
        deadline = time.monotonic() + timeout
        while True:
            for at, got in self.messages:
                if at >= after and got == line:
                    return at
            if time.monotonic() > deadline:
                raise AssertionError(f"no {line!r} within {timeout} s; got {self.lines()}")
            self.collect(0.2)

    def lines(self, after: float = 0.0) -> list[str]:
        return [line for at, line in self.messages if at >= after]

    def close(self) -> None:
        self.sock.close()


def launch(tmp: Path, config: str, env: dict[str, str], port: int) -> DaemonProcess:
    """The real daemon with exactly this environment (NOTIFY_SOCKET and friends), not waited for."""
    return DaemonProcess(tmp, config_text=config, env=env, port=port, inherit_env=False).launch()


def config_text(port: int, **video: object) -> str:
    video_keys = {"source": "testpattern", "width": 160, "height": 120, "fps": 15,
                  "stall_timeout": 1.0, **video}
    return (
        f"server: {{host: 127.0.0.1, port: {port}}}\n"
        f"video: {json.dumps(video_keys)}\n"
        "webrtc: {host_addresses: [127.0.0.1], max_peers: 5}\n"
        "logging: {level: info}\n"
        "auth: {enabled: false}\n"
    )


def get_health(port: int) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def wait_healthy(port: int, daemon: DaemonProcess, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert daemon.proc.poll() is None, daemon.output()
        try:
            if get_health(port)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"daemon not healthy within {timeout} s:\n{daemon.output()}")


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify.sock")
    yield sock
    sock.close()


def service_env(notify: str, stall_flag: Path | None = None, watchdog_usec: int = 2_000_000) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "WATCHDOG_PID")}
    env.update(NOTIFY_SOCKET=notify, WATCHDOG_USEC=str(watchdog_usec), PYTHONPATH=str(HOOKS))
    if stall_flag is not None:
        env["ROBOTCAM_TEST_STALL_FILE"] = str(stall_flag)
    return env


def test_notify_watchdog_reload_and_stop(tmp_path: Path, notify_socket: NotifySocket) -> None:
    port = free_port()
    stall = tmp_path / "stall"
    daemon = launch(tmp_path, config_text(port), service_env(str(notify_socket.path), stall), port)
    try:
        ready_at = notify_socket.wait_for("READY=1")
        # READY only once HTTP answers and a frame exists
        status, health = get_health(port)
        assert status == 200 and health["video"]["frames_produced"] > 0
        assert any(line.startswith("STATUS=") and "testpattern" in line for line in notify_socket.lines())
        # the watchdog is pinged at half of WATCHDOG_USEC while frames flow
        notify_socket.collect(3.5)
        pings = [at for at, line in notify_socket.messages if line == "WATCHDOG=1" and at > ready_at]
        assert len(pings) >= 2

        # a wedged camera: pings stop, health says 503
        stall.touch()
        time.sleep(2.0)  # past stall_timeout (1 s)
        notify_socket.drain()
        stalled_at = time.monotonic()
        notify_socket.collect(3.0)
        assert "WATCHDOG=1" not in notify_socket.lines(after=stalled_at)
        status, health = get_health(port)
        assert status == 503 and health["status"] == "failing"
        # the camera comes back (the supervisor restarts the source): pings resume
        stall.unlink()
        notify_socket.wait_for("WATCHDOG=1", after=time.monotonic(), timeout=40)

        # SIGHUP with a changed config: RELOADING=1, READY=1, change applied
        daemon.config.write_text(config_text(port).replace("max_peers: 5", "max_peers: 7"))
        hup_at = time.monotonic()
        daemon.proc.send_signal(signal.SIGHUP)
        notify_socket.wait_for("READY=1", after=hup_at)
        assert any(line.startswith("RELOADING=1") for line in notify_socket.lines(after=hup_at))
        assert get_health(port)[1]["peers"]["max"] == 7
        assert "reload: webrtc.max_peers: 5 -> 7" in daemon.output()

        # SIGHUP with a broken config: the old one stays, every problem is logged
        daemon.config.write_text("video: {fps: 999}\nwebrtc: {max_peerz: 3}\n")
        hup_at = time.monotonic()
        daemon.proc.send_signal(signal.SIGHUP)
        notify_socket.wait_for("READY=1", after=hup_at)
        output = daemon.output()
        assert "reload refused" in output
        assert "video.fps: must be at most 120 (got 999)" in output
        assert "webrtc.max_peerz: unknown key (did you mean 'max_peers'?)" in output
        status, health = get_health(port)
        assert status == 200 and health["peers"]["max"] == 7

        # SIGTERM: STOPPING=1, exit 0 within 5 s
        term_at = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(5) == 0
        notify_socket.collect(0.5)
        assert "STOPPING=1" in notify_socket.lines(after=term_at)
    finally:
        daemon.stop()


def test_sigterm_with_viewers_connected_exits_0_within_5_s(tmp_path: Path) -> None:
    """A browser-like viewer is connected while the daemon is told to stop."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    daemon = launch(tmp_path, config_text(port), env, port)
    wait_healthy(port, daemon)
    client = subprocess.Popen(
        [sys.executable, "-c", VIEWER_SCRIPT, str(port)], stdout=subprocess.PIPE, text=True,
        cwd=REPO,
    )
    try:
        line = client.stdout.readline()  # the viewer prints once it decodes frames
        assert line.startswith("frames"), daemon.output()
        assert get_health(port)[1]["peers"]["count"] == 1
        started = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(5) == 0
        assert time.monotonic() - started < 5
        assert "stopped" in daemon.output()
    finally:
        client.kill()
        client.wait(10)
        daemon.stop()


def test_port_in_use_fails_with_a_message_naming_the_key(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        daemon = launch(tmp_path, config_text(port), dict(os.environ), port)
        assert daemon.proc.wait(30) == 1
        assert f"server.port: cannot listen on 127.0.0.1:{port}" in daemon.output()
        daemon.stop()


VIEWER_SCRIPT = r"""
import asyncio, json, sys, urllib.request
import aioice.ice
aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=True: ["127.0.0.1"]
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

async def main(port):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    got = asyncio.Event()
    @pc.on("track")
    def on_track(track):
        async def read():
            for _ in range(5):
                await track.recv()
            got.set()
            while True:
                await track.recv()
        asyncio.ensure_future(read())
    await pc.setLocalDescription(await pc.createOffer())
    body = json.dumps({"sdp": pc.localDescription.sdp, "type": "offer"}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/offer", data=body)
    answer = json.load(await asyncio.to_thread(urllib.request.urlopen, req, None, 10))
    await pc.setRemoteDescription(RTCSessionDescription(**answer))
    await asyncio.wait_for(got.wait(), 30)
    print("frames", flush=True)
    await asyncio.sleep(60)

asyncio.run(main(int(sys.argv[1])))
"""


def test_unusable_source_exits_1_with_one_message_naming_the_key(tmp_path: Path) -> None:
    port = free_port()
    config = config_text(port).replace('"source": "testpattern"', '"source": "v4l2", "device": "/dev/video77"')
    daemon = launch(tmp_path, config, dict(os.environ), port)
    assert daemon.proc.wait(30) == 1
    output = daemon.output()
    assert "video.device: /dev/video77 does not exist" in output
    assert "Traceback" not in output
    daemon.stop()


def test_watchdog_stays_fed_while_one_camera_delivers(tmp_path: Path, notify_socket: NotifySocket) -> None:
    """Several cameras: one that is not plugged in degrades the service, names itself in
    STATUS=, and does not starve the watchdog while another camera delivers."""
    port = free_port()
    config = config_text(port) + (
        "cameras:\n  front: {source: testpattern}\n  arm: {source: v4l2, device: /dev/video-not-here}\n")
    daemon = launch(tmp_path, config, service_env(str(notify_socket.path)), port)
    try:
        ready_at = notify_socket.wait_for("READY=1")
        notify_socket.collect(3.5)
        pings = [at for at, line in notify_socket.messages if line == "WATCHDOG=1" and at > ready_at]
        assert len(pings) >= 2
        statuses = [line for line in notify_socket.lines() if line.startswith("STATUS=")]
        assert any("2 cameras" in line and "failing: arm (failed)" in line for line in statuses), statuses
        status, health = get_health(port)
        assert status == 200 and health["status"] == "degraded"
        assert health["cameras"]["front"]["ok"] and not health["cameras"]["arm"]["ok"]
        assert "/dev/video-not-here" in health["cameras"]["arm"]["reason"]
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.proc.wait(5) == 0
    finally:
        daemon.stop()
