"""sd_notify client: exact datagrams on a test-owned socket, and never raising."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from robotcam.service.notify import SystemdNotifier

RECV_TIMEOUT = 5.0  # generous: a datagram on a local socket arrives immediately


class Receiver:
    """A stand-in for systemd's notification socket."""

    def __init__(self, notify_socket: str, bind_address: str) -> None:
        self.notify_socket = notify_socket  # the $NOTIFY_SOCKET value
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_address)
        self.sock.settimeout(RECV_TIMEOUT)

    def recv(self) -> str:
        return self.sock.recv(4096).decode("utf-8")

    def assert_empty(self) -> None:
        self.sock.setblocking(False)
        try:
            with pytest.raises(BlockingIOError):
                self.sock.recv(4096)
        finally:
            self.sock.settimeout(RECV_TIMEOUT)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def path_receiver() -> Iterator[Receiver]:
    # Short directory: AF_UNIX paths are limited to 107 bytes and pytest's
    # tmp_path can be long.
    directory = tempfile.mkdtemp(prefix="rcn-")
    path = os.path.join(directory, "notify.sock")
    receiver = Receiver(path, path)
    try:
        yield receiver
    finally:
        receiver.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def abstract_receiver() -> Iterator[Receiver]:
    name = f"robotcam-test-{uuid.uuid4().hex}"
    receiver = Receiver("@" + name, "\0" + name)
    try:
        yield receiver
    finally:
        receiver.close()


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest) -> Receiver:
    return request.getfixturevalue(f"{request.param}_receiver")


def notifier_for(receiver: Receiver, **extra: str) -> SystemdNotifier:
    return SystemdNotifier.from_env({"NOTIFY_SOCKET": receiver.notify_socket, **extra})


def test_messages_are_exact(receiver: Receiver) -> None:
    n = notifier_for(receiver, WATCHDOG_USEC="30000000")
    assert n.enabled

    assert n.ready() is True
    assert receiver.recv() == "READY=1"

    assert n.status("3 viewers, 30.0 fps, testpattern") is True
    assert receiver.recv() == "STATUS=3 viewers, 30.0 fps, testpattern"

    assert n.watchdog() is True
    assert receiver.recv() == "WATCHDOG=1"

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading() is True
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    match = re.fullmatch(r"RELOADING=1\nMONOTONIC_USEC=(\d+)", receiver.recv())
    assert match, "RELOADING=1 must carry MONOTONIC_USEC for Type=notify-reload"
    assert before <= int(match.group(1)) <= after

    assert n.stopping() is True
    assert receiver.recv() == "STOPPING=1"

    receiver.assert_empty()
    n.close()


def test_status_unchanged_is_not_resent(path_receiver: Receiver) -> None:
    n = notifier_for(path_receiver)
    assert n.status("1 viewer") is True
    assert n.status("1 viewer") is False
    assert n.status("2 viewers") is True
    assert n.status("1 viewer") is True
    assert [path_receiver.recv() for _ in range(3)] == [
        "STATUS=1 viewer",
        "STATUS=2 viewers",
        "STATUS=1 viewer",
    ]
    path_receiver.assert_empty()


def test_status_newlines_are_flattened(path_receiver: Receiver) -> None:
    # A newline would start a new assignment (e.g. an injected READY=1).
    n = notifier_for(path_receiver)
    n.status("camera lost\nREADY=1")
    assert path_receiver.recv() == "STATUS=camera lost READY=1"


def test_generic_notify_and_send(path_receiver: Receiver) -> None:
    n = notifier_for(path_receiver)
    assert n.notify(EXTEND_TIMEOUT_USEC=5_000_000, READY=True) is True
    assert path_receiver.recv() == "EXTEND_TIMEOUT_USEC=5000000\nREADY=1"
    assert n.send("A=1", "B=two") is True
    assert path_receiver.recv() == "A=1\nB=two"
    assert n.send() is False
    path_receiver.assert_empty()


def test_no_notify_socket_is_a_noop() -> None:
    n = SystemdNotifier.from_env({"WATCHDOG_USEC": "30000000"})
    assert not n.enabled
    assert n.watchdog_interval is None
    assert n.ready() is False
    assert n.status("x") is False
    assert n.watchdog() is False
    assert n.reloading() is False
    assert n.stopping() is False
    assert n.notify(FOO=1) is False
    n.close()
    # The default reads os.environ, which under pytest has no NOTIFY_SOCKET
    # unless the test run itself is a notify service.
    if "NOTIFY_SOCKET" not in os.environ:
        assert not SystemdNotifier.from_env().enabled


