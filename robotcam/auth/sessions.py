"""Sign-in sessions behind the page's cookie: a random id per sign-in, kept server-side.

Only the SHA-256 of each id is kept (in memory and in the state directory, so a restart of the
daemon does not sign everyone out): the file never holds a usable cookie. A session ends at
sign-out, after `auth.session_idle_timeout` without a request, after `auth.session_max_age`,
and when its user is removed or changed by a reload.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from robotcam.auth.credentials import write_private

log = logging.getLogger(__name__)

SESSIONS_FILE = "sessions.json"
MAX_SESSIONS = 1000  # beyond this, the least recently used are forgotten


def session_hash(cookie: str) -> str:
    return hashlib.sha256(cookie.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class Session:
    user: str
    fingerprint: str  # the user's Identity.fingerprint when they signed in
    created: float  # wall-clock seconds (sessions outlive the process)
    last_seen: float


class SessionStore:
    def __init__(self, idle_timeout: float, max_age: float, folder: Path | None) -> None:
        self.idle_timeout = idle_timeout
        self.max_age = max_age
        self.path = folder / SESSIONS_FILE if folder is not None else None
        self._sessions: dict[str, Session] = {}
        self.dirty = False

    def __len__(self) -> int:
        return len(self._sessions)

    def create(self, user: str, fingerprint: str) -> tuple[str, str]:
        """A fresh session: (cookie value, its hash). Ids are never reused across sign-ins."""
        cookie = secrets.token_urlsafe(32)
        now = time.time()
        key = session_hash(cookie)
        self._sessions[key] = Session(user, fingerprint, now, now)
        if len(self._sessions) > MAX_SESSIONS:
            oldest = min(self._sessions, key=lambda k: self._sessions[k].last_seen)
            del self._sessions[oldest]
        self.dirty = True
        return cookie, key

    def lookup(self, cookie: str) -> tuple[str, Session] | None:
        """The live session of a cookie (its use counts as activity), or None."""
        key = session_hash(cookie)
        session = self._sessions.get(key)
        if session is None:
            return None
        now = time.time()
        if now - session.last_seen > self.idle_timeout or now - session.created > self.max_age:
            del self._sessions[key]
            self.dirty = True
            return None
        session.last_seen = now
        return key, session

    def drop(self, key: str) -> bool:
        self.dirty = True
        return self._sessions.pop(key, None) is not None

    def revoke(self, keep: Callable[[Session], bool]) -> list[Session]:
        """End every session `keep` rejects; the ended ones."""
        gone = [k for k, s in self._sessions.items() if not keep(s)]
        ended = [self._sessions.pop(k) for k in gone]
        if ended:
            self.dirty = True
        return ended

    # --- persistence (blocking: call from a thread) ------------------------------------------

    def load(self) -> None:
        if self.path is None:
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            sessions = {k: Session(**v) for k, v in data.items()}
        except FileNotFoundError:
            return
        except (OSError, ValueError, TypeError) as exc:
            log.warning("auth: ignoring saved sign-in sessions in %s (%s)", self.path, exc)
            return
        self._sessions = sessions

    def save(self) -> None:
        if self.path is None or not self.dirty:
            return
        self.dirty = False
        data = {k: asdict(s) for k, s in self._sessions.items()}
        try:
            write_private(self.path, json.dumps(data))
        except OSError as exc:
            log.warning("auth: cannot save sign-in sessions to %s (%s): a restart signs everyone out", self.path, exc)
