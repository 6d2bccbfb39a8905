"""Robot control: aiortc viewers' `control` data channels through the daemon to a robot program
on a Unix socket that the test owns, both ways; reconnection; what is refused, and that the
viewer stays connected through it all."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from robotcam.config import Config
from tests.conftest import REPO, Robot, make_config
from tests.signaling_support import RobotProgram
from tests.test_systemd_unit import UNIT, parse_unit
from tests.viewer import Viewer

WAIT = 15.0


async def wait_until(predicate: Any, timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.05)


class ControlViewer(Viewer):
    """A viewer that opens the `control` channel before its offer, as the web page does."""

    def __init__(self) -> None:
        super().__init__()
        self.channel = self.pc.createDataChannel("control")
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.opened = asyncio.Event()
        self.channel.on("open", self.opened.set)
        self.channel.on("message", lambda data: self.inbox.put_nowait(json.loads(data)))

    async def start(self, robot: Robot) -> None:
        await self.connect(robot.post_offer)
        await asyncio.wait_for(self.opened.wait(), WAIT)

    def send(self, message: Any) -> None:
        self.channel.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    async def receive(self, timeout: float = WAIT) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(self.inbox.get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"nothing on the control channel within {timeout} s") from None


def control_config(path: Path, **extra: Any) -> Config:
    return make_config(control={"enabled": True, "socket": str(path), **extra})


async def from_program(program: RobotProgram, timeout: float = WAIT) -> dict[str, Any]:
    return await asyncio.to_thread(program.next_message, timeout)


async def health_control(robot: Robot) -> dict[str, Any]:
    _, health = await robot.health()
    return health["control"]


async def test_round_trip_both_ways_for_every_viewer(robot_factory: Any, tmp_path: Path) -> None:
    program = RobotProgram(tmp_path / "robot.sock")
    program.start()
    robot: Robot = await robot_factory(control_config(program.path))
    first, second = ControlViewer(), ControlViewer()
    try:
        await wait_until(lambda: robot.daemon.control.connected, what="the bridge connects")
        await first.start(robot)
        await second.start(robot)
        first_id, second_id = sorted(robot.daemon.peers.sessions)

        # Viewer -> robot program: the message as sent, plus who sent it (not who it claims).
        first.send({"type": "drive", "linear": 0.5, "angular": -0.25, "viewer": 999})
        assert await from_program(program) == {"type": "drive", "linear": 0.5, "angular": -0.25, "viewer": first_id}
        second.send({"type": "drive", "linear": 0, "angular": 1})
        assert await from_program(program) == {"type": "drive", "linear": 0, "angular": 1, "viewer": second_id}

        # Robot program -> every viewer.
        telemetry = {"type": "telemetry", "battery": 12.1, "speed": [0.1, 0.0]}
        assert program.send(telemetry) == 1
        assert await first.receive() == telemetry
        assert await second.receive() == telemetry

        control = await health_control(robot)
        assert control["connected"] is True and control["ok"] is True, control
        assert control["viewers"] == 2 and control["to_robot"] == 2 and control["from_robot"] == 1, control
        _, health = await robot.health()
        assert all(s["control"] is True for s in health["peers"]["sessions"]), health
    finally:
        await first.close()
        await second.close()
        program.stop()


async def test_bridge_reconnects_when_the_program_restarts(robot_factory: Any, tmp_path: Path) -> None:
    program = RobotProgram(tmp_path / "robot.sock")
    robot: Robot = await robot_factory(control_config(program.path))
    viewer = ControlViewer()
    try:
        # Not there yet: /health says so (and marks the daemon degraded), video is served.
        control = await health_control(robot)
        assert control["connected"] is False and control["ok"] is False, control
        assert "cannot connect" in control["reason"], control
        _, health = await robot.health()
        assert health["status"] != "ok", health
        await viewer.start(robot)
        viewer.send({"type": "drive", "linear": 1, "angular": 0})
        reply = await viewer.receive()
        assert reply["type"] == "error" and "not connected" in reply["error"], reply

        program.start()
        await wait_until(lambda: robot.daemon.control.connected, what="the bridge connects")
        viewer.send({"type": "ping"})
        assert (await from_program(program))["type"] == "ping"

        program.stop()  # the robot program exits ...
        await wait_until(lambda: not robot.daemon.control.connected, what="the bridge notices")
        program.start()  # ... and comes back
        await wait_until(lambda: robot.daemon.control.connected, what="the bridge reconnects")
        assert robot.daemon.control.connects == 2
        viewer.send({"type": "drive", "linear": -1, "angular": 0})
        message = await from_program(program)
        assert message["type"] == "drive" and message["linear"] == -1, message
        program.send({"type": "telemetry", "uptime": 1})
        reply = await viewer.receive()
        while reply.get("type") == "error":  # errors from while it was away
            reply = await viewer.receive()
        assert reply == {"type": "telemetry", "uptime": 1}
        assert viewer.pc.connectionState == "connected"
    finally:
        await viewer.close()
        program.stop()


async def test_bad_messages_are_refused_and_the_viewer_stays(robot_factory: Any, tmp_path: Path) -> None:
    program = RobotProgram(tmp_path / "robot.sock")
    program.start()
    robot: Robot = await robot_factory(control_config(program.path, max_message_bytes=256))
    viewer = ControlViewer()
    try:
        await wait_until(lambda: robot.daemon.control.connected, what="the bridge connects")
        await viewer.start(robot)
        cases = [
            (json.dumps({"type": "drive", "note": "x" * 300}), "too large"),
            ("{not json", "not valid JSON"),
            ("[1, 2, 3]", "JSON object"),
            ("42", "JSON object"),
            (b"\xff\xfe", "not valid JSON"),
        ]
        for data, expected in cases:
            viewer.send(data)
            reply = await viewer.receive()
            assert reply["type"] == "error" and expected in reply["error"], (data, reply)
        assert program.drain() == []  # none of it reached the program
        assert viewer.pc.connectionState == "connected"
        viewer.send({"type": "drive", "linear": 0.25, "angular": 0})
        assert (await from_program(program))["linear"] == 0.25

        # The program's own bad lines are dropped (and counted); good ones still flow.
        program.send_raw(b"this is not json\n[1]\n")
        program.send({"type": "telemetry", "ok": True})
        assert await viewer.receive() == {"type": "telemetry", "ok": True}
        assert (await health_control(robot))["bad_lines"] == 2
    finally:
        await viewer.close()
        program.stop()


async def test_messages_beyond_the_rate_are_dropped(robot_factory: Any, tmp_path: Path) -> None:
    program = RobotProgram(tmp_path / "robot.sock")
    program.start()
    robot: Robot = await robot_factory(control_config(program.path, max_messages_per_second=5))
    viewer = ControlViewer()
    try:
        await wait_until(lambda: robot.daemon.control.connected, what="the bridge connects")
        await viewer.start(robot)
        for n in range(40):
            viewer.send({"type": "drive", "n": n})
        reply = await viewer.receive()
        assert reply["type"] == "error" and "too many messages" in reply["error"], reply
        first = await from_program(program)
        assert first["n"] == 0
        await asyncio.sleep(0.5)
        got = [first, *program.drain()]
        assert 1 <= len(got) < 40, len(got)
        assert viewer.pc.connectionState == "connected"
    finally:
        await viewer.close()
        program.stop()


async def test_control_off_by_default(robot: Robot) -> None:
    viewer = ControlViewer()
    try:
        config = await (await robot.http.get("/api/config")).json()
        assert config["control"]["enabled"] is False
        assert await health_control(robot) == {"enabled": False}
        await viewer.start(robot)
        viewer.send({"type": "drive", "linear": 1, "angular": 0})
        reply = await viewer.receive()
        assert reply["type"] == "error" and "control.enabled" in reply["error"], reply
    finally:
        await viewer.close()


async def test_reload_moves_the_bridge_to_the_new_socket(robot_factory: Any, tmp_path: Path) -> None:
    old, new = RobotProgram(tmp_path / "old.sock"), RobotProgram(tmp_path / "new.sock")
    old.start()
    new.start()
    robot: Robot = await robot_factory(control_config(old.path))
    try:
        await asyncio.to_thread(old.connected.wait, WAIT)
        robot.daemon.apply_config(control_config(new.path))
        assert await asyncio.to_thread(new.connected.wait, WAIT), "no connection to the new socket"
        await wait_until(lambda: robot.daemon.control.connected, what="connected again")
        assert (await health_control(robot))["socket"] == str(new.path)
    finally:
        old.stop()
        new.stop()


def test_unit_lets_a_robot_program_in_group_robotcam_create_the_socket() -> None:
    svc = parse_unit(UNIT)["Service"]
    assert svc["RuntimeDirectory"] == ["robotcam"]
    assert svc["RuntimeDirectoryMode"] == ["2770"]  # group-writable, setgid: socket in group robotcam
    assert svc["RuntimeDirectoryPreserve"] == ["yes"]  # stopping robotcam keeps the program's socket
    assert Config().control.socket.startswith("/run/robotcam/")
    assert "socket: /run/robotcam/control.sock" in (REPO / "config" / "robotcam.yaml").read_text()