def test_unsupported_socket_kind_disables() -> None:
    assert not SystemdNotifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled
    assert not SystemdNotifier.from_env({"NOTIFY_SOCKET": "relative/path"}).enabled
    assert not SystemdNotifier.from_env({"NOTIFY_SOCKET": ""}).enabled


def test_watchdog_interval_is_half_the_timeout(path_receiver: Receiver) -> None:
    n = notifier_for(path_receiver, WATCHDOG_USEC="30000000")
    assert n.watchdog_enabled
    assert n.watchdog_interval == pytest.approx(15.0)

    own = notifier_for(path_receiver, WATCHDOG_USEC="20000000", WATCHDOG_PID=str(os.getpid()))
    assert own.watchdog_interval == pytest.approx(10.0)


@pytest.mark.parametrize("usec", [None, "", "0", "-5", "soon"])
def test_no_or_invalid_watchdog_usec(path_receiver: Receiver, usec: str | None) -> None:
    extra = {} if usec is None else {"WATCHDOG_USEC": usec}
    n = notifier_for(path_receiver, **extra)
    assert n.watchdog_interval is None
    assert not n.watchdog_enabled
    assert n.watchdog() is False
    path_receiver.assert_empty()


def test_watchdog_pid_of_another_process_disables_watchdog(path_receiver: Receiver) -> None:
    # E.g. a child that inherited the environment: the watchdog is not ours.
    n = notifier_for(path_receiver, WATCHDOG_USEC="30000000", WATCHDOG_PID=str(os.getpid() + 1))
    assert n.watchdog_interval is None
    assert n.watchdog() is False
    path_receiver.assert_empty()
    # Other notifications still work.
    assert n.ready() is True
    assert path_receiver.recv() == "READY=1"


def test_vanished_socket_does_not_raise(caplog: pytest.LogCaptureFixture) -> None:
    directory = tempfile.mkdtemp(prefix="rcn-")
    try:
        path = os.path.join(directory, "notify.sock")
        receiver = Receiver(path, path)
        n = SystemdNotifier.from_env({"NOTIFY_SOCKET": path})
        assert n.ready() is True
        assert receiver.recv() == "READY=1"

        receiver.close()
        Path(path).unlink()
        with caplog.at_level(logging.DEBUG, logger="robotcam.service.notify"):
            assert n.ready() is False
            assert n.status("still alive") is False
            assert n.stopping() is False
        failures = [r for r in caplog.records if r.name == "robotcam.service.notify"]
        assert len(failures) == 1, "send errors are logged once, at debug level"
        assert failures[0].levelno == logging.DEBUG

        # A failed STATUS= is not remembered as sent: once the manager is
        # back, the same text goes out again.
        receiver = Receiver(path, path)
        assert n.status("still alive") is True
        assert receiver.recv() == "STATUS=still alive"
        receiver.close()
        n.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_missing_abstract_socket_does_not_raise() -> None:
    n = SystemdNotifier.from_env({"NOTIFY_SOCKET": f"@robotcam-absent-{uuid.uuid4().hex}"})
    assert n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    n.close()


def test_close_is_idempotent_and_send_reopens(path_receiver: Receiver) -> None:
    with notifier_for(path_receiver) as n:
        assert n.ready() is True
    n.close()
    assert path_receiver.recv() == "READY=1"
    assert n.stopping() is True
    assert path_receiver.recv() == "STOPPING=1"
    n.close()


def test_send_is_non_blocking_when_receiver_is_full(path_receiver: Receiver) -> None:
    # Nobody reads: once the receive queue is full, sends must fail fast
    # instead of stalling the event loop.
    n = notifier_for(path_receiver)
    deadline = time.monotonic() + 30
    results = []
    for i in range(5000):
        results.append(n.send(f"STATUS={i}" + "x" * 1000))
        if not results[-1] or time.monotonic() > deadline:
            break
    assert results[-1] is False, "expected the unread queue to fill up"
    n.close()
