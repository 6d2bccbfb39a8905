"""Minimal sd_notify(3) client: readiness, status and watchdog for systemd.

Implemented here (stdlib only) rather than via python-systemd/sdnotify so the
daemon has no extra native dependency, and so that a notification can never
block or crash the media pipeline: every send is non-blocking and errors are
swallowed (logged once at debug level).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

__all__ = ["SystemdNotifier"]

log = logging.getLogger(__name__)


def _parse_address(value: str | None) -> str | None:
    """Map $NOTIFY_SOCKET to an AF_UNIX address, or None if unusable.

    "@name" denotes the Linux abstract namespace (leading NUL byte). Other
    transports (e.g. "vsock:" used by VMs) are not supported: the daemon
    always runs under a local systemd.
    """
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    log.debug("unsupported NOTIFY_SOCKET %r; notifications disabled", value)
    return None


def _parse_watchdog_usec(usec: str | None, pid: str | None) -> int | None:
    """Watchdog timeout in µs, if it is enabled *for this process*.

    WATCHDOG_PID lets systemd say whom the watchdog is meant for, so that a
    forked child that inherited the environment does not ping on the main
    process' behalf.
    """
    if not usec:
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    if value <= 0:
        return None
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return value


class SystemdNotifier:
    """Send sd_notify messages to the service manager.

    A no-op when not started by systemd (NOTIFY_SOCKET unset), so callers
    never need to check ``enabled`` first. Thread-safe.
    """

    def __init__(self, address: str | None = None, watchdog_usec: int | None = None) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec if watchdog_usec and watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._last_status: str | None = None
        self._error_logged = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SystemdNotifier:
        """Build a notifier from NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID."""
        env = os.environ if environ is None else environ
        address = _parse_address(env.get("NOTIFY_SOCKET"))
        watchdog = _parse_watchdog_usec(env.get("WATCHDOG_USEC"), env.get("WATCHDOG_PID"))
        return cls(address, watchdog if address else None)

    @property
    def enabled(self) -> bool:
        """True when there is a notification socket to talk to."""
        return self._address is not None

    @property
    def watchdog_enabled(self) -> bool:
        return self._watchdog_usec is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: half the timeout, as sd_watchdog_enabled(3) advises."""
        if self._watchdog_usec is None:
            return None
        return self._watchdog_usec / 2 / 1_000_000

    # -- protocol messages ------------------------------------------------

    def ready(self) -> bool:
        """Startup (or a reload) finished: Type=notify units become active."""
        return self.send("READY=1")

    def status(self, text: str) -> bool:
        """Set the free-form status shown by `systemctl status`.

        Called often (e.g. every stats tick), so an unchanged text is not
        re-sent. Newlines would start a new assignment; they are flattened.
        """
        text = " ".join(text.splitlines())
        with self._lock:
            if text == self._last_status:
                return False
        sent = self.send(f"STATUS={text}")
        if sent:
            with self._lock:
                self._last_status = text
        return sent

    def watchdog(self) -> bool:
        """Keep-alive ping; only sent when systemd armed a watchdog for us."""
        if self._watchdog_usec is None:
            return False
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        """Reload started; follow with ready() when done.

        MONOTONIC_USEC is required by Type=notify-reload (systemd >= 253) to
        match the message to the reload request; older managers ignore it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        """Shutdown started: systemd shows "deactivating" instead of a crash."""
        return self.send("STOPPING=1")

    def notify(self, **fields: object) -> bool:
        """Send arbitrary assignments, e.g. notify(EXTEND_TIMEOUT_USEC=10_000_000)."""
        lines = []
        for key, value in fields.items():
            if isinstance(value, bool):
                value = int(value)
            lines.append(f"{key}={value}")
        return self.send(*lines)

    # -- transport --------------------------------------------------------

    def send(self, *lines: str) -> bool:
        """Send one datagram of newline-separated assignments.

        Returns True if the datagram was handed to the kernel. Never raises:
        a missing or full manager socket must not take the daemon down.
        """
        if self._address is None or not lines:
            return False
        data = "\n".join(lines).encode("utf-8")
        with self._lock:
            try:
                if self._sock is None:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    sock.setblocking(False)
                    self._sock = sock
                self._sock.sendto(data, self._address)
                return True
            except OSError as exc:
                if not self._error_logged:
                    self._error_logged = True
                    log.debug("sd_notify to %r failed: %s (further errors not logged)", self._address, exc)
                return False

    def close(self) -> None:
        """Release the socket; a later send() reopens it."""
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> SystemdNotifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(address={self._address!r}, watchdog_usec={self._watchdog_usec})"
