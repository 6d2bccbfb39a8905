"""A real `python -m robotcam run` subprocess for tests: spawn, wait for health, stop."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, free_port

START_TIMEOUT = 20.0  # s until GET /health answers 200
STOP_TIMEOUT = 10.0  # s after SIGTERM before SIGKILL


def get_json(url: str, timeout: float = 2.0, context: ssl.SSLContext | None = None) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


class DaemonProcess:
    """The daemon on a loopback port; can be stopped and started again.

    By default it gets a small test-pattern config (plus `extra_config`); `config_text` replaces
    it whole (then pass the `port` it names). `env` adds to this process's environment, or is the
    whole environment with `inherit_env=False`.
    """

    def __init__(
        self, workdir: Path, extra_config: str = "", env: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None, config_text: str | None = None,
        port: int | None = None, inherit_env: bool = True,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.env = env or {}
        self.inherit_env = inherit_env
        # with TLS: trust nothing but what the test made (the CA is in the chain it serves)
        self.ssl_context = ssl.create_default_context(cafile=str(tls[0])) if tls else None
        tls_line = f", tls: {{cert: {tls[0]}, key: {tls[1]}}}" if tls else ""
        self.config = workdir / "robotcam.yaml"
        self.config.write_text(config_text if config_text is not None else (
            f"server: {{host: 127.0.0.1, port: {self.port}{tls_line}}}\n"
            "video: {source: testpattern, width: 320, height: 240, fps: 15}\n"
            "webrtc: {host_addresses: [127.0.0.1], ice_servers: []}\n"
            "logging: {level: info}\n"
            + ("" if "auth:" in extra_config else "auth: {enabled: false}\n") + extra_config
        ))
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self.exit_codes: list[int] = []

    @property
    def log(self) -> Path:
        return self.workdir / f"daemon-{self.runs}.log"

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return "(no log)"

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def launch(self) -> DaemonProcess:
        """Spawn it and return at once (for tests of how it fails to start)."""
        assert self.proc is None, "already running"
        self.runs += 1
        env = dict(os.environ, **self.env) if self.inherit_env else dict(self.env)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("STATE_DIRECTORY", str(self.workdir / "state"))  # first-run admin, sessions
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "robotcam", "run", "--config", str(self.config)],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        return self

    def start(self) -> None:
        """Spawn it and wait (bounded) until GET /health answers 200."""
        self.launch()
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                pytest.fail(f"the daemon exited with {code} while starting:\n{self.log_tail()}")
            try:
                status, body = get_json(self.url + "/health", context=self.ssl_context)
                if status == 200:
                    return
                last = f"HTTP {status}: {body}"
            except (OSError, ValueError) as exc:
                last = repr(exc)
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"GET /health did not answer 200 within {START_TIMEOUT:.0f} s (last: {last}):\n{self.log_tail()}")

    def send_signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited in time; returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return self.exit_codes[-1] if self.exit_codes else None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        self.exit_codes.append(proc.returncode)
        return proc.returncode
