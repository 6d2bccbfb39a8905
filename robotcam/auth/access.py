"""The access-control component: credentials, sign-in sessions, limits, and their health.

A daemon Component like the microphone: started before HTTP serves, reconfigured by a reload
(users removed or changed lose their sessions; the daemon then closes their viewers), stopped
after the last request (sessions saved).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

from robotcam.auth import audit
from robotcam.auth.credentials import Credentials, first_run_admin, state_directory
from robotcam.auth.identity import OPEN, Identity
from robotcam.auth.limits import LoginGuard, OfferLimiter
from robotcam.auth.sessions import SessionStore
from robotcam.config import AuthConfig, Config
from robotcam.tasks import TaskSet

log = logging.getLogger(__name__)

VERIFY_AT_ONCE = 2  # argon2 checks running together (each takes 64 MiB and a core for ~0.1 s)
SAVE_INTERVAL = 60.0  # seconds between saves of session activity


class LoginError(Exception):
    def __init__(self, status: int, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class AccessControl:
    name = "auth"

    def __init__(self, config: Config) -> None:
        self.config: AuthConfig = config.auth
        self.folder: Path = state_directory(config.auth)
        self.credentials = Credentials(AuthConfig(enabled=False), dummy="")
        self.sessions = SessionStore(self.config.session_idle_timeout, self.config.session_max_age, self.folder)
        self.guard = LoginGuard(self.config.max_failed_logins, self.config.lockout_seconds)
        self.offers = OfferLimiter(self.config.offers_per_minute)
        self.throttle = audit.Throttle()
        self.problem: str | None = None  # why nobody can sign in, for /health
        self.logins = 0
        self.failed_logins = 0
        self._admin: dict[str, str] | None = None
        self._dummy = ""
        self._verifying = asyncio.Semaphore(VERIFY_AT_ONCE)
        self._tasks = TaskSet()

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    # --- Component ---------------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            log.warning(
                "auth.enabled is false: anyone who can reach this port can watch, listen, talk "
                "and drive (README, Security)"
            )
            return
        await self.prepare(self.config)
        self.credentials = Credentials(self.config, self._admin, self._dummy)
        await asyncio.to_thread(self.sessions.load)
        self._revoke_sessions()
        self._tasks.spawn(self._save_periodically(), "robotcam-auth-save")
        configured = len(self.config.users), len(self.config.tokens)
        if self._admin is not None:
            log.info("auth: on; no users or tokens configured: sign in as %r (README, Security)", self._admin["name"])
        else:
            log.info("auth: on; %d user(s), %d token(s), anonymous: %s", *configured,
                     ", ".join(self.config.anonymous) or "nothing")

    async def prepare(self, config: AuthConfig) -> None:
        """Before a reload applies `config` (and at start): the first-run admin, made or read
        in a thread. A reload after `robotcam reset-password` takes the new password. The dummy
        hash is made here too, so a reload that turns access control on hashes off the loop."""
        if config.enabled and not self._dummy:
            self._dummy = await asyncio.to_thread(Credentials.make_dummy)
        try:
            admin, password = await asyncio.to_thread(first_run_admin, config, self.folder)
        except OSError as exc:
            self.problem = f"cannot keep the first-run admin in {self.folder}: {exc}"
            log.error("auth: %s; nobody can sign in until auth.users is set (README, Security)", self.problem)
            self._admin = None
            return
        self.problem = None
        self._admin = admin
        if password is not None:
            log.warning("initial admin password: %s", password)
            log.warning(
                "sign in as %r with it; it is shown only this once. To set another: "
                "sudo robotcam reset-password, then sudo systemctl reload robotcam", admin and admin["name"],
            )

    async def stop(self) -> None:
        await self._tasks.close()
        await asyncio.to_thread(self.sessions.save)

    def apply_config(self, config: Config) -> None:
        old, self.config = self.config, config.auth
        self.guard.max_failures, self.guard.lockout = self.config.max_failed_logins, self.config.lockout_seconds
        self.offers.per_minute = self.config.offers_per_minute
        self.sessions.idle_timeout = self.config.session_idle_timeout
        self.sessions.max_age = self.config.session_max_age
        if not self.enabled:
            if old.enabled:
                log.warning("auth.enabled is now false: anyone who can reach this port can watch, talk and drive")
            return
        self.credentials = Credentials(self.config, self._admin, self._dummy)
        self._revoke_sessions()

    def health(self) -> dict[str, Any]:
        if not self.enabled:
            return {"enabled": False}
        return {
            "enabled": True,
            "ok": self.problem is None,
            "problem": self.problem,
            "users": len(self.credentials.users),
            "tokens": len(self.credentials.tokens),
            "anonymous": sorted(self.credentials.anonymous.permissions),
            "sessions": len(self.sessions),
            "logins": self.logins,
            "failed_logins": self.failed_logins,
        }

    # --- identities --------------------------------------------------------------------------

    def anonymous(self) -> Identity:
        return self.credentials.anonymous if self.enabled else OPEN

    def current(self, identity: Identity) -> bool:
        """Is a viewer's identity still granted (after a reload, a sign-out)?"""
        return not self.enabled or self.credentials.current(identity)

    def from_token(self, token: str) -> Identity | None:
        return self.credentials.check_token(token)

    def from_cookie(self, cookie: str) -> Identity | None:
        found = self.sessions.lookup(cookie)
        if found is None:
            return None
        key, session = found
        identity = self.credentials.user(session.user)
        if identity is None or identity.fingerprint != session.fingerprint:
            self.sessions.drop(key)
            return None
        return dataclasses.replace(identity, login=key)

    async def login(self, address: str, name: str, password: str) -> tuple[Identity, str]:
        """Check a sign-in: (identity, cookie value) or LoginError (401, 429)."""
        wait = self.guard.retry_after(address, name)
        if wait > 0:
            self.audit(f"login-limited:{address}", "sign-in refused: too many failures (user %r from %s; retry in %.0f s)", name, address, wait)
            raise LoginError(429, f"too many failed sign-ins: try again in {wait:.0f} s", wait)
        async with self._verifying:
            identity = await asyncio.to_thread(self.credentials.check_password, name, password)
        if identity is None:
            self.failed_logins += 1
            locked = self.guard.failed(address, name)
            audit.log.warning("sign-in failed: user %r from %s", name, address)
            if locked:
                audit.log.warning("sign-in locked for %.0f s: user %r / %s", self.guard.lockout, name, address)
            raise LoginError(401, "wrong user name or password")
        self.guard.succeeded(address, name)
        self.logins += 1
        cookie, key = self.sessions.create(identity.name, identity.fingerprint)
        audit.log.info("signed in: user %r from %s", identity.name, address)
        self._save_soon()
        return dataclasses.replace(identity, login=key), cookie

    def logout(self, identity: Identity, address: str) -> None:
        if identity.login is not None and self.sessions.drop(identity.login):
            audit.log.info("signed out: user %r from %s", identity.name, address)
            self._save_soon()

    def audit(self, key: str, message: str, *args: object, level: int = logging.WARNING) -> None:
        """One audit line, at most once a minute per key (what clients can cause in bulk)."""
        held = self.throttle.allow(key)
        if held is not None:
            audit.log.log(level, message + audit.suffix(held), *args)

    # --- internals ---------------------------------------------------------------------------

    def _revoke_sessions(self) -> None:
        def keep(session: Any) -> bool:
            user = self.credentials.user(session.user)
            return user is not None and user.fingerprint == session.fingerprint

        for session in self.sessions.revoke(keep):
            audit.log.info("session ended: user %r was removed or changed", session.user)
        self._save_soon()

    def _save_soon(self) -> None:
        if self.sessions.dirty:
            try:
                self._tasks.spawn(asyncio.to_thread(self.sessions.save), "robotcam-auth-save-now")
            except RuntimeError:  # no running loop (a reload applied outside one, in tests)
                pass

    async def _save_periodically(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL)
            if len(self.sessions):  # last_seen moved on: keep idle expiry across restarts
                self.sessions.dirty = True
            await asyncio.to_thread(self.sessions.save)
