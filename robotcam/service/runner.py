"""The long-running service: media daemon + HTTP server + signals + systemd notification.

Start order: ICE pin and video source (Daemon.start), then HTTP. READY=1 goes to systemd once
HTTP listens and the first frame exists. Signals only set flags (as uvicorn does); the main
coroutine does the work. Shutdown stops accepting, closes every viewer, stops encoders and the
source, each step bounded, so SIGTERM exits 0 well within systemd's stop timeout.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from robotcam.config import DEFAULT_CAMERA, Config, ConfigError, load_config
from robotcam.service.daemon import Daemon
from robotcam.service.logs import set_level
from robotcam.service.notify import SystemdNotifier
from robotcam.video.pipeline import SourceFactory
from robotcam.service.reload import apply_reload
from robotcam.http.server import build_app
from robotcam.video.sources import SourceError, open_source
from robotcam.service.tls import TLSError, server_context, warn_if_expiring

log = logging.getLogger(__name__)

SHUTDOWN_BUDGET = 4.0  # seconds: systemd's default stop timeout is far longer, our promise is 5
STATUS_INTERVAL = 2.0


class Service:
    def __init__(
        self,
        config: Config,
        config_path: Path | None = None,
        source_factory: SourceFactory = open_source,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.daemon = Daemon(config, source_factory)
        self.notifier = notifier or SystemdNotifier.from_env()
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[Any]] = []

    # --- signals: flags only ----------------------------------------------------------------

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def _install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)

    def _remove_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.remove_signal_handler(sig)

    # --- run --------------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; the exit status for the process."""
        self._install_signal_handlers()
        try:
            try:
                await self.daemon.start()
            except SourceError as exc:
                log.error("%s", exc)
                return 1
            if not await self._listen():
                await self.daemon.stop()
                return 1
            self._tasks = [
                asyncio.create_task(self._announce_ready(), name="robotcam-ready"),
                asyncio.create_task(self._heartbeat(), name="robotcam-heartbeat"),
                asyncio.create_task(self._reloader(), name="robotcam-reloader"),
            ]
            await self._stop.wait()
            log.info("stopping")
            self.notifier.stopping()
            try:
                await asyncio.wait_for(self._shutdown(), SHUTDOWN_BUDGET)
            except asyncio.TimeoutError:
                log.warning("shutdown took longer than %.0f s; exiting anyway", SHUTDOWN_BUDGET)
            return 0
        finally:
            self._remove_signal_handlers()
            self.notifier.close()

    async def _listen(self) -> bool:
        server = self.config.server
        ssl_context = None
        if server.tls.enabled:
            try:
                ssl_context, certificate = await asyncio.to_thread(
                    server_context, server.tls.cert, server.tls.key
                )
            except TLSError as exc:
                log.error("%s", exc)
                return False
            warn_if_expiring(certificate, server.tls.cert)
        runner = web.AppRunner(
            build_app(self.daemon), handle_signals=False, shutdown_timeout=1.0, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(
            runner, server.host, server.port, reuse_address=True, ssl_context=ssl_context
        )
        try:
            await site.start()
        except OSError as exc:
            log.error(
                "server.port: cannot listen on %s:%d: %s", server.host, server.port,
                exc.strerror or exc,
            )
            await runner.cleanup()
            return False
        self._runner = runner
        host = "localhost" if server.host in ("0.0.0.0", "::") else server.host
        scheme = "https" if ssl_context is not None else "http"
        log.info("robotcam is up: open %s://%s:%d/ in a browser", scheme, host, server.port)
        return True

    async def _shutdown(self) -> None:
        """Stop accepting, close every viewer, then encoders and source (reverse of start)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
        await self.daemon.stop()
        log.info("stopped")

    # --- background duties ------------------------------------------------------------------

    async def _announce_ready(self) -> None:
        """READY=1 once a camera's first frame exists: a unit that is 'active' can show a picture."""
        await self.daemon.cameras.first_frame()
        self.notifier.ready()
        self.notifier.status(self.daemon.status_line())
        log.info("first frame produced: ready")

    async def _heartbeat(self) -> None:
        """Keep STATUS= current, and ping the watchdog only while frames flow (from at least one
        camera), so a wedged camera stops the pings and systemd restarts the service."""
        interval = STATUS_INTERVAL
        if self.notifier.watchdog_interval:
            interval = min(interval, self.notifier.watchdog_interval)
        while True:
            if self.daemon.cameras.healthy():
                self.notifier.watchdog()
            self.notifier.status(self.daemon.status_line())
            await asyncio.sleep(interval)

    async def _reloader(self) -> None:
        while True:
            await self._reload.wait()
            self._reload.clear()
            try:
                await self.reload()
            except Exception:  # noqa: BLE001 - the next SIGHUP must still work
                log.exception("reload failed")

    async def reload(self) -> bool:
        """SIGHUP: re-read the config file. A bad file changes nothing and says why."""
        if self.config_path is None:
            log.warning("reload requested, but robotcam runs on built-in defaults (no --config file)")
            return False
        self.notifier.reloading()
        try:
            try:
                new = await asyncio.to_thread(load_config, self.config_path)
            except ConfigError as exc:
                log.error("reload refused, keeping the running config. %s", exc)
                return False
            old, self.config = self.config, new
            set_level(new.logging.level)
            try:
                await apply_reload(self.daemon, old, new)
            except Exception as exc:  # noqa: BLE001 - the pipeline went back to what worked
                log.error("reload: the new video settings could not be applied (%s); video keeps its previous settings", exc)
                running = {p.name: p.video for p in self.daemon.cameras}
                self.config = new.model_copy(update=(
                    {"cameras": running} if new.cameras else {"video": running.get(DEFAULT_CAMERA, new.video)}
                ))
                self.daemon.apply_config(self.config)
                return False
            return True
        finally:
            self.notifier.ready()
            self.notifier.status(self.daemon.status_line())


def run_service(config: Config, config_path: Path | None) -> int:
    started = time.monotonic()
    status = asyncio.run(Service(config, config_path).run())
    log.debug("ran for %.1f s", time.monotonic() - started)
    return status
